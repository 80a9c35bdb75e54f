#!/usr/bin/env bash
# Short LUFFY run on one GPU: the tiny random-weight model from luffy.tiny, a few steps, one
# validation, a checkpoint. Rollout with vLLM when it is installed, else luffy's transformers server.
#   exp_scripts/smoke_gpu.sh [extra hydra overrides]
# Environment: OUT_DIR, SAMPLE_JSONL, STEPS, BATCH, N, N_PREFIX, PROMPT_LEN, RESPONSE_LEN, ROLLOUT (vllm|hf_cpu),
#   TINY_HIDDEN_SIZE (256: head size 64, which every vLLM GPU attention backend accepts; luffy.tiny.GPU_HIDDEN_SIZE)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${REPO}"
PYTHON="${PYTHON:-python3}"
OUT_DIR="${OUT_DIR:-/tmp/luffy_smoke_gpu}"
SAMPLE_JSONL="${SAMPLE_JSONL:-${REPO}/data/sample/openr1_sample.jsonl}"
MODEL_DIR="${MODEL_DIR:-${OUT_DIR}/tiny_model}"
DATA_DIR="${DATA_DIR:-${OUT_DIR}/data}"
STEPS="${STEPS:-4}"
BATCH="${BATCH:-8}"
N="${N:-4}"
N_PREFIX="${N_PREFIX:-1}"
PROMPT_LEN="${PROMPT_LEN:-512}"
RESPONSE_LEN="${RESPONSE_LEN:-256}"
TINY_HIDDEN_SIZE="${TINY_HIDDEN_SIZE:-256}"
if [[ -z "${ROLLOUT:-}" ]]; then
  if "${PYTHON}" -c "import vllm" 2>/dev/null; then ROLLOUT=vllm; else ROLLOUT=hf_cpu; fi
fi

mkdir -p "${OUT_DIR}"
# shellcheck source=exp_scripts/tiny_inputs.sh
source "${REPO}/exp_scripts/tiny_inputs.sh"
tiny_inputs "${MODEL_DIR}" "${DATA_DIR}" "${SAMPLE_JSONL}"
tiny_luffy_args

rollout_args=("actor_rollout_ref.rollout.name=${ROLLOUT}")
if [[ "${ROLLOUT}" == vllm ]]; then
  rollout_args+=(
    "actor_rollout_ref.rollout.gpu_memory_utilization=0.3"
    "actor_rollout_ref.rollout.enforce_eager=true"
    "actor_rollout_ref.rollout.max_model_len=$((PROMPT_LEN + RESPONSE_LEN))"
  )
fi

echo "rollout: ${ROLLOUT}"
"${PYTHON}" -m luffy.mix_src.main_mix_ppo \
  "${rollout_args[@]}" \
  "${TINY_LUFFY_ARGS[@]}" \
  actor_rollout_ref.actor.optim.lr=1e-4 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8 \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8 \
  actor_rollout_ref.actor.use_kl_loss=false \
  actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
  actor_rollout_ref.rollout.agent.num_workers=1 \
  algorithm.use_kl_in_reward=false \
  trainer.logger='[console]' \
  trainer.n_gpus_per_node=1 \
  trainer.nnodes=1 \
  trainer.val_before_train=false \
  trainer.test_freq="${STEPS}" \
  trainer.save_freq="${STEPS}" \
  trainer.total_training_steps="${STEPS}" \
  trainer.project_name=luffy_smoke \
  trainer.experiment_name=smoke_gpu \
  trainer.default_local_dir="${OUT_DIR}/checkpoints" \
  "$@"
