"""veRL's V1 sync trainer with the CPU worker, and a task runner that selects it.

V1 maps roles to worker classes inside the trainer (``PPOTrainer._init_resource_pool_mgr`` uses
``ActorRolloutRefWorker``), so swapping in :class:`~luffy.cpu.worker.CpuActorRolloutRefWorker`
takes a trainer subclass; everything else is veRL's ``PPOTrainerSync`` unchanged. A trainer that
already brings its own worker (LUFFY's) only needs its worker to call
:func:`luffy.cpu.worker.prepare_cpu_process_group` first.
"""

from __future__ import annotations

import logging

import ray
from omegaconf import DictConfig
from verl.trainer.main_ppo import TaskRunnerV1
from verl.trainer.ppo.v1 import trainer_base
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.workers.engine_workers import ActorRolloutRefWorker

from luffy.cpu.worker import CpuActorRolloutRefWorker

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
        # register_trainer refuses to re-register "sync", and several V1 code paths compare the mode
        # to the string "sync", so a new name would switch paths: replace the entry in this process.
        trainer_base.TRAINER_REGISTRY["sync"] = CpuPPOTrainerSync
        super().run(config)
