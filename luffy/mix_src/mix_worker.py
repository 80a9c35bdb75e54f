"""LUFFY's actor worker: veRL's ``ActorRolloutRefWorker`` whose loss is LUFFY's on/off-policy loss."""

from __future__ import annotations

from functools import partial

from verl.single_controller.base.decorator import Dispatch, register
from verl.workers.engine_workers import ActorRolloutRefWorker

from luffy.mix_src.mix_loss import LOSS_MODE, luffy_ppo_loss
from luffy.verl_compat import bound_loss_config


class MixActorRolloutRefWorker(ActorRolloutRefWorker):
    """``ActorRolloutRefWorker`` with :func:`luffy.mix_src.mix_loss.luffy_ppo_loss` as the actor loss."""

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_model(self):
        # veRL builds the actor's dataclass config inside init_model and binds it to its default loss;
        # overriding here reuses that exact config object for LUFFY's loss.
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
