#!/usr/bin/env bash
# Resolve `pip install -e ".[gpu]"` (the README's GPU install) with pip's resolver in a fresh venv,
# without installing anything; fails when the GPU extra no longer resolves on this Python. Prints
# every resolved distribution (from pip's --report) so the CI log keeps what a GPU install would get.
#   bash .ci/gpu_resolve.sh [python interpreter, default python3]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT
"${PY}" -m venv "${WORK}/venv"
"${WORK}/venv/bin/python" -m pip install -q -U pip
echo "resolving .[gpu] with $("${WORK}/venv/bin/python" --version) on $(uname -m)"
if ! "${WORK}/venv/bin/python" -m pip install --dry-run --ignore-installed --progress-bar off \
    --report "${WORK}/report.json" -e ".[gpu]" >"${WORK}/pip.log" 2>&1; then
  cat "${WORK}/pip.log"
  echo "the gpu extra does not resolve (pip output above)" >&2
  exit 1
fi
"${WORK}/venv/bin/python" - "${WORK}/report.json" <<'PY'
import json, sys
found = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.load(open(sys.argv[1]))["install"]}
print(f"pip --report: {len(found)} distributions would be installed:")
print(" ".join(f"{name}=={version}" for name, version in sorted(found.items())))
for name in ("verl", "vllm", "torch", "transformers", "fastapi", "ray", "transferqueue", "flash-attn"):
    print(f"  {name:14s} {found.get(name, '-')}")
missing = [n for n in ("verl", "vllm", "torch") if n not in found]
sys.exit(f"GPU resolution lacks {missing}" if missing else 0)
PY
