# Logging defaults of the GPU recipes (train.sh, train_sft.sh); sourced, not run.
# recipe_logging CKPT_DIR sets:
#   LOGGER        '[console,file]' unless set, plus wandb when a wandb key is configured
#                 (WANDB_API_KEY or a `wandb login` netrc entry)
#   METRICS_FILE  veRL's file backend output: VERL_FILE_LOGGER_PATH, or a new JSONL under CKPT_DIR per launch
recipe_logging() {
  local ckpt_dir="$1"
  if [[ -z "${LOGGER:-}" ]]; then
    LOGGER='[console,file]'
    if [[ -n "${WANDB_API_KEY:-}" ]] || grep -qs 'api\.wandb\.ai' "${NETRC:-${HOME}/.netrc}"; then
      LOGGER='[console,file,wandb]'
    fi
  fi
  mkdir -p "${ckpt_dir}"
  METRICS_FILE="${VERL_FILE_LOGGER_PATH:-$(cd "${ckpt_dir}" && pwd)/metrics_$(date +%Y%m%d_%H%M%S).jsonl}"
}
