"""Every place luffy depends on veRL beyond its public registries: one table, and the private touches.

veRL is used as a library. Most of luffy plugs in through public registries (agent loop, advantage
estimator, policy loss, platform, rollout, dataset class, custom sampler) and public hooks
(``set_loss_fn``, hydra overlays). What is left is listed in :data:`TOUCHES`:

* ``override``: a veRL method that a luffy subclass overrides (each calls ``super()``, except where
  the ``why`` says otherwise);
* ``relies on``: a veRL function whose current behaviour luffy's code assumes (it calls it in a way
  that only works while that source stays as it is, or mirrors its steps);
* ``private``: a private veRL attribute luffy reads or writes; the helpers below are the only code
  that does.

Each row carries the sha256 (first 12 hex digits) of ``inspect.getsource`` of the veRL object in the
tested version (``tests/test_verl_compat.py`` fails, naming the row, when the installed veRL's source
differs). A veRL upgrade is then a checklist: for each failing row, read the new source, check the
``why`` still holds, and update the hash.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import inspect
from dataclasses import dataclass
from typing import Any

VERL_VERSION = "0.9.1"


@dataclass(frozen=True)
class VerlTouch:
    """One dependency on veRL's internals.

    Attributes:
        kind: ``"override"``, ``"relies on"`` or ``"private"``.
        target: ``"module:Qualified.name"`` of the veRL object whose source is hashed.
        luffy: where luffy touches it.
        why: why the public API does not do.
        sha: first 12 hex digits of sha256 of the target's source in veRL :data:`VERL_VERSION`.
    """

    kind: str
    target: str
    luffy: str
    why: str
    sha: str

    @property
    def needs_vllm(self) -> bool:
        """True for rows in veRL's vLLM rollout, which imports only where vLLM is installed."""
        return self.target.startswith(_VLLM + ".")

    @property
    def verl_file(self) -> str:
        """The veRL source file, relative to site-packages (``verl/...py``)."""
        return self.target.split(":")[0].replace(".", "/") + ".py"


_TRAINER = "verl.trainer.ppo.v1.trainer_base:PPOTrainer"
_WORKER = "verl.workers.engine_workers:ActorRolloutRefWorker"
_VLLM = "verl.workers.rollout.vllm_rollout"

TOUCHES: tuple[VerlTouch, ...] = (
    # -- trainer ------------------------------------------------------------------------------
    VerlTouch(
        "override",
        f"{_TRAINER}._init_resource_pool_mgr",
        "MixTrainerHooks (LUFFY's trainer in every mode), cpu.trainer.CpuPPOTrainerSync",
        "V1 maps roles to worker classes here, not in the task runner; the subclass swaps in its worker",
        "9eaa3bab711e",
    ),
    VerlTouch(
        "override",
        f"{_TRAINER}._next_train_batch",
        "MixTrainerHooks",
        "the only place where training (not validation) prompts pass: marks them and adds the progress",
        "0a5487478c0e",
    ),
    VerlTouch(
        "override",
        f"{_TRAINER}._compute_advantage",
        "MixTrainerHooks (_mixed_advantage mirrors its steps)",
        "runs unchanged without targets; with targets its rollout correction and estimator (module "
        "functions, no hook) must see the off-policy mask, so _mixed_advantage calls them itself",
        "2a4a2aa4a475",
    ),
    VerlTouch(
        "relies on",
        "verl.trainer.ppo.v1.utils:compute_advantage_for_multi_trajectories",
        "MixTrainerHooks._mixed_advantage",
        "called with the arguments veRL's _compute_advantage passes",
        "d973cc8aec79",
    ),
    VerlTouch(
        "relies on",
        "verl.trainer.ppo.rollout_corr_helper:compute_rollout_correction_and_add_to_batch",
        "MixTrainerHooks._on_policy_rollout_correction",
        "called on an on-policy-only view (response_mask = on-policy tokens); reads only the three fields",
        "6b7d1d5f4b79",
    ),
    VerlTouch(
        "relies on",
        "verl.trainer.ppo.ray_trainer:apply_kl_penalty",
        "MixTrainerHooks._mixed_advantage",
        "KL-in-reward step, called as veRL's _compute_advantage calls it",
        "09216f60955a",
    ),
    VerlTouch(
        "relies on",
        "verl.utils.debug.metrics:calculate_debug_metrics",
        "MixTrainerHooks._on_policy_debug_metrics",
        "called on a view whose response_mask holds on-policy tokens (reads 'responses' for its width only)",
        "026ebc3947fc",
    ),
    VerlTouch(
        "relies on",
        f"{_TRAINER}.fit",
        "MixTrainerHooks._compute_advantage (timer)",
        "self.timing_raw is the step's timing dict (no argument carries it to _compute_advantage)",
        "7d83a81c2e62",
    ),
    VerlTouch(
        "private",
        "verl.trainer.ppo.v1.trainer_base:register_trainer",
        "verl_compat.use_trainer (use_sync_trainer)",
        "TRAINER_REGISTRY[mode] is replaced in the task runner's process for each of the three modes: "
        "register_trainer refuses a second name and V1 code compares the mode to the string 'sync', so a new "
        "name changes paths",
        "40ec333837ab",
    ),
    VerlTouch(
        "override",
        "verl.trainer.main_ppo:TaskRunnerV1.__ray_actor_class__.run",
        "mix_src.task_runner.MixTaskRunner, cpu.trainer.CpuTaskRunner",
        "selects the trainer classes (use_trainer) in the task runner's process, then veRL's run",
        "26be986901db",
    ),
    VerlTouch(
        "relies on",
        "verl.trainer.ppo.v1.trainer_separate_async:PPOTrainerSeparateAsync._init_resource_pool_mgr",
        "MixTrainerHooks._init_resource_pool_mgr (MixSeparateAsyncTrainer)",
        "runs first and maps the actor role to DetachActorWorker; LUFFY's hook then maps it to LUFFY's worker "
        "composed with DetachActorWorker (worker_registry detach=True), keeping its host save/restore methods",
        "d037aea9efc9",
    ),
    VerlTouch(
        "relies on",
        "verl.trainer.ppo.v1.replay_buffer:ReplayBufferAsync._stale_terminal_keys",
        "docs/async.md (stale groups), tests/test_mix_trainer.py",
        "staleness is judged per prompt group from its prompt's submission step, never from a sample's "
        "version tags, so a target (tagged by LUFFY's agent loop) is never judged stale on its own",
        "a71c810a9e45",
    ),
    VerlTouch(
        "relies on",
        "verl.trainer.ppo.v1.replay_buffer:ReplayBuffer._clear_groups",
        "docs/async.md (stale groups), tests/test_mix_trainer.py",
        "a stale group is evicted whole (every key of the uid, the target included) and refilled with a new "
        "prompt: LUFFY's stated rule for stale groups",
        "46adae90d465",
    ),
    VerlTouch(
        "relies on",
        "verl.workers.rollout.llm_server:FullyAsyncLLMServerClient.generate",
        "mix_agent_loop._TargetServer (prefix guidance in the async modes)",
        "a request aborted for a weight update is resumed as prompt + tokens so far, so the target prefix "
        "_TargetServer put after the prompt stays the response's first tokens and luffy_prefix_len holds",
        "3d6399350ff0",
    ),
    # -- workers ------------------------------------------------------------------------------
    VerlTouch(
        "override",
        f"{_WORKER}.__init__",
        "cpu.worker.CpuActorRolloutRefWorker, CpuMixActorRolloutRefWorker; MixActorRolloutRefWorker",
        "the CPU platform's gloo group must exist before veRL's own process-group init; with the SFT "
        "multitask loss, LUFFY's worker sets actor_worker_cls, the class veRL's init_model builds the actor from",
        "7ec3b78b884c",
    ),
    VerlTouch(
        "override",
        "verl.experimental.separation.engine_workers:DetachActorWorker.__init__",
        "cpu.worker.CpuMixDetachActorWorker (mix_worker.MixDetachActorWorker composes it)",
        "separate_async's trainer worker on the CPU platform: the gloo group first, then LUFFY's init, whose "
        "super() is DetachActorWorker's (it calls ActorRolloutRefWorker.__init__ directly)",
        "afc6b4ddb719",
    ),
    VerlTouch(
        "relies on",
        "verl.checkpoint_engine.base:CheckpointEngineManager.update_weights",
        "cpu.checkpoint_engine.GlooCpuCheckpointEngine",
        "calls prepare, build_topology, init_process_group, send/receive_weights, finalize in that order for "
        "every update, as the gloo_cpu engine builds one group per update",
        "7dc90230efef",
    ),
    VerlTouch(
        "relies on",
        "verl.checkpoint_engine.base:CheckpointEngineWorker.update_weights",
        "cpu.checkpoint_engine.GlooCpuCheckpointEngine.receive_weights",
        "passes receive_weights(...) to the server adapter without awaiting it: a plain generator serves the "
        "hf_cpu adapter, which iterates its weights synchronously",
        "290edf10e58b",
    ),
    VerlTouch(
        "override",
        "verl.workers.engine_workers:TrainingWorker.train_batch",
        "mix_src.mix_worker.SftCountingTrainingWorker",
        "the last method that sees a whole mini-batch before the engine cuts micro-batches: adds the SFT "
        "multitask loss's target and on-policy token counts (veRL's global_batch_info has neither), then veRL's",
        "9107065b72b6",
    ),
    VerlTouch(
        "override",
        f"{_WORKER}.init_model",
        "MixActorRolloutRefWorker",
        "installs LUFFY's loss with set_loss_fn after veRL built the actor config",
        "d1598903d824",
    ),
    VerlTouch(
        "private",
        f"{_WORKER}.init_model",
        "verl_compat.bound_loss_config",
        "the actor's dataclass config exists only as loss_fn.keywords['config'] (partial(ppo_loss, config=...))",
        "d1598903d824",
    ),
    VerlTouch(
        "relies on",
        "verl.workers.utils.losses:ppo_loss",
        "mix_src.mix_loss.luffy_ppo_loss",
        "wrapped whole; its registered policy loss gets no batch fields, so the off-policy mask reaches "
        "luffy_policy_loss through a ContextVar set only while ppo_loss runs (synchronously)",
        "d7c0f8772b44",
    ),
    VerlTouch(
        "private",
        "verl.workers.engine.fsdp.transformer_impl:FSDPEngineWithLMHead.prepare_model_outputs",
        "verl_compat.set_engine_logprobs (mix_src.logprobs, MixActorRolloutRefWorker.init_model)",
        "without flash-attn the token log-probs come out in bf16; this method looks up the module-level name "
        "logprobs_from_logits(logits=, labels=, inplace_backward=) on (tokens, vocab) logits at each call, so "
        "rebinding that name in the worker process swaps the kernel without copying the method",
        "5239f536e8f6",
    ),
    VerlTouch(
        "relies on",
        "verl.utils.torch_functional:logprobs_from_logits",
        "mix_src.logprobs.use_fp32_logprobs_without_flash_attn",
        "replaced only where it would fall back to logprobs_from_logits_v2 (no flash-attn cross-entropy, no "
        "torch_npu): the replacement keeps its signature and returns fp32 as its flash-attn path does",
        "dffd21fe40eb",
    ),
    VerlTouch(
        "private",
        "verl.workers.engine.base:EngineRegistry",
        "verl_compat.registered_engines (cpu.engine)",
        "EngineRegistry._engines is read so a second plugin load does not re-register (register asserts)",
        "f07ea1601100",
    ),
    VerlTouch(
        "private",
        "verl.base_config:BaseConfig",
        "mix_src.mix_config.LuffyActorConfig",
        "_mutable_fields extended so __post_init__ can set loss_agg_mode / loss_scale_factor",
        "40025f28a710",
    ),
    VerlTouch(
        "private",
        "verl.workers.rollout.base:get_rollout_class",
        "verl_compat.register_rollout_adapter (cpu)",
        "veRL has no public hook for worker-side rollout adapters: get_rollout_class reads _ROLLOUT_REGISTRY",
        "d0be5827f121",
    ),
    VerlTouch(
        "override",
        "verl.workers.config.actor:FSDPActorConfig.__post_init__",
        "mix_src.mix_config.LuffyActorConfig",
        "veRL's checks, then LUFFY's loss keys; sets loss_agg_mode / loss_scale_factor from loss_remove_token_mean",
        "be330dbcd036",
    ),
    VerlTouch(
        "override",
        "verl.workers.config.rollout:RolloutConfig.__post_init__",
        "mix_src.mix_config.LuffyRolloutConfig",
        "veRL's checks, then LUFFY's rollout keys",
        "6e56bfc92e4e",
    ),
    VerlTouch(
        "override",
        "verl.workers.rollout.base:BaseRollout.__init__",
        "cpu.rollout.HFCpuServerAdapter",
        "the hf_cpu rollout's worker side (veRL's base stores config, model config and mesh)",
        "1d439e8b5434",
    ),
    VerlTouch(
        "override",
        "verl.workers.rollout.replica:RolloutReplica.rollout_worker_use_gpu",
        "cpu.rollout.HFCpuReplica",
        "the hf_cpu server runs on no GPU",
        "e419bea70756",
    ),
    VerlTouch(
        "override",
        "verl.plugin.platform.platform_base:PlatformBase.is_platform_available",
        "cpu.platform.CpuPlatform",
        "never auto-detected: only VERL_PLATFORM=cpu selects the cpu platform",
        "6bd97995cf20",
    ),
    # -- agent loop, data, sampler ------------------------------------------------------------
    VerlTouch(
        "override",
        "verl.experimental.agent_loop.single_turn_agent_loop:SingleTurnAgentLoop.run",
        "MixAgentLoop.run (calls it for every session)",
        "an off-policy session swaps self.server_manager for _TargetServer: relies on run making exactly "
        "one server_manager.generate call and laying out its token_ids / log_probs / extra_fields",
        "1baec41cee2d",
    ),
    VerlTouch(
        "relies on",
        "verl.experimental.agent_loop.agent_loop:AgentLoopWorker._run_agent_loop",
        "MixAgentLoop.run (the server-client swap)",
        "builds one agent-loop instance per session, so swapping its server_manager affects that session only",
        "32c3d607c5d4",
    ),
    VerlTouch(
        "override",
        "verl.experimental.agent_loop.single_turn_agent_loop:SingleTurnAgentLoop.__init__",
        "MixAgentLoop.__init__",
        "veRL's init, then LUFFY's rollout keys read once per session",
        "5ce372e66a0d",
    ),
    VerlTouch(
        "override",
        "verl.experimental.agent_loop.agent_loop:AgentLoopBase.ct_build_initial_tokens",
        "MixAgentLoop.ct_build_initial_tokens",
        "a text-only prompt's token ids are built once per process and shared by its n sessions: relies on "
        "the ids depending only on the tokenizer, builder type, chat-template kwargs, prompt length and messages",
        "cc0ef93a0db8",
    ),
    VerlTouch(
        "override",
        "verl.utils.dataset.rl_dataset:RLHFDataset.maybe_filter_out_long_prompts",
        "mix_src.dataset.LuffyRLHFDataset",
        "checks the target column on the loaded frame, then veRL's filter",
        "e3dfcd9bb62a",
    ),
    VerlTouch(
        "override",
        "verl.utils.dataset.rl_dataset:RLHFDataset.__getitem__",
        "mix_src.dataset.LuffyRLHFDataset",
        "normalises the target column of veRL's row dict (drops it for validation sets)",
        "c0ba8f285fe7",
    ),
    VerlTouch(
        "override",
        "verl.utils.dataset.rl_dataset:RLHFDataset.__init__",
        "mix_src.dataset.LuffyRLHFDataset",
        "reads LUFFY's data keys before veRL loads the files",
        "246f18a04aae",
    ),
    VerlTouch(
        "override",
        "verl.trainer.ppo.v1.replay_buffer:ReplayBuffer.__init__",
        "cpu.replay_buffer.FastPollReplayBuffer, FastPollReplayBufferAsync",
        "poll_interval is a constructor argument the config does not expose",
        "0c37a4862999",
    ),
    # -- vLLM's CPU build (rows checked only where veRL's vLLM modules import) ----------------
    VerlTouch(
        "override",
        f"{_VLLM}.utils:vLLMColocateWorkerExtension.update_weights_from_ipc",
        "cpu.vllm_rollout.CpuVLLMWorkerExtension",
        "replaced, not wrapped: on vLLM's CPU build linear weights live packed in oneDNN kernels, so the "
        "update goes through vLLM's layerwise reload and re-packs the tied lm_head; it keeps the parent's "
        "shared-memory bucket protocol",
        "21edd41f704f",
    ),
    VerlTouch(
        "private",
        f"{_VLLM}.utils:vLLMColocateWorkerExtension._get_zmq_handle",
        "cpu.vllm_rollout.CpuVLLMWorkerExtension",
        "the bucket receiver must use the same ZMQ handle the parent's sender connects to",
        "b823b8e182a4",
    ),
    VerlTouch(
        "override",
        f"{_VLLM}.vllm_async_server:vLLMHttpServer._get_worker_extension_cls",
        "cpu.vllm_rollout.CpuVLLMHttpServer",
        'the one place the server names the worker extension class vLLM loads',
        "f2a2ee36d248",
    ),
    VerlTouch(
        "override",
        f"{_VLLM}.vllm_async_server:vLLMHttpServer.launch_server",
        "cpu.vllm_rollout.CpuVLLMHttpServer",
        "sets the CPU KV-cache size and the /dev/shm record file before vLLM's processes start, then veRL's",
        "fff334de2369",
    ),
    VerlTouch(
        "override",
        f"{_VLLM}.vllm_async_server:vLLMReplica.__init__",
        "cpu.vllm_rollout.CpuVLLMReplica",
        "veRL's init, then server_class (which launch_servers starts) is the CPU server",
        "a43756da3be1",
    ),
)


def resolve(target: str) -> Any:
    """The veRL object named ``"module:Qualified.name"``."""
    module_name, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def source_hash(target: str) -> str:
    """First 12 hex digits of sha256 of the target's source."""
    obj = inspect.unwrap(resolve(target))
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:12]


def vllm_installed() -> bool:
    """Whether a distribution named ``vllm`` is installed (vLLM itself, or the CPU build's alias)."""
    try:
        importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def drifted() -> list[tuple[VerlTouch, str]]:
    """Rows whose veRL source no longer has the recorded hash, with the installed hash (vLLM rows only
    where vLLM is installed)."""
    out = []
    for touch in TOUCHES:
        if touch.needs_vllm and not vllm_installed():
            continue
        installed = source_hash(touch.target)
        if installed != touch.sha:
            out.append((touch, installed))
    return out


# -- the private touches (the only code in luffy that reads or writes these) ---------------------


def use_trainer(mode: str, trainer_cls: type) -> None:
    """Make veRL's V1 task runner build ``trainer_cls`` for ``trainer.v1.trainer_mode=mode`` (this process)."""
    from verl.trainer.ppo.v1 import trainer_base

    if mode not in trainer_base.TRAINER_REGISTRY:
        known = sorted(trainer_base.TRAINER_REGISTRY)
        raise ValueError(f"trainer.v1.trainer_mode={mode!r} is not one of veRL's: {known}")
    trainer_base.TRAINER_REGISTRY[mode] = trainer_cls


def use_sync_trainer(trainer_cls: type) -> None:
    """Make veRL's V1 task runner build ``trainer_cls`` for ``trainer.v1.trainer_mode=sync`` (this process)."""
    use_trainer("sync", trainer_cls)


def registered_engines(model_type: str) -> dict[str, dict[str, type]]:
    """veRL's ``EngineRegistry`` entries of ``model_type``: ``{backend: {device: engine class}}``."""
    from verl.workers.engine import EngineRegistry

    return EngineRegistry._engines.get(model_type, {})


def register_rollout_adapter(name: str, mode: str, class_path: str) -> None:
    """Register a worker-side rollout adapter (``"module.Class"``) for ``rollout.name=name``, ``mode``."""
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY

    _ROLLOUT_REGISTRY[(name, mode)] = class_path


def set_engine_logprobs(fn: Any) -> None:
    """Make veRL's FSDP engine compute token log-probs with ``fn(logits, labels, inplace_backward)`` (this process)."""
    from verl.workers.engine.fsdp import transformer_impl

    transformer_impl.logprobs_from_logits = fn


def bound_loss_config(worker: Any) -> Any:
    """The actor config veRL bound to the worker's default loss (``partial(ppo_loss, config=...)``)."""
    return worker.loss_fn.keywords["config"]
