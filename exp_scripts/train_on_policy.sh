#!/usr/bin/env bash
# On-policy baseline: LUFFY's recipe (exp_scripts/train.sh) with no off-policy targets, i.e. plain GRPO.
N_PREFIX=0 EXPERIMENT="${EXPERIMENT:-on_policy_qwen2.5_math_7b}" exec "$(dirname "${BASH_SOURCE[0]}")/train.sh" "$@"
