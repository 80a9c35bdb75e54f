#!/usr/bin/env bash
# Plain GRPO baseline on a CPU-only machine: veRL's own V1 trainer (luffy.cpu.main_cpu_ppo only swaps
# in the worker that starts a gloo process group), a tiny random-weight model, a handful of steps.
# Prints seconds per step at the end. Extra hydra overrides pass through: ./train_grpo_tiny_cpu.sh trainer.total_training_steps=3
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${REPO}"
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"  # the active environment
OUT_DIR="${OUT_DIR:-/tmp/luffy_grpo_tiny_cpu}"
SAMPLE_JSONL="${SAMPLE_JSONL:-${REPO}/data/sample/openr1_sample.jsonl}"
MODEL_DIR="${MODEL_DIR:-${OUT_DIR}/tiny_model}"
DATA_DIR="${DATA_DIR:-${OUT_DIR}/data}"
STEPS="${STEPS:-6}"
BATCH="${BATCH:-4}"                 # prompts per step
N="${N:-4}"                         # samples per prompt (GRPO group size)
PROMPT_LEN="${PROMPT_LEN:-512}"
RESPONSE_LEN="${RESPONSE_LEN:-64}"
LOG_FILE="${LOG_FILE:-${OUT_DIR}/train.log}"

# shellcheck source=exp_scripts/common_tiny_cpu.sh
source "${REPO}/exp_scripts/common_tiny_cpu.sh"
mkdir -p "${OUT_DIR}"

# shellcheck source=exp_scripts/tiny_inputs.sh
source "${REPO}/exp_scripts/tiny_inputs.sh"
tiny_inputs "${MODEL_DIR}" "${DATA_DIR}" "${SAMPLE_JSONL}"

"${PYTHON}" -m luffy.cpu.main_cpu_ppo \
  "${CPU_ARGS[@]}" \
  algorithm.adv_estimator=grpo \
  data.train_files="${DATA_DIR}/train.parquet" \
  data.val_files="${DATA_DIR}/train.parquet" \
  data.train_batch_size="${BATCH}" \
  data.max_prompt_length="${PROMPT_LEN}" \
  data.max_response_length="${RESPONSE_LEN}" \
  data.filter_overlong_prompts=true \
  data.truncation=error \
  actor_rollout_ref.model.path="${MODEL_DIR}" \
  actor_rollout_ref.actor.optim.lr=1e-4 \
  actor_rollout_ref.actor.ppo_mini_batch_size="${BATCH}" \
  actor_rollout_ref.rollout.n="${N}" \
  reward.custom_reward_function.path=pkg://luffy.mix_src.reward \
  reward.custom_reward_function.name=compute_score \
  trainer.val_before_train=false \
  trainer.test_freq=-1 \
  trainer.total_training_steps="${STEPS}" \
  trainer.project_name=luffy_cpu \
  trainer.experiment_name=grpo_tiny_cpu \
  trainer.default_local_dir="${OUT_DIR}/checkpoints" \
  "$@" 2>&1 | tee "${LOG_FILE}"

report_step_times "${LOG_FILE}"
