"""Every LUFFY name is in veRL's registries after ``import verl`` and maps to LUFFY's object."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow  # starts the entry point or Ray in a subprocess
def test_names_registered_by_the_plugin_entry_point():
    # a fresh interpreter: only `import verl` (entry point verl.plugins -> luffy.plugin) may register them
    code = (
        "import verl\n"
        "from verl.experimental.agent_loop.agent_loop import _agent_loop_registry\n"
        "from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn\n"
        "import luffy.mix_src.advantage as adv, luffy.mix_src.mix_loss as loss\n"
        "assert _agent_loop_registry['luffy_mix_agent'] == {'_target_': 'luffy.mix_src.mix_agent_loop.MixAgentLoop'}\n"
        "assert get_adv_estimator_fn('grpo_split') is adv.grpo_split_advantage\n"
        "assert get_policy_loss_fn('luffy_mixed') is loss.luffy_policy_loss\n"
        "print('registered')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "registered" in proc.stdout


def test_agent_loop_target_resolves_to_luffys_class():
    import hydra.utils
    import verl  # noqa: F401
    from verl.experimental.agent_loop.agent_loop import _agent_loop_registry

    from luffy.mix_src.mix_agent_loop import MixAgentLoop

    assert hydra.utils.get_class(_agent_loop_registry["luffy_mix_agent"]["_target_"]) is MixAgentLoop


def test_sync_trainer_mapping_is_local_and_restorable():
    import verl  # noqa: F401
    from verl.trainer.ppo.v1 import PPOTrainerSync
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    from luffy.mix_src.mix_trainer import MIXRayPPOTrainer, use_mix_trainer

    # importing luffy never changes veRL's own "sync" trainer ...
    assert TRAINER_REGISTRY["sync"] is PPOTrainerSync
    saved = dict(TRAINER_REGISTRY)
    try:
        use_mix_trainer()  # ... only LUFFY's task runner does, in its own process
        assert TRAINER_REGISTRY["sync"] is MIXRayPPOTrainer
        assert issubclass(MIXRayPPOTrainer, PPOTrainerSync)
    finally:
        TRAINER_REGISTRY.clear()
        TRAINER_REGISTRY.update(saved)
