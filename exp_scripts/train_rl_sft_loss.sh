#!/usr/bin/env bash
# Baseline "RL with an SFT loss" (LUFFY's exp_scripts/train_rl_sft_loss.sh): LUFFY's recipe (train.sh) with
# the shaped off-policy loss replaced by LUFFY's SFT multitask loss: PPO on the on-policy samples, with
# grpo_split advantages (on-policy statistics), plus SFT_LOSS_COEF x the token-mean NLL of the whole
# traces (n_prefix = 1, prefix ratio 1.0).
#   exp_scripts/train_rl_sft_loss.sh [extra hydra overrides]
# Environment: every variable of train.sh (MODEL_PATH, DATA_DIR, N_GPUS, ...), plus SFT_LOSS_COEF (1.0).
set -euo pipefail
SFT_LOSS_COEF="${SFT_LOSS_COEF:-1.0}"
OFF_POLICY_RESHAPE=no_reshape ADV_ESTIMATOR="${ADV_ESTIMATOR:-grpo_split}" \
  EXPERIMENT="${EXPERIMENT:-rl_sft_loss_qwen2.5_math_7b}" \
  exec "$(dirname "${BASH_SOURCE[0]}")/train.sh" \
  actor_rollout_ref.actor.use_sft_multitask_loss=true \
  actor_rollout_ref.actor.sft_loss_coef="${SFT_LOSS_COEF}" \
  "$@"
