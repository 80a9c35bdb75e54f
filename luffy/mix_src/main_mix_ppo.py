"""LUFFY's entry point: ``python -m luffy.mix_src.main_mix_ppo [hydra overrides]``.

Differs from veRL's ``verl.trainer.main_ppo`` in what it hands to ``run_ppo``: the config is
``config/mix_ppo_trainer.yaml`` (veRL's ``ppo_trainer`` plus LUFFY's keys), LUFFY's keys are checked
first (before veRL is even imported, so a bad value fails in seconds), then the run's inputs
(``preflight``: model context, logger credentials, training targets, attention implementation), and
the task runner is veRL's V1 runner building ``MIXRayPPOTrainer``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from luffy.mix_src.config_check import check_luffy_config
from luffy.mix_src.preflight import preflight


@hydra.main(config_path="config", config_name="mix_ppo_trainer", version_base=None)
def main(config: DictConfig) -> None:
    """Check LUFFY's keys, then run veRL's V1 PPO loop with LUFFY's task runner."""
    try:
        check_luffy_config(config)
    except ValueError as err:
        raise SystemExit(f"Invalid LUFFY config: {err}") from None
    try:
        preflight(config)
    except ValueError as err:
        raise SystemExit(f"LUFFY cannot start: {err}") from None

    from verl.trainer.main_ppo import run_ppo
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    from luffy.mix_src.task_runner import MixTaskRunner

    auto_set_device(config)
    validate_config(
        config=config,
        use_reference_policy=need_reference_policy(config),
        use_critic=need_critic(config),
    )
    run_ppo(config, task_runner_class=MixTaskRunner)


if __name__ == "__main__":
    main()
