"""veRL's PPO/GRPO entry point for a CPU-only machine.

The one difference from ``python -m verl.trainer.main_ppo``: the V1 task runner is
:class:`~luffy.cpu.trainer.CpuTaskRunner`, whose workers start a plain ``gloo`` process group
(see :mod:`luffy.cpu.worker`). Export ``VERL_PLATFORM=cpu`` and ``VERL_USE_EXTERNAL_MODULES=luffy.plugin``
before running (``exp_scripts/common_tiny_cpu.sh`` does).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig
from verl.trainer.main_ppo import run_ppo
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import validate_config
from verl.utils.device import auto_set_device

from luffy.cpu.trainer import CpuTaskRunner


@hydra.main(config_path="pkg://verl.trainer.config", config_name="ppo_trainer", version_base=None)
def main(config: DictConfig) -> None:
    """Validate the config as veRL's main does, then run the V1 trainer with the CPU task runner."""
    if not config.trainer.use_v1:
        raise ValueError("luffy.cpu.main_cpu_ppo runs veRL's V1 trainer only; set trainer.use_v1=true")
    auto_set_device(config)  # trainer.device follows the selected platform (cpu)
    validate_config(
        config=config,
        use_reference_policy=need_reference_policy(config),
        use_critic=need_critic(config),
    )
    run_ppo(config, task_runner_class=CpuTaskRunner)


if __name__ == "__main__":
    main()
