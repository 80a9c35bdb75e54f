#!/usr/bin/env bash
# Functions shared by the tiny-model scripts (train_tiny_cpu.sh, train_grpo_tiny_cpu.sh, smoke_gpu.sh).
# Source it after PYTHON is set; it starts nothing by itself.

# tiny_inputs MODEL_DIR DATA_DIR SAMPLE_JSONL: the offline tiny model + tokenizer (kept when already
# there; hidden size TINY_HIDDEN_SIZE, default 64) and the training parquet prepared from the sample rows
# (kept only when it was made from these same bytes with the same options: its footer records the input's
# path, size and sha256, so another SAMPLE_JSONL, or an edited one, into the same DATA_DIR rebuilds it).
tiny_inputs() {
  local model_dir="$1" data_dir="$2" sample_jsonl="$3"
  "${PYTHON}" -m luffy.tiny "${model_dir}" --corpus "${sample_jsonl}" --hidden_size "${TINY_HIDDEN_SIZE:-64}"
  "${PYTHON}" data/prepare_train.py --input "${sample_jsonl}" --output_dir "${data_dir}" --no_progress --keep_current
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

# tiny_luffy_args: sets the array TINY_LUFFY_ARGS, the hydra overrides every tiny LUFFY run shares (its
# data and model, and LUFFY's recipe knobs), from DATA_DIR, MODEL_DIR, BATCH, PROMPT_LEN, RESPONSE_LEN,
# N and N_PREFIX. Validation reuses the training parquet: it is a check that validation runs.
tiny_luffy_args() {
  TINY_LUFFY_ARGS=(
    "data.train_files=${DATA_DIR}/train.parquet"
    "data.val_files=${DATA_DIR}/train.parquet"
    "data.custom_cls.path=pkg://luffy.mix_src.dataset"
    "data.custom_cls.name=LuffyRLHFDataset"
    "data.train_batch_size=${BATCH}"
    "data.max_prompt_length=${PROMPT_LEN}"
    "data.max_response_length=${RESPONSE_LEN}"
    "data.filter_overlong_prompts=true"
    "actor_rollout_ref.model.path=${MODEL_DIR}"
    "actor_rollout_ref.actor.ppo_mini_batch_size=${BATCH}"
    "actor_rollout_ref.actor.entropy_coeff=0.001"
    "actor_rollout_ref.actor.off_policy_reshape=p_div_p_0.1"
    "actor_rollout_ref.actor.loss_remove_token_mean=true"
    "actor_rollout_ref.actor.loss_remove_clip=true"
    "actor_rollout_ref.rollout.n=${N}"
    "actor_rollout_ref.rollout.n_prefix=${N_PREFIX}"
    "actor_rollout_ref.rollout.min_prefix_ratio=1.0"
    "actor_rollout_ref.rollout.max_prefix_ratio=1.0"
    "actor_rollout_ref.rollout.max_prefix_len=${RESPONSE_LEN}"
    "actor_rollout_ref.rollout.val_kwargs.n=1"
    "algorithm.adv_estimator=grpo"
    "algorithm.grpo_use_std=false"
  )
}
