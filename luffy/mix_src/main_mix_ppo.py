"""LUFFY's entry point: ``python -m luffy.mix_src.main_mix_ppo [hydra overrides]``.

Differs from veRL's ``verl.trainer.main_ppo`` in what it hands to ``run_ppo``: LUFFY's original key names
on the command line are translated first (:mod:`luffy.mix_src.original_keys`), the config is
``config/mix_ppo_trainer.yaml`` (veRL's ``ppo_trainer`` plus LUFFY's keys), and before veRL is even
imported (so a bad value fails in seconds) LUFFY's keys are checked, then the checkpoint it would resume
from (``checkpoint_check.py``) and the run's inputs (``preflight.py``: model context, logger credentials,
training targets, on GPUs CUDA, memory and disk (``gpu_preflight.py``), attention implementation). Any
failure is one ``error: ...`` line and exit status 2 (``LUFFY_DEBUG=1`` shows the traceback). The task
runner is veRL's V1 runner building ``MIXRayPPOTrainer``.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from luffy.cli import EXIT_USER_ERROR, debug_requested
from luffy.mix_src import preflight as run_inputs
from luffy.mix_src.checkpoint_check import check_resume_checkpoint
from luffy.mix_src.config_check import check_luffy_config
from luffy.mix_src.original_keys import translate_overrides


def _refuse(what: str, err: ValueError) -> None:
    """Exit with one ``error: <what>: ...`` line and status 2 (the traceback only with ``LUFFY_DEBUG=1``)."""
    if debug_requested([]):
        raise err
    print(f"error: {what}: {err}", file=sys.stderr)
    raise SystemExit(EXIT_USER_ERROR) from None


def preflight(config: DictConfig) -> None:
    """Every check made before Ray starts: LUFFY's keys, the checkpoint to resume from, the run's inputs."""
    try:
        check_luffy_config(config)
    except ValueError as err:
        _refuse("invalid LUFFY run", err)
    try:
        run_inputs.check_output_folders(config)
        check_resume_checkpoint(config)
        run_inputs.check_data_files(config)
        run_inputs.preflight(config)
    except ValueError as err:
        _refuse("LUFFY cannot start", err)


@hydra.main(config_path="config", config_name="mix_ppo_trainer", version_base=None)
def main(config: DictConfig) -> None:
    """Check LUFFY's keys, the checkpoint and the inputs, then run veRL's V1 PPO loop."""
    preflight(config)

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


def cli() -> None:
    """Translate LUFFY's original keys in ``sys.argv``, then run :func:`main` through hydra."""
    try:
        sys.argv[1:] = translate_overrides(sys.argv[1:])
    except ValueError as err:
        _refuse("invalid LUFFY run", err)
    main()


if __name__ == "__main__":
    cli()
