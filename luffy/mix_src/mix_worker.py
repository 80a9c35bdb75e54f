"""LUFFY's actor worker: veRL's ``ActorRolloutRefWorker`` whose loss is LUFFY's on/off-policy loss, and whose
token log-probs are fp32 without flash-attn (:mod:`luffy.mix_src.logprobs`)."""

from __future__ import annotations

from functools import partial

from verl.experimental.separation.engine_workers import DetachActorWorker
from verl.single_controller.base.decorator import Dispatch, register
from verl.workers.engine_workers import ActorRolloutRefWorker, TrainingWorker

from luffy.mix_src.logprobs import use_fp32_logprobs_without_flash_attn
from luffy.mix_src.mix_loss import LOSS_MODE, luffy_ppo_loss
from luffy.mix_src.sft_loss import assign_sft_counts
from luffy.verl_compat import bound_loss_config


class SftCountingTrainingWorker(TrainingWorker):
    """veRL's ``TrainingWorker`` that adds the SFT multitask loss's counts to each mini-batch."""

    def train_batch(self, data):
        # veRL's global batch info counts all response tokens; the SFT multitask loss also needs the
        # mini-batch's target and on-policy counts, and this is the last method that sees it whole
        # (the engine cuts it into micro-batches next)
        assign_sft_counts(data, self.engine.get_data_parallel_group())
        return super().train_batch(data)


class MixActorRolloutRefWorker(ActorRolloutRefWorker):
    """``ActorRolloutRefWorker`` with :func:`luffy.mix_src.mix_loss.luffy_ppo_loss` as the actor loss."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        if config.actor.get("use_sft_multitask_loss", False):
            self.actor_worker_cls = SftCountingTrainingWorker  # veRL's init_model builds the actor from it

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_model(self):
        # veRL builds the actor's dataclass config inside init_model and binds it to its default loss;
        # overriding here reuses that exact config object for LUFFY's loss.
        if use_fp32_logprobs_without_flash_attn():
            print("[luffy] no flash-attn cross-entropy: actor log-probs come from fp32 logits, chunked", flush=True)
        super().init_model()
        if self.actor is None:
            return
        actor_config = bound_loss_config(self)
        if actor_config.policy_loss.loss_mode != LOSS_MODE:
            raise ValueError(
                f"actor_rollout_ref.actor.policy_loss.loss_mode={actor_config.policy_loss.loss_mode!r}; "
                f"LUFFY's worker needs {LOSS_MODE!r} (mix_ppo_trainer.yaml sets it)"
            )
        self.loss_fn = partial(luffy_ppo_loss, config=actor_config)
        self.actor.set_loss_fn(self.loss_fn)


class MixDetachActorWorker(MixActorRolloutRefWorker, DetachActorWorker):
    """LUFFY's worker for ``separate_async``: veRL's ``DetachActorWorker`` (the trainer saves and restores
    the old policy's weights on the host between mini-batches) with LUFFY's loss."""
