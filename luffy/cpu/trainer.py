"""veRL's V1 sync trainer with the CPU worker, and a task runner that selects it.

V1 maps roles to worker classes inside the trainer (``PPOTrainer._init_resource_pool_mgr`` uses
``ActorRolloutRefWorker``), so swapping in :class:`~luffy.cpu.worker.CpuActorRolloutRefWorker`
takes a trainer subclass; everything else is veRL's ``PPOTrainerSync`` unchanged. LUFFY's trainer
picks its worker per device instead (:mod:`luffy.mix_src.worker_registry`): on the CPU,
:class:`~luffy.cpu.worker.CpuMixActorRolloutRefWorker`.
"""

from __future__ import annotations

import logging

import ray
from omegaconf import DictConfig
from verl.trainer.main_ppo import TaskRunnerV1
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.workers.engine_workers import ActorRolloutRefWorker

from luffy.cpu.worker import CpuActorRolloutRefWorker
from luffy.verl_compat import use_sync_trainer

logger = logging.getLogger(__name__)


class CpuPPOTrainerSync(PPOTrainerSync):
    """``PPOTrainerSync`` whose actor/rollout/ref ranks are :class:`CpuActorRolloutRefWorker`."""

    def _init_resource_pool_mgr(self) -> None:
        super()._init_resource_pool_mgr()
        for role, remote_cls in list(self.role_worker_mapping.items()):
            if remote_cls.__ray_actor_class__ is ActorRolloutRefWorker:
                self.role_worker_mapping[role] = ray.remote(CpuActorRolloutRefWorker)


@ray.remote
class CpuTaskRunner(TaskRunnerV1.__ray_actor_class__):
    """veRL's ``TaskRunnerV1`` that runs :class:`CpuPPOTrainerSync` for ``trainer_mode=sync``."""

    def run(self, config: DictConfig) -> None:
        if config.trainer.v1.trainer_mode != "sync":
            raise ValueError(
                f"trainer.v1.trainer_mode={config.trainer.v1.trainer_mode!r}: the CPU task runner only "
                "swaps the worker of the 'sync' trainer; set trainer.v1.trainer_mode=sync"
            )
        use_sync_trainer(CpuPPOTrainerSync)  # why a replaced entry and not a new mode: verl_compat
        super().run(config)
