#!/usr/bin/env bash
# LUFFY's three claims on a CPU toy, in the paper's regime: a base model that solves part of its task.
#   exp_scripts/toy_reproduction.sh [--quick] [--help]
# Task (luffy/toy/task.py): 3-digit additions "What is 478 + 356?" with a column-by-column trace that
# writes each carry ("7+5+1=13"); held-out splits: ID (3-digit additions), retention (borrow-free
# subtraction, pre-trained, never trained on after) and transfer (4-digit additions with a carry; only
# carry-free ones in pre-training). Base model (luffy/toy/base_model.py): luffy.tiny's Qwen2, pre-trained
# in plain torch on correct carry-free traces and on carry traces that write each carry with probability Q.
# Steps:
#   1. prepare   data and the base model
#   2. stepsize  the pilot (on-policy GRPO at several lr x updates per step, which picked LR) and the old
#                regime (a format-only base that solves nothing): the recipe arm at several step sizes
#   3. sweep     every arm x seed in the in-process loop (luffy/toy/lab.py, this package's losses and
#                advantages), same start, data order, sampling seeds and budget per seed
#   4. trainer   seed 0 of every arm through the real trainer (luffy.mix_src.main_mix_ppo, the tiny CPU
#                settings of common_tiny_cpu.sh) for TRAINER_STEPS steps, weights saved every TRAINER_SAVE
#   5. report    claims table, the trainer-vs-loop check, the collapse table, the figure
# Arms: luffy (grpo, n_prefix=1, p_div_p_0.1), luffy_split (grpo_split), grpo (n_prefix=0), sft (SFT loss
# on the traces), rl_sft_loss (n_prefix=1, PPO on the samples + SFT loss on the trace), sft_rl (SFT for
# half the steps, then on-policy GRPO; its trainer run starts from the loop's seed-0 weights at the switch).
# LUFFY's successors (docs/successors.md): hpt (SFT on the trace where the group's accuracy < 0.5, else
# plain GRPO), bread (LUFFY's trace only where no sample succeeds), chord (p(1-p)-weighted SFT loss, mu
# 0.9 -> 0.05 after a 10 % warm-up, PPO weighted 1 - mu), hint_anneal (the trace slot keeps a hint that
# shrinks from the whole trace to nothing on a cosine, SFT on the hint, PPO on the rest). Their schedules
# run over each run's own steps (the trainer's 10, the loop's 40).
# --quick: steps 1 and 3 only (fewer pre-training steps, seed 0, luffy and grpo, 6 steps), then exits
#   non-zero unless the regime holds: the base solves some held-out problems but not all, pass@8 above
#   greedy; GRPO's groups hold successes at step 1 and its ID greedy accuracy ends above the base's;
#   LUFFY's held-out trace log-prob ends above the base's (CI).
# Settings (environment): OUT_DIR, SEEDS, ARMS, STEPS, BATCH (prompts per step), MINI_BATCH (prompts per
# optimizer update), N, LR, EVAL_EVERY, Q, PRETRAIN_STEPS, TRAINER_ARMS, TRAINER_STEPS, TRAINER_SAVE, STEPSIZE (0: skip step 2), FIGURE.
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
N="${N:-8}"
LR="${LR:-1e-4}"
Q="${Q:-0.35}"
BATCH="${BATCH:-8}"
MINI_BATCH="${MINI_BATCH:-${BATCH}}"  # one optimizer update a step (see docs/toy.md for the pilot)
RESPONSE_LEN=64   # a 3-digit trace is 41 tokens with its EOS; also the loss's length normaliser
ALL_ARMS="luffy luffy_split grpo sft rl_sft_loss sft_rl hpt bread chord hint_anneal"  # luffy/toy/lab.py ARMS
if [[ "${QUICK}" == 1 ]]; then
  SEEDS="${SEEDS:-0}" ARMS="${ARMS:-luffy grpo}" STEPS="${STEPS:-6}" EVAL_EVERY="${EVAL_EVERY:-3}"
  PRETRAIN_STEPS="${PRETRAIN_STEPS:-600}" TRAINER_ARMS="${TRAINER_ARMS:-}" STEPSIZE=0
  FIGURE="${FIGURE:-${OUT_DIR}/toy_reproduction.png}"
else
  SEEDS="${SEEDS:-0 1 2 3 4}" ARMS="${ARMS:-${ALL_ARMS}}"
  STEPS="${STEPS:-40}" EVAL_EVERY="${EVAL_EVERY:-5}" PRETRAIN_STEPS="${PRETRAIN_STEPS:-1000}"
  TRAINER_ARMS="${TRAINER_ARMS-${ALL_ARMS}}" STEPSIZE="${STEPSIZE:-1}"
  FIGURE="${FIGURE:-${REPO}/figures/toy_reproduction.png}"
fi
TRAINER_STEPS="${TRAINER_STEPS:-10}"
TRAINER_SAVE="${TRAINER_SAVE:-5}"
SWITCH=$((STEPS / 2))  # sft_rl: SFT steps before RL
DATA_DIR="${OUT_DIR}/data"
BASE_DIR="${OUT_DIR}/base_model"

# shellcheck source=exp_scripts/common_tiny_cpu.sh
source "${REPO}/exp_scripts/common_tiny_cpu.sh"
mkdir -p "${OUT_DIR}"
export TQDM_DISABLE=1  # no progress bars (weight loading) in the loop's output
started=${SECONDS}
stamp() { echo "== $1 (at $((SECONDS - started)) s)"; }

stamp "prepare"
"${PYTHON}" exp_scripts/toy_reproduction.py prepare --out "${OUT_DIR}" --q "${Q}" \
  --pretrain_steps "${PRETRAIN_STEPS}" --sft_rl_offset $((SWITCH * BATCH))

LOOP_ARGS=(--out "${OUT_DIR}" --steps "${STEPS}" --batch "${BATCH}" --n "${N}" --eval_every "${EVAL_EVERY}")
if [[ "${STEPSIZE}" == 1 ]]; then
  stamp "pilot: on-policy GRPO from the base model at several step sizes (20 steps, seed 0)"
  "${PYTHON}" exp_scripts/toy_reproduction.py stepsize --name pilot "${LOOP_ARGS[@]}" --steps 20 \
    --seeds 0 --settings grpo:2e-3:4 grpo:2e-3:1 grpo:5e-4:4 grpo:5e-4:1 grpo:2e-4:1 grpo:1e-4:1
  stamp "collapse: the old regime, a format-only base that solves nothing (the old toy's sizes, 20 steps)"
  "${PYTHON}" exp_scripts/toy_reproduction.py stepsize --name collapse --format_only --out "${OUT_DIR}" \
    --steps 20 --batch 16 --n 4 --eval_every 5 --seeds 0 1 2 --pretrain_steps 400 \
    --settings luffy:2e-3:4 luffy:2e-4:4 luffy:2e-3:1 luffy_split:2e-3:4
else
  rm -f "${OUT_DIR}/pilot.json" "${OUT_DIR}/collapse.json"  # the report shows this run's results only
fi

stamp "sweep: arms ${ARMS}; seeds ${SEEDS}; ${STEPS} steps x ${BATCH} prompts x n=${N}, lr ${LR}"
# shellcheck disable=SC2086  # one arm / seed per word
"${PYTHON}" exp_scripts/toy_reproduction.py sweep "${LOOP_ARGS[@]}" --arms ${ARMS} --seeds ${SEEDS} \
  --lr "${LR}" --mini_batch "${MINI_BATCH}" --save_switch

TOY_ARGS=(
  "data.val_files=${DATA_DIR}/val.parquet"
  "data.custom_cls.path=pkg://luffy.mix_src.dataset"
  "data.custom_cls.name=LuffyRLHFDataset"
  "data.train_batch_size=${BATCH}"
  "data.shuffle=false"
  "data.max_prompt_length=64"
  "data.max_response_length=${RESPONSE_LEN}"
  "data.truncation=error"
  "actor_rollout_ref.actor.optim.lr=${LR}"
  "actor_rollout_ref.actor.ppo_mini_batch_size=${MINI_BATCH}"
  "actor_rollout_ref.actor.entropy_coeff=0"
  "actor_rollout_ref.actor.loss_remove_token_mean=true"
  "actor_rollout_ref.actor.loss_remove_clip=true"
  "actor_rollout_ref.actor.checkpoint.save_contents=[hf_model]"
  "actor_rollout_ref.rollout.n=${N}"
  "actor_rollout_ref.rollout.temperature=1.0"
  "actor_rollout_ref.rollout.max_prefix_len=${RESPONSE_LEN}"
  "algorithm.grpo_use_std=false"
  "trainer.logger=[console,file]"
  "trainer.val_before_train=false"
  "trainer.test_freq=-1"
  "trainer.save_freq=${TRAINER_SAVE}"
  "trainer.resume_mode=disable"
  "trainer.total_training_steps=${TRAINER_STEPS}"
  "trainer.project_name=luffy_toy"
)

WHOLE="actor_rollout_ref.rollout.min_prefix_ratio=1.0 actor_rollout_ref.rollout.max_prefix_ratio=1.0"
SFT_TERM="actor_rollout_ref.actor.use_sft_multitask_loss=true actor_rollout_ref.actor.off_policy_reshape=no_reshape"
run_args() {  # the settings that make each arm what it is (the loop's luffy/toy/lab.py ARMS)
  case "$1" in
    hint_anneal) echo "actor_rollout_ref.rollout.n_prefix=1 ${SFT_TERM} algorithm.adv_estimator=grpo actor_rollout_ref.rollout.prefix_strategy=progress_cosine actor_rollout_ref.rollout.min_prefix_ratio=0.0 actor_rollout_ref.rollout.max_prefix_ratio=1.0" ;;
    *) local rest; rest="$(arm_args "$1")" || return 1; echo "${WHOLE} ${rest}" ;;
  esac
}
arm_args() {
  case "$1" in
    luffy) echo "actor_rollout_ref.rollout.n_prefix=1 actor_rollout_ref.actor.off_policy_reshape=p_div_p_0.1 algorithm.adv_estimator=grpo" ;;
    luffy_split) echo "actor_rollout_ref.rollout.n_prefix=1 actor_rollout_ref.actor.off_policy_reshape=p_div_p_0.1 algorithm.adv_estimator=grpo_split" ;;
    grpo|sft_rl) echo "actor_rollout_ref.rollout.n_prefix=0 algorithm.adv_estimator=grpo" ;;
    sft) echo "actor_rollout_ref.rollout.n_prefix=${N} actor_rollout_ref.actor.use_sft_multitask_loss=true actor_rollout_ref.actor.sft_loss_coef=1.0 actor_rollout_ref.actor.off_policy_reshape=no_reshape algorithm.adv_estimator=grpo_split" ;;
    rl_sft_loss) echo "actor_rollout_ref.rollout.n_prefix=1 actor_rollout_ref.actor.use_sft_multitask_loss=true actor_rollout_ref.actor.sft_loss_coef=1.0 actor_rollout_ref.actor.off_policy_reshape=no_reshape algorithm.adv_estimator=grpo_split" ;;
    hpt) echo "actor_rollout_ref.rollout.n_prefix=1 ${SFT_TERM} algorithm.adv_estimator=grpo_split algorithm.guidance_gate=accuracy algorithm.guidance_accuracy_threshold=0.5" ;;
    bread) echo "actor_rollout_ref.rollout.n_prefix=1 actor_rollout_ref.actor.off_policy_reshape=p_div_p_0.1 algorithm.adv_estimator=grpo algorithm.guidance_gate=successes algorithm.guidance_max_successes=0" ;;
    chord) echo "actor_rollout_ref.rollout.n_prefix=1 ${SFT_TERM} actor_rollout_ref.actor.sft_loss_coef=0.9 actor_rollout_ref.actor.sft_token_weight=p_one_minus_p actor_rollout_ref.actor.sft_loss_coef_schedule=warmup_cosine actor_rollout_ref.actor.sft_loss_coef_valley=0.05 actor_rollout_ref.actor.sft_loss_coef_warmup=0.1 actor_rollout_ref.actor.sft_rl_complement=true algorithm.adv_estimator=grpo_split" ;;
    *) echo "toy_reproduction.sh: unknown arm '$1' in TRAINER_ARMS (${ALL_ARMS})" >&2; return 1 ;;
  esac
}

for arm in ${TRAINER_ARMS}; do
  extra="$(run_args "${arm}")"
  run_dir="${OUT_DIR}/trainer/${arm}"
  rm -rf "${run_dir}"
  mkdir -p "${run_dir}"
  model="${BASE_DIR}" train="${DATA_DIR}/train.parquet"
  if [[ "${arm}" == sft_rl ]]; then  # RL from the loop's seed-0 SFT weights, the prompts from there on
    model="${OUT_DIR}/sweep_sft_rl_switch" train="${DATA_DIR}/train_after_sft.parquet"
  fi
  stamp "trainer: ${arm}, ${TRAINER_STEPS} steps (log: ${run_dir}/train.log)"
  # shellcheck disable=SC2086  # ${extra}: one override per word
  if ! VERL_FILE_LOGGER_PATH="${run_dir}/metrics.jsonl" "${PYTHON}" -m luffy.mix_src.main_mix_ppo \
      "${CPU_ARGS[@]}" "${TOY_ARGS[@]}" ${extra} \
      "data.train_files=${train}" "actor_rollout_ref.model.path=${model}" \
      trainer.experiment_name="toy_${arm}" \
      trainer.default_local_dir="${run_dir}/checkpoints" >"${run_dir}/train.log" 2>&1; then
    tail -n 30 "${run_dir}/train.log" >&2
    echo "toy_reproduction.sh: the ${arm} trainer run failed; its log: ${run_dir}/train.log" >&2
    exit 1
  fi
done

stamp "report"
report_args=(--out "${OUT_DIR}" --figure "${FIGURE}" --sft_rl_switch "${SWITCH}")
# shellcheck disable=SC2206  # one arm per word
[[ -n "${TRAINER_ARMS}" ]] && report_args+=(--trainer_arms ${TRAINER_ARMS})
[[ "${QUICK}" == 1 ]] && report_args+=(--check_regime)
"${PYTHON}" exp_scripts/toy_reproduction.py report "${report_args[@]}"
echo "total: $((SECONDS - started)) s"
