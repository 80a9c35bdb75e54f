#!/usr/bin/env bash
# Baseline "SFT then RL" (LUFFY's exp_scripts/train_sft_rl.sh): on-policy GRPO (n_prefix = 0, PPO clip on)
# from the SFT model of exp_scripts/train_sft.sh, on a problem set disjoint from the SFT traces.
#   exp_scripts/train_sft_rl.sh [extra hydra overrides]
# Environment: every variable of train.sh, plus
#   SFT_CKPT   the SFT model: train_sft.sh's CKPT_DIR (its newest global_step_N, from
#              latest_checkpointed_iteration.txt), one global_step_N folder (its huggingface/ subfolder, where
#              train_sft.sh saves the whole HF model), or any HF model folder; a veRL checkpoint saved
#              without hf_model is converted first: python -m verl.model_merger merge --backend fsdp
#              --local_dir <global_step_N> --target_dir <global_step_N>/huggingface
#   DATA_DIR   folder of train.parquet, default data/openr1_complement, written by
#              python data/prepare_train.py --complement   (Elliott/Openr1-Math-48k-Complement)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SFT_CKPT="${SFT_CKPT:-checkpoints/luffy/sft_qwen2.5_math_7b}"

# The HF model folder SFT_CKPT stands for; one error line and exit status 2 when there is none.
sft_model() {
  local path="$1"
  if [[ "${path}" != /* ]]; then path="${REPO}/${path}"; fi
  if [[ -f "${path}/latest_checkpointed_iteration.txt" ]]; then
    path="${path}/global_step_$(tr -d '[:space:]' < "${path}/latest_checkpointed_iteration.txt")"
  fi
  if [[ -d "${path}/huggingface" ]]; then path="${path}/huggingface"; fi
  local weights=0
  compgen -G "${path}/*.safetensors" > /dev/null && weights=1
  compgen -G "${path}/pytorch_model*.bin" > /dev/null && weights=1
  if [[ ! -f "${path}/config.json" || "${weights}" == 0 ]]; then
    echo "error: SFT_CKPT=$1: no HF model (config.json and weights) in ${path}; point SFT_CKPT at train_sft.sh's" \
      "CKPT_DIR or an HF model folder, or convert a veRL checkpoint: python -m verl.model_merger merge" \
      "--backend fsdp --local_dir <global_step_N> --target_dir <global_step_N>/huggingface" >&2
    return 2
  fi
  echo "${path}"
}
MODEL_PATH="$(sft_model "${SFT_CKPT}")"
export MODEL_PATH
N_PREFIX=0 ADV_ESTIMATOR="${ADV_ESTIMATOR:-grpo}" LOSS_REMOVE_CLIP="${LOSS_REMOVE_CLIP:-false}" \
  DATA_DIR="${DATA_DIR:-data/openr1_complement}" EXPERIMENT="${EXPERIMENT:-sft_rl_qwen2.5_math_7b}" \
  exec "${REPO}/exp_scripts/train.sh" "$@"
