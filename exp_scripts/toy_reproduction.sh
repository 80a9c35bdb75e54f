#!/usr/bin/env bash
# LUFFY vs on-policy GRPO vs SFT on a toy task, on the CPU, through the real trainer
# (luffy.mix_src.main_mix_ppo), from one format-pre-trained tiny base model.
#   exp_scripts/toy_reproduction.sh [--quick] [--help]
# The task (luffy/toy/task.py): carry-free additions "What is 472 + 222?" with a digit-by-digit trace
# ending in \boxed{694}; train and held-out problems are disjoint. The base model is pre-trained on the
# trace format with random digit sums, so it (almost) never answers right and on-policy GRPO starts
# with reward ~0. Three runs, equal budgets (steps, prompts per step, n, lr, seeds, start checkpoint):
#   luffy        n_prefix=1 of n: one whole trace per group, shaped off-policy loss p/(p+0.1), LUFFY's
#                recipe advantages (grpo: group statistics over the trace and the samples)
#   luffy_split  the same with grpo_split: group statistics from the generated samples only, so samples
#                that all fail get advantage 0 instead of a negative one
#   grpo         n_prefix=0: plain on-policy GRPO
#   sft          n_prefix=n with use_sft_multitask_loss=true: every slot is the trace, no generated
#                sample, so each step is pure SFT (token-mean NLL) on the traces
# Then every saved policy is evaluated with plain transformers on the held-out problems (greedy and
# sampled accuracy, the entropy of its own samples, the log-probability of the reference traces), a
# table is printed and written, and the figure drawn.
# --quick: LUFFY (grpo_split) and GRPO only, 10 steps, final weights only, no validation; exits
#   non-zero unless the held-out traces are more likely under LUFFY's final policy than under GRPO's (CI).
# Settings (environment): OUT_DIR, SEED, STEPS, BATCH (prompts per step), MINI_BATCH (prompts per
# optimizer update), N, LR, ENTROPY_COEFF, SAVE_FREQ (offline
# evaluation points), TEST_FREQ (veRL's greedy validation), N_TRAIN, N_VAL, PRETRAIN_STEPS, FIGURE, RUNS.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
QUICK=0
for arg in "$@"; do
  case "${arg}" in
    --quick) QUICK=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "toy_reproduction.sh: unknown argument '${arg}' (see --help)" >&2; exit 2 ;;
  esac
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${REPO}"
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"  # the active environment
OUT_DIR="${OUT_DIR:-/tmp/luffy_toy}"
SEED="${SEED:-0}"
N_TRAIN="${N_TRAIN:-400}"
N_VAL="${N_VAL:-100}"
N="${N:-4}"
ENTROPY_COEFF="${ENTROPY_COEFF:-0}"  # no entropy bonus: see docs/toy.md
LR="${LR:-2e-3}"
RESPONSE_LEN=48   # a trace is 34 tokens with its EOS
if [[ "${QUICK}" == 1 ]]; then
  STEPS="${STEPS:-10}" BATCH="${BATCH:-16}" PRETRAIN_STEPS="${PRETRAIN_STEPS:-600}"
  SAVE_FREQ="${SAVE_FREQ:-${STEPS}}" TEST_FREQ="${TEST_FREQ:--1}" RUNS="${RUNS:-luffy_split grpo}"
  FIGURE="${FIGURE:-${OUT_DIR}/toy_luffy_vs_grpo_vs_sft.png}"
else
  STEPS="${STEPS:-40}" BATCH="${BATCH:-16}" PRETRAIN_STEPS="${PRETRAIN_STEPS:-600}"
  SAVE_FREQ="${SAVE_FREQ:-10}" TEST_FREQ="${TEST_FREQ:-10}" RUNS="${RUNS:-luffy luffy_split grpo sft}"
  FIGURE="${FIGURE:-${REPO}/figures/toy_luffy_vs_grpo_vs_sft.png}"
fi
MINI_BATCH="${MINI_BATCH:-4}"  # prompts per optimizer update: BATCH / MINI_BATCH updates per step
DATA_DIR="${OUT_DIR}/data"
BASE_DIR="${OUT_DIR}/base_model"

# shellcheck source=exp_scripts/common_tiny_cpu.sh
source "${REPO}/exp_scripts/common_tiny_cpu.sh"
mkdir -p "${OUT_DIR}"
started=${SECONDS}

"${PYTHON}" exp_scripts/toy_reproduction.py prepare --out "${OUT_DIR}" --seed "${SEED}" \
  --n_train "${N_TRAIN}" --n_val "${N_VAL}" --pretrain_steps "${PRETRAIN_STEPS}"

val_before=true
[[ "${TEST_FREQ}" == -1 ]] && val_before=false
TOY_ARGS=(
  "data.train_files=${DATA_DIR}/train.parquet"
  "data.val_files=${DATA_DIR}/val.parquet"
  "data.custom_cls.path=pkg://luffy.mix_src.dataset"
  "data.custom_cls.name=LuffyRLHFDataset"
  "data.train_batch_size=${BATCH}"
  "data.val_batch_size=${N_VAL}"
  "data.max_prompt_length=64"
  "data.max_response_length=${RESPONSE_LEN}"
  "data.truncation=error"
  "data.seed=${SEED}"
  "actor_rollout_ref.model.path=${BASE_DIR}"
  "actor_rollout_ref.actor.optim.lr=${LR}"
  "actor_rollout_ref.actor.ppo_mini_batch_size=${MINI_BATCH}"
  "actor_rollout_ref.actor.entropy_coeff=${ENTROPY_COEFF}"
  "actor_rollout_ref.actor.loss_remove_token_mean=true"
  "actor_rollout_ref.actor.loss_remove_clip=true"
  "actor_rollout_ref.actor.checkpoint.save_contents=[hf_model]"
  "actor_rollout_ref.rollout.n=${N}"
  "actor_rollout_ref.rollout.temperature=1.0"
  "actor_rollout_ref.rollout.min_prefix_ratio=1.0"
  "actor_rollout_ref.rollout.max_prefix_ratio=1.0"
  "actor_rollout_ref.rollout.max_prefix_len=${RESPONSE_LEN}"
  "actor_rollout_ref.rollout.val_kwargs.n=1"
  "actor_rollout_ref.rollout.val_kwargs.do_sample=false"
  "algorithm.grpo_use_std=false"
  "trainer.logger=[console,file]"
  "trainer.val_before_train=${val_before}"
  "trainer.test_freq=${TEST_FREQ}"
  "trainer.save_freq=${SAVE_FREQ}"
  "trainer.resume_mode=disable"
  "trainer.total_training_steps=${STEPS}"
  "trainer.project_name=luffy_toy"
)

run_args() {  # the settings that make each run what it is
  case "$1" in
    luffy) echo "actor_rollout_ref.rollout.n_prefix=1 actor_rollout_ref.actor.off_policy_reshape=p_div_p_0.1 algorithm.adv_estimator=grpo" ;;
    luffy_split) echo "actor_rollout_ref.rollout.n_prefix=1 actor_rollout_ref.actor.off_policy_reshape=p_div_p_0.1 algorithm.adv_estimator=grpo_split" ;;
    grpo) echo "actor_rollout_ref.rollout.n_prefix=0 algorithm.adv_estimator=grpo" ;;
    sft) echo "actor_rollout_ref.rollout.n_prefix=${N} actor_rollout_ref.actor.use_sft_multitask_loss=true actor_rollout_ref.actor.sft_loss_coef=1.0 actor_rollout_ref.actor.off_policy_reshape=no_reshape algorithm.adv_estimator=grpo_split" ;;
    *) echo "toy_reproduction.sh: unknown run '$1' in RUNS (luffy, luffy_split, grpo, sft)" >&2; return 1 ;;
  esac
}

for run in ${RUNS}; do
  extra="$(run_args "${run}")"
  run_dir="${OUT_DIR}/${run}"
  rm -rf "${run_dir}"
  mkdir -p "${run_dir}"
  echo "== ${run}: ${STEPS} steps x ${BATCH} prompts x n=${N}, $((BATCH / MINI_BATCH)) updates a step (log: ${run_dir}/train.log)"
  run_started=${SECONDS}
  # shellcheck disable=SC2086  # ${extra}: one override per word
  if ! VERL_FILE_LOGGER_PATH="${run_dir}/metrics.jsonl" "${PYTHON}" -m luffy.mix_src.main_mix_ppo \
      "${CPU_ARGS[@]}" "${TOY_ARGS[@]}" ${extra} \
      trainer.experiment_name="toy_${run}" \
      trainer.default_local_dir="${run_dir}/checkpoints" >"${run_dir}/train.log" 2>&1; then
    tail -n 30 "${run_dir}/train.log" >&2
    echo "toy_reproduction.sh: the ${run} run failed; its log: ${run_dir}/train.log" >&2
    exit 1
  fi
  grep -oE 'step:[0-9]+ .*val-core/[^ ]*mean@1:[0-9.]+' "${run_dir}/train.log" | sed -E 's/^(step:[0-9]+).*(val-core[^ ]*)/  \1 \2/' || true
  echo "   ${run} done in $((SECONDS - run_started)) s"
done

report_args=(--out "${OUT_DIR}" --seed "${SEED}" --n_train "${N_TRAIN}" --n_val "${N_VAL}" --runs ${RUNS} --figure "${FIGURE}")
[[ "${QUICK}" == 1 ]] && report_args+=(--check_luffy_over_grpo)
"${PYTHON}" exp_scripts/toy_reproduction.py report "${report_args[@]}"
echo "total: $((SECONDS - started)) s"
