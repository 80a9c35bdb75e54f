"""The task runner LUFFY hands to veRL's ``run_ppo``."""

from __future__ import annotations

import ray
from omegaconf import DictConfig
from verl.trainer.main_ppo import TaskRunnerV1

from luffy.mix_src.mix_trainer import use_mix_trainer


@ray.remote
class MixTaskRunner(TaskRunnerV1.__ray_actor_class__):
    """veRL's V1 task runner whose trainer is :class:`luffy.mix_src.mix_trainer.MIXRayPPOTrainer`."""

    def run(self, config: DictConfig):
        use_mix_trainer()
        return super().run(config)
