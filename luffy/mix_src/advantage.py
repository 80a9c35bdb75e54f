"""``grpo_split``: GRPO advantages whose group statistics come from on-policy samples only."""

from __future__ import annotations

from typing import Any

import torch

from luffy.mix_src.core_algos import compute_grpo_outcome_advantage_split

GRPO_SPLIT = "grpo_split"


def grpo_split_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any,
    config: Any = None,
    off_policy_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """veRL advantage-estimator signature for LUFFY's ``grpo_split``.

    veRL's ``compute_advantage`` passes estimators no per-sample fields, so ``MIXRayPPOTrainer``
    calls this itself with ``off_policy_mask``.

    Args:
        token_level_rewards: ``(batch_size, response_length)``.
        response_mask: ``(batch_size, response_length)``.
        index: ``(batch_size,)`` prompt uids (groups).
        config: ``algorithm`` config; ``norm_adv_by_std_in_grpo`` (LUFFY's ``grpo_use_std``) applies.
        off_policy_mask: ``(batch_size,)`` bool, off-policy samples.

    Returns:
        ``(advantages, returns)``, both ``(batch_size, response_length)``.

    Raises:
        ValueError: without ``off_policy_mask`` (called by veRL's trainer instead of LUFFY's).
    """
    if off_policy_mask is None:
        raise ValueError(
            "algorithm.adv_estimator=grpo_split needs each sample's off-policy flag; run it through "
            "luffy.mix_src.main_mix_ppo (MIXRayPPOTrainer supplies the flag)"
        )
    norm_by_std = True if config is None else bool(config.get("norm_adv_by_std_in_grpo", True))
    return compute_grpo_outcome_advantage_split(
        token_level_rewards=token_level_rewards,
        response_mask=response_mask,
        index=index,
        off_policy_mask=off_policy_mask,
        norm_adv_by_std=norm_by_std,
        stats_from="on_policy",
    )
