#!/usr/bin/env bash
# LUFFY's recipe: Qwen2.5-Math-7B (16k-context variant) on one 8-GPU node, n = 8 samples per prompt of
# which n_prefix = 1 is the whole DeepSeek-R1 trace, policy shaping p / (p + 0.1), no KL.
#   exp_scripts/train.sh [extra hydra overrides]
# Every setting below can be overridden from the environment; extra hydra overrides pass through "$@".
#   MODEL_PATH  Qwen2.5-Math-7B with context extended to 16k (rope_theta 40000,
#               max_position_embeddings 16384), as LUFFY trains it
#   DATA_DIR    folder holding train.parquet (data/prepare_train.py writes data/openr1/train.parquet)
#   VAL_FILE    validation parquet (data/prepare_eval.py writes data/eval/valid.all.parquet)
#   N_GPUS, NNODES  GPUs per node and nodes; for NNODES > 1 start Ray on every node first
#               (`ray start --head` here, `ray start --address=<head>:6379` elsewhere) and run this on
#               the head node with RAY_ADDRESS=auto
#   LOGGER      hydra list of veRL tracking backends; default '[console,file]' (metrics JSONL under
#               CKPT_DIR, one file per launch, or VERL_FILE_LOGGER_PATH), plus wandb when a wandb key is configured
#               (WANDB_API_KEY or `wandb login`); LOGGER='[console,wandb]' asks for it explicitly
#   PYTHON      interpreter running the trainer (the CPU rehearsal, exp_scripts/rehearse_cpu.py, puts
#               its own here to swap the GPU-only settings)
#   ROLLOUT_GPU_MEM, OPTIM_OFFLOAD  vLLM's share of each GPU's total memory (0.8) and the actor's Adam state
#               on the CPU between updates (true): with both the estimate fits an 80 GB card (docs/gpu.md:
#               Before your first GPU run); on 141 GB cards OPTIM_OFFLOAD=false saves the copies
# Before Ray starts the trainer refuses a model context shorter than PROMPT_LEN + RESPONSE_LEN, wandb
# without credentials, a training file without targets, and on GPUs: no usable CUDA, too few devices, a
# per-GPU memory estimate over the card; it warns when flash-attn or torchcodec does not import and when
# the kept checkpoints would not fit the disk, and uses sdpa attention when flash-attn is not installed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${REPO}"
PYTHON="${PYTHON:-python3}"

MODEL_PATH="${MODEL_PATH:-models/Qwen2.5-Math-7B-16k}"
DATA_DIR="${DATA_DIR:-data/openr1}"
TRAIN_FILE="${TRAIN_FILE:-${DATA_DIR}/train.parquet}"
VAL_FILE="${VAL_FILE:-data/eval/valid.all.parquet}"
N_GPUS="${N_GPUS:-8}"
NNODES="${NNODES:-1}"
PROJECT="${PROJECT:-luffy}"
EXPERIMENT="${EXPERIMENT:-luffy_qwen2.5_math_7b}"
CKPT_DIR="${CKPT_DIR:-checkpoints/${PROJECT}/${EXPERIMENT}}"
# veRL's file backend writes METRICS_FILE (its default would be ./<project>/, inside this repository); the
# path reaches the trainer through Ray's runtime_env, so it holds on a cluster started with `ray start` too
source exp_scripts/recipe_logging.sh
recipe_logging "${CKPT_DIR}"

N="${N:-8}"                                   # samples per prompt
N_PREFIX="${N_PREFIX:-1}"                     # of which off-policy targets (0 = on-policy GRPO)
PREFIX_RATIO="${PREFIX_RATIO:-1.0}"           # kept fraction of each target (1.0 = whole trace)
OFF_POLICY_RESHAPE="${OFF_POLICY_RESHAPE:-p_div_p_0.1}"
ADV_ESTIMATOR="${ADV_ESTIMATOR:-grpo}"
GRPO_USE_STD="${GRPO_USE_STD:-false}"
LOSS_REMOVE_CLIP="${LOSS_REMOVE_CLIP:-true}"  # no PPO clip on on-policy tokens
LR="${LR:-1e-6}"
TRAIN_BATCH="${TRAIN_BATCH:-128}"             # prompts per step
MINI_BATCH="${MINI_BATCH:-64}"                # prompts per optimizer step
PROMPT_LEN="${PROMPT_LEN:-1024}"
RESPONSE_LEN="${RESPONSE_LEN:-8192}"
TOKENS_PER_GPU="${TOKENS_PER_GPU:-32768}"     # dynamic batch size, tokens per GPU micro-batch
ROLLOUT_TP="${ROLLOUT_TP:-2}"
ROLLOUT_GPU_MEM="${ROLLOUT_GPU_MEM:-0.8}"       # share of each GPU's total memory (veRL 0.9.1's vLLM server)
OPTIM_OFFLOAD="${OPTIM_OFFLOAD:-true}"          # Adam state on the CPU between updates (80 GB cards)
EPOCHS="${EPOCHS:-30}"
SAVE_FREQ="${SAVE_FREQ:-50}"
TEST_FREQ="${TEST_FREQ:-10}"

"${PYTHON}" -m luffy.mix_src.main_mix_ppo \
  data.train_files="${TRAIN_FILE}" \
  data.val_files="${VAL_FILE}" \
  data.custom_cls.path=pkg://luffy.mix_src.dataset \
  data.custom_cls.name=LuffyRLHFDataset \
  data.train_batch_size="${TRAIN_BATCH}" \
  data.max_prompt_length="${PROMPT_LEN}" \
  data.max_response_length="${RESPONSE_LEN}" \
  data.shuffle=true \
  actor_rollout_ref.model.path="${MODEL_PATH}" \
  actor_rollout_ref.model.use_remove_padding=true \
  actor_rollout_ref.model.enable_gradient_checkpointing=true \
  actor_rollout_ref.actor.strategy=fsdp2 \
  actor_rollout_ref.actor.fsdp_config.optimizer_offload="${OPTIM_OFFLOAD}" \
  actor_rollout_ref.actor.optim.lr="${LR}" \
  actor_rollout_ref.actor.ppo_mini_batch_size="${MINI_BATCH}" \
  actor_rollout_ref.actor.use_dynamic_bsz=true \
  actor_rollout_ref.actor.ppo_max_token_len_per_gpu="${TOKENS_PER_GPU}" \
  actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=true \
  actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu="${TOKENS_PER_GPU}" \
  actor_rollout_ref.actor.use_kl_loss=false \
  actor_rollout_ref.actor.entropy_coeff=0.001 \
  actor_rollout_ref.actor.off_policy_reshape="${OFF_POLICY_RESHAPE}" \
  actor_rollout_ref.actor.loss_remove_token_mean=true \
  actor_rollout_ref.actor.loss_remove_clip="${LOSS_REMOVE_CLIP}" \
  actor_rollout_ref.rollout.name=vllm \
  actor_rollout_ref.rollout.tensor_model_parallel_size="${ROLLOUT_TP}" \
  actor_rollout_ref.rollout.gpu_memory_utilization="${ROLLOUT_GPU_MEM}" \
  actor_rollout_ref.rollout.temperature=1.0 \
  actor_rollout_ref.rollout.val_kwargs.temperature=0.6 \
  actor_rollout_ref.rollout.val_kwargs.do_sample=true \
  actor_rollout_ref.rollout.val_kwargs.n=1 \
  actor_rollout_ref.rollout.n="${N}" \
  actor_rollout_ref.rollout.n_prefix="${N_PREFIX}" \
  actor_rollout_ref.rollout.prefix_strategy=random \
  actor_rollout_ref.rollout.min_prefix_ratio="${PREFIX_RATIO}" \
  actor_rollout_ref.rollout.max_prefix_ratio="${PREFIX_RATIO}" \
  actor_rollout_ref.rollout.prefix_share_across_samples=false \
  actor_rollout_ref.rollout.max_prefix_len="${RESPONSE_LEN}" \
  algorithm.adv_estimator="${ADV_ESTIMATOR}" \
  algorithm.grpo_use_std="${GRPO_USE_STD}" \
  algorithm.use_kl_in_reward=false \
  trainer.logger="${LOGGER}" \
  +ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH="${METRICS_FILE}" \
  trainer.project_name="${PROJECT}" \
  trainer.experiment_name="${EXPERIMENT}" \
  trainer.default_local_dir="${CKPT_DIR}" \
  trainer.n_gpus_per_node="${N_GPUS}" \
  trainer.nnodes="${NNODES}" \
  trainer.val_before_train=true \
  trainer.save_freq="${SAVE_FREQ}" \
  trainer.test_freq="${TEST_FREQ}" \
  trainer.max_actor_ckpt_to_keep=2 \
  trainer.resume_mode=auto \
  trainer.total_epochs="${EPOCHS}" \
  "$@"
