"""Registers LUFFY's algorithm pieces with veRL: agent loop, advantage estimator, policy loss.

Imported in every process that imports ``verl`` (``luffy.plugin``). The trainer class is not
registered here: mapping veRL's ``"sync"`` mode to LUFFY's trainer would change plain veRL runs too,
so LUFFY's task runner does it in its own process (``mix_trainer.use_mix_trainer``).
"""

from verl.experimental.agent_loop.agent_loop import register as register_agent_loop
from verl.trainer.ppo.core_algos import register_adv_est, register_policy_loss

from luffy.mix_src.advantage import GRPO_SPLIT, grpo_split_advantage
from luffy.mix_src.mix_agent_loop import AGENT_LOOP_NAME, MixAgentLoop
from luffy.mix_src.mix_loss import LOSS_MODE, luffy_policy_loss

register_agent_loop(AGENT_LOOP_NAME)(MixAgentLoop)
register_adv_est(GRPO_SPLIT)(grpo_split_advantage)
register_policy_loss(LOSS_MODE)(luffy_policy_loss)
