#!/usr/bin/env bash
# Functions shared by the tiny-model scripts (train_tiny_cpu.sh, train_grpo_tiny_cpu.sh, smoke_gpu.sh).
# Source it after PYTHON is set; it starts nothing by itself.

# tiny_inputs MODEL_DIR DATA_DIR SAMPLE_JSONL: the offline tiny model + tokenizer (kept when already
# there) and the training parquet prepared from the sample rows (kept when already there).
tiny_inputs() {
  local model_dir="$1" data_dir="$2" sample_jsonl="$3"
  "${PYTHON}" -m luffy.tiny "${model_dir}" --corpus "${sample_jsonl}"
  if [[ ! -f "${data_dir}/train.parquet" ]]; then
    "${PYTHON}" data/prepare_train.py --input "${sample_jsonl}" --output_dir "${data_dir}" --no_progress
  fi
}

# report_step_times LOG: seconds per step from veRL's console metrics (timing_s/step); the first step
# includes start-up, so warm steps are reported apart.
report_step_times() {
  "${PYTHON}" - "$1" <<'PY'
import re, sys
times = [float(m) for m in re.findall(r"timing_s/step:([0-9.]+)", open(sys.argv[1]).read())]
if not times:
    sys.exit("no timing_s/step in the log: the run did not complete a step")
warm = times[1:] or times
print(f"steps: {len(times)}  first step: {times[0]:.2f} s  warm steps: mean {sum(warm) / len(warm):.2f} s "
      f"(min {min(warm):.2f}, max {max(warm):.2f})")
PY
}
