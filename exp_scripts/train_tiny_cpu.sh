#!/usr/bin/env bash
# LUFFY end to end on a CPU-only machine, in minutes: a tiny random-weight model, a handful of steps
# (rollouts, off-policy mixing, rewards, mixed advantages, policy-shaped update), one validation,
# metrics to the console and a JSONL file, a checkpoint, then a resume from it for one more step and a
# PNG of the run's curves in figures/.
#   exp_scripts/train_tiny_cpu.sh [extra hydra overrides]
# Settings (environment): OUT_DIR, SAMPLE_JSONL, STEPS, BATCH, N, N_PREFIX, PROMPT_LEN, RESPONSE_LEN, LR,
# FIGURE ("none": no plot), RESUME (1: resume for one more step after the run; 0: skip), SAVE_FREQ and
# TEST_FREQ (default: at the last step), DUMP_ROLLOUTS (1: write each step's samples to
# $OUT_DIR/rollouts/<step>.jsonl), FRESH (1: delete $OUT_DIR/checkpoints, rollouts and metrics first; by
# default an interrupted run is resumed from the checkpoints already there, a finished one is left as it
# is, and nothing is deleted).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${REPO}"
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"  # the active environment
OUT_DIR="${OUT_DIR:-/tmp/luffy_tiny_cpu}"
# 64 synthetic OpenR1-Math rows shipped with the repo (training data and tokenizer corpus)
SAMPLE_JSONL="${SAMPLE_JSONL:-${REPO}/data/sample/openr1_sample.jsonl}"
MODEL_DIR="${MODEL_DIR:-${OUT_DIR}/tiny_model}"
DATA_DIR="${DATA_DIR:-${OUT_DIR}/data}"
STEPS="${STEPS:-3}"                 # training steps before the resume
BATCH="${BATCH:-4}"                 # prompts per step
N="${N:-4}"                         # samples per prompt ...
N_PREFIX="${N_PREFIX:-1}"           # ... of which off-policy targets
PROMPT_LEN="${PROMPT_LEN:-512}"
RESPONSE_LEN="${RESPONSE_LEN:-256}"  # fits every sample trace whole, so targets earn their reward
LR="${LR:-1e-3}"
RESUME="${RESUME:-1}"
SAVE_FREQ="${SAVE_FREQ:-${STEPS}}"
TEST_FREQ="${TEST_FREQ:-${STEPS}}"
DUMP_ROLLOUTS="${DUMP_ROLLOUTS:-1}"
FIGURE="${FIGURE:-${REPO}/figures/tiny_cpu_luffy.png}"
FRESH="${FRESH:-0}"
EXPERIMENT="${EXPERIMENT:-luffy_tiny_cpu}"

# shellcheck source=exp_scripts/common_tiny_cpu.sh
source "${REPO}/exp_scripts/common_tiny_cpu.sh"
mkdir -p "${OUT_DIR}"
[[ "${FIGURE}" == none ]] || mkdir -p "$(dirname "${FIGURE}")"

# shellcheck source=exp_scripts/tiny_inputs.sh
source "${REPO}/exp_scripts/tiny_inputs.sh"
tiny_inputs "${MODEL_DIR}" "${DATA_DIR}" "${SAMPLE_JSONL}"
tiny_luffy_args

rollout_dump=null
[[ "${DUMP_ROLLOUTS}" == 1 ]] && rollout_dump="${OUT_DIR}/rollouts"

# The step the checkpoints in OUT_DIR reach (0: none).
checkpointed_step() {
  local latest="${OUT_DIR}/checkpoints/latest_checkpointed_iteration.txt"
  if [[ -s "${latest}" ]]; then tr -dc '0-9' <"${latest}"; else echo 0; fi
}

# One LUFFY run; $1 = total steps, $2 = metrics JSONL, $3 = console log, then extra overrides. A run the
# checkpoints already reach is skipped; metrics of an earlier, interrupted run are kept beside the new
# file (veRL's file logger starts its file afresh) as <name>.part<k>.jsonl, and plotted with it.
run_luffy() {
  local total_steps="$1" metrics="$2" log="$3" k=1
  shift 3
  if (( $(checkpointed_step) >= total_steps )); then
    echo "${OUT_DIR}/checkpoints already reach step ${total_steps}: that run is done (FRESH=1 starts afresh)" >&2
    return 0
  fi
  if [[ -s "${metrics}" ]]; then
    while [[ -e "${metrics%.jsonl}.part${k}.jsonl" ]]; do k=$((k + 1)); done
    mv "${metrics}" "${metrics%.jsonl}.part${k}.jsonl"
  fi
  VERL_FILE_LOGGER_PATH="${metrics}" "${PYTHON}" -m luffy.mix_src.main_mix_ppo \
    "${CPU_ARGS[@]}" \
    "${TINY_LUFFY_ARGS[@]}" \
    data.val_batch_size="${BATCH}" \
    data.truncation=error \
    actor_rollout_ref.actor.optim.lr="${LR}" \
    actor_rollout_ref.actor.checkpoint.save_contents='[model,optimizer,extra,hf_model]' \
    actor_rollout_ref.actor.checkpoint.load_contents='[model,optimizer,extra]' \
    trainer.logger='[console,file]' \
    trainer.val_before_train=false \
    trainer.test_freq="${TEST_FREQ}" \
    trainer.save_freq="${SAVE_FREQ}" \
    trainer.resume_mode=auto \
    trainer.total_training_steps="${total_steps}" \
    trainer.rollout_data_dir="${rollout_dump}" \
    trainer.project_name=luffy_cpu \
    trainer.experiment_name="${EXPERIMENT}" \
    trainer.default_local_dir="${OUT_DIR}/checkpoints" \
    "$@" 2>&1 | tee "${log}"
}

if [[ "${FRESH}" == 1 ]]; then
  rm -rf "${OUT_DIR}/checkpoints" "${OUT_DIR}/rollouts"
  rm -f "${OUT_DIR}"/metrics*.jsonl
elif [[ -e "${OUT_DIR}/checkpoints/latest_checkpointed_iteration.txt" ]]; then
  echo "resuming from the checkpoints in ${OUT_DIR}/checkpoints (FRESH=1 deletes them and starts afresh)" >&2
fi
run_luffy "${STEPS}" "${OUT_DIR}/metrics.jsonl" "${OUT_DIR}/train.log" "$@"
names=(metrics)
if [[ "${RESUME}" == 1 ]]; then
  # same command, one step further: veRL's resume_mode=auto restores model, optimizer and data order
  run_luffy "$((STEPS + 1))" "${OUT_DIR}/metrics_resume.jsonl" "${OUT_DIR}/resume.log" "$@"
  names+=(metrics_resume)
fi
metric_files=()  # every non-empty metrics file of this OUT_DIR, earlier parts first
for name in "${names[@]}"; do
  for f in "${OUT_DIR}/${name}".part*.jsonl "${OUT_DIR}/${name}.jsonl"; do
    [[ -s "${f}" ]] && metric_files+=("${f}")
  done
done

if (( ${#metric_files[@]} == 0 )); then
  echo "no metrics in ${OUT_DIR} to plot" >&2
elif [[ "${FIGURE}" != none ]]; then
  "${PYTHON}" exp_scripts/plot_metrics.py "${metric_files[@]}" --out "${FIGURE}" --title "LUFFY, tiny CPU run"
fi
report_step_times "${OUT_DIR}/train.log"
