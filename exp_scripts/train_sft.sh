#!/usr/bin/env bash
# SFT baseline on the same DeepSeek-R1 traces, with veRL's own SFT trainer (loss on assistant turns).
# Data: python data/prepare_sft.py --input data/openr1/train.parquet --output data/openr1/sft_train.parquet
#   exp_scripts/train_sft.sh [extra hydra overrides of verl/trainer/config/sft_trainer_engine.yaml]
# Environment: MODEL_PATH, DATA_DIR (reads $DATA_DIR/sft_train.parquet), N_GPUS, NNODES, NODE_RANK,
# MASTER_ADDR, LOGGER (default '[console,file]', wandb added when a wandb key is configured), LR,
# EPOCHS, ..., TORCHRUN (the launcher; the CPU rehearsal puts its own here)
# Checkpoints: CKPT_DIR/global_step_N/ (veRL's sharded model and optimizer) with a whole HF model in its
# huggingface/ subfolder (checkpoint.save_contents hf_model), which exp_scripts/train_sft_rl.sh starts from.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${REPO}"
MODEL_PATH="${MODEL_PATH:-models/Qwen2.5-Math-7B-16k}"
DATA_DIR="${DATA_DIR:-data/openr1}"
TRAIN_FILE="${TRAIN_FILE:-${DATA_DIR}/sft_train.parquet}"
N_GPUS="${N_GPUS:-8}"
NNODES="${NNODES:-1}"
PROJECT="${PROJECT:-luffy}"
EXPERIMENT="${EXPERIMENT:-sft_qwen2.5_math_7b}"
CKPT_DIR="${CKPT_DIR:-checkpoints/${PROJECT}/${EXPERIMENT}}"
source exp_scripts/recipe_logging.sh
recipe_logging "${CKPT_DIR}"
export VERL_FILE_LOGGER_PATH="${METRICS_FILE}"
TORCHRUN="${TORCHRUN:-torchrun}"
LR="${LR:-5e-5}"
TRAIN_BATCH="${TRAIN_BATCH:-64}"              # sequences per optimizer step
MAX_LENGTH="${MAX_LENGTH:-16384}"             # prompt + trace tokens
TOKENS_PER_GPU="${TOKENS_PER_GPU:-32768}"
EPOCHS="${EPOCHS:-3}"

# NNODES > 1: run this on every node with NODE_RANK and MASTER_ADDR (the rank-0 node) set
"${TORCHRUN}" --nnodes="${NNODES}" --nproc_per_node="${N_GPUS}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" -m verl.trainer.sft_trainer \
  data.train_files="${TRAIN_FILE}" \
  data.messages_key=messages \
  data.max_length="${MAX_LENGTH}" \
  data.truncation=right \
  data.train_batch_size="${TRAIN_BATCH}" \
  data.use_dynamic_bsz=true \
  data.max_token_len_per_gpu="${TOKENS_PER_GPU}" \
  model.path="${MODEL_PATH}" \
  model.enable_gradient_checkpointing=true \
  model.use_remove_padding=true \
  optim.lr="${LR}" \
  'checkpoint.save_contents=[model,optimizer,extra,hf_model]' \
  'checkpoint.load_contents=[model,optimizer,extra]' \
  trainer.logger="${LOGGER}" \
  trainer.project_name="${PROJECT}" \
  trainer.experiment_name="${EXPERIMENT}" \
  trainer.default_local_dir="${CKPT_DIR}" \
  trainer.n_gpus_per_node="${N_GPUS}" \
  trainer.nnodes="${NNODES}" \
  trainer.total_epochs="${EPOCHS}" \
  "$@"
