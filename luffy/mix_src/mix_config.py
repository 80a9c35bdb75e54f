"""Typed homes for LUFFY's config keys inside veRL's dataclass-backed config nodes.

veRL builds ``actor_rollout_ref.actor``, ``actor_rollout_ref.rollout`` and ``algorithm`` into
dataclasses through their ``_target_`` (``hydra.utils.instantiate``), which rejects keys the dataclass
does not declare. LUFFY's keys live where LUFFY's train.sh puts them, so each node gets a small
subclass that declares them; ``config/mix_ppo_trainer.yaml`` points the nodes' ``_target_`` here. The
values are validated both before Ray starts (:mod:`luffy.mix_src.config_check`) and whenever a worker
builds the dataclass (``__post_init__``), so no process runs with a bad value. The actor's reshape
names are parsed there once into :class:`~luffy.mix_src.reshape.Reshape` objects (``off_reshape``,
``on_reshape``) that the loss receives on every micro-batch.

The actor subclass derives from veRL's FSDP actor config (the ``fsdp``/``fsdp2`` strategies LUFFY's
recipe and the CPU run use).
"""

from __future__ import annotations

from dataclasses import dataclass

from verl.trainer.config import AlgoConfig
from verl.workers.config import FSDPActorConfig, RolloutConfig

from luffy.mix_src import config_check
from luffy.mix_src.core_algos import luffy_loss_agg_mode


@dataclass
class LuffyActorConfig(FSDPActorConfig):
    """veRL's FSDP actor config plus LUFFY's loss knobs (meaning: ``mix_ppo_trainer.yaml``).

    ``loss_remove_token_mean=true`` is veRL's ``loss_agg_mode=seq-mean-token-sum-norm`` with
    ``loss_scale_factor`` (when null) = ``max_response_length``; ``__post_init__`` sets both, so veRL's
    own aggregation (policy, entropy and KL terms) sees one constant normaliser. ``off_reshape`` and
    ``on_reshape`` (set by ``__post_init__``, not config keys) are the parsed ``*_policy_reshape`` values.
    """

    _mutable_fields = FSDPActorConfig._mutable_fields | {"loss_agg_mode", "loss_scale_factor"}

    off_policy_reshape: str = "no_reshape"
    off_policy_reshape_weight: float = 0.1
    off_policy_reshape_pow_exp: float = 0.5
    on_policy_reshape: str = "no_reshape"
    on_policy_reshape_weight: float = 0.1
    on_policy_reshape_pow_exp: float = 0.5
    off_max_clip: float | None = None
    off_min_clip: float | None = None
    all_max_clip: float | None = None
    loss_remove_token_mean: bool = False
    loss_remove_clip: bool = False
    max_response_length: int = 8192
    entropy_loss_scale_factor: float = 32768.0
    use_sft_multitask_loss: bool = False
    sft_loss_coef: float = 1.0
    sft_token_weight: str = "none"
    off_policy_token_weight: str = "none"
    sft_loss_coef_schedule: str = "constant"
    sft_loss_coef_valley: float = 0.0
    sft_loss_coef_warmup: float = 0.0
    sft_rl_complement: bool = False

    def __post_init__(self):
        super().__post_init__()
        # plain attributes, not fields: set once here (BaseConfig freezes them afterwards), never config keys
        self.off_reshape, self.on_reshape = config_check.check_actor_keys(self, prefix="actor_rollout_ref.actor")
        self.loss_agg_mode = luffy_loss_agg_mode(self.loss_agg_mode, self.loss_remove_token_mean)
        if self.loss_remove_token_mean and self.loss_scale_factor is None:
            self.loss_scale_factor = self.max_response_length


@dataclass
class LuffyRolloutConfig(RolloutConfig):
    """veRL's rollout config plus LUFFY's off-policy mixing knobs (meaning: ``mix_ppo_trainer.yaml``)."""

    n_prefix: int = 1
    prefix_strategy: str = "random"
    min_prefix_ratio: float = 0.0
    max_prefix_ratio: float = 1.0
    prefix_share_across_samples: bool = False
    max_prefix_len: int = 8192
    prefix_steps: int = 1000
    prefix_linear_max_ratio: float = 0.8
    prefix_linear_max_var: float = 0.1
    use_target_lst: bool = True

    def __post_init__(self):
        super().__post_init__()
        config_check.check_rollout_keys(self, prefix="actor_rollout_ref.rollout")


@dataclass
class LuffyAlgoConfig(AlgoConfig):
    """veRL's algorithm config plus LUFFY's name for GRPO's std normalisation and the guidance gate."""

    grpo_use_std: bool = True
    guidance_gate: str = "none"
    guidance_accuracy_threshold: float = 0.5
    guidance_max_successes: int = 0
    guidance_gated_trace_in_stats: bool = False

    def __post_init__(self):
        parent_post_init = getattr(super(), "__post_init__", None)
        if parent_post_init is not None:
            parent_post_init()
        config_check.check_algorithm_keys(self, prefix="algorithm")
