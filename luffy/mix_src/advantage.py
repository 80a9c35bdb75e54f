"""``grpo_split``: GRPO advantages whose group statistics may come from on-policy samples only.

:func:`compute_grpo_outcome_advantage_split` is the pure-torch estimator (CPU and GPU; float32, or
float64 for float64 rewards); :func:`grpo_split_advantage` is its veRL estimator signature, registered
as ``grpo_split`` in ``registration.py`` and called by ``MIXRayPPOTrainer`` with the off-policy flags.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

GRPO_SPLIT = "grpo_split"
# Accepted values of ``stats_from`` in the advantage estimator.
STATS_FROM_CHOICES: tuple[str, ...] = ("all", "on_policy")


def _group_ids(index: Any, batch_size: int, device: torch.device) -> torch.Tensor:
    """Map arbitrary group labels (numpy array of str/object/int, list, or tensor) to ids 0..G-1."""
    if isinstance(index, torch.Tensor):
        flat = index.reshape(-1)
        if len(flat) != batch_size:
            raise ValueError(f"index has {len(flat)} entries but the batch has {batch_size} samples")
        return torch.unique(flat, return_inverse=True)[1].to(device=device, dtype=torch.long)
    arr = np.asarray(index)
    if arr.ndim != 1 or arr.shape[0] != batch_size:
        raise ValueError(f"index must be 1-D with {batch_size} entries, got shape {arr.shape}")
    try:
        inverse = np.unique(arr, return_inverse=True)[1]
    except TypeError:
        # Mixed, unorderable labels: hash-based factorisation (a mapping, not arithmetic).
        logger.debug("group labels are not orderable; grouping them by hash")
        ids: dict[Any, int] = {}
        inverse = np.fromiter((ids.setdefault(x, len(ids)) for x in arr.tolist()), np.int64, len(arr))
    return torch.as_tensor(inverse.reshape(-1), dtype=torch.long, device=device)


def compute_grpo_outcome_advantage_split(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any,
    off_policy_mask: torch.Tensor | None = None,
    epsilon: float = 1e-6,
    norm_adv_by_std: bool = True,
    stats_from: str = "all",
    stats_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO outcome advantages with a choice of which group members supply the statistics.

    For sample ``i`` in group ``g`` (samples sharing the same ``index`` entry, i.e. the prompt uid)::

        s_i   = sum_t token_level_rewards[i, t]
        S_g   = members of g used for statistics: all of them (stats_from="all", LUFFY's recipe)
                or the on-policy ones only (stats_from="on_policy")
        mu_g  = mean(s_j, j in S_g)
        sd_g  = unbiased sample std of s_j, j in S_g   (torch.std default)
        A_i   = (s_i - mu_g) / (sd_g + epsilon)         if norm_adv_by_std else  s_i - mu_g

    Every member of the group (off-policy ones included) is normalised by the same ``mu_g, sd_g``.
    Degenerate groups:

    * ``|S_g| == 1``: ``mu_g = 0, sd_g = 1`` exactly as veRL's ``compute_grpo_outcome_advantage`` does,
      so ``A_i = s_i / (1 + epsilon)``.
    * ``|S_g| == 0`` (``"on_policy"`` and a group made only of off-policy samples): the same fallback
      ``mu_g = 0, sd_g = 1``.
    * ``|S_g| >= 2`` and all those scores equal (``sd_g = 0``): ``mu_g`` is that common score (exactly,
      without rounding) and ``sd_g = 1``, as LUFFY's original split estimator does. The statistics
      members then get exactly 0 (veRL gets ``0 / epsilon = 0`` too); under ``"on_policy"`` an
      off-policy member with a different score gets ``(s_i - mu_g) / (1 + epsilon)`` instead of a
      ``1 / epsilon``-sized blow-up.

    With ``stats_from="all"`` and no off-policy sample this reproduces veRL's ``grpo`` estimator.

    Args:
        token_level_rewards: ``(batch_size, response_length)`` rewards; only their row sums matter.
        response_mask: ``(batch_size, response_length)`` 1 on response tokens.
        index: ``(batch_size,)`` group labels: numpy array of str/object (veRL's ``uid``), ints, list
            or an integer tensor.
        off_policy_mask: ``(batch_size,)`` or ``(batch_size, response_length)``; a sample is off-policy
            if any of its entries is true. ``None`` means all on-policy.
        epsilon: added to the std before dividing.
        norm_adv_by_std: divide by ``sd_g + epsilon`` (GRPO) or not (Dr. GRPO).
        stats_from: ``"all"`` or ``"on_policy"``.
        stats_mask: ``(batch_size,)`` bool, the members of ``S_g`` given explicitly (overrides
            ``stats_from`` and ``off_policy_mask``; the guidance gate of ``guidance.py`` passes it).

    Returns:
        ``(advantages, returns)``, both ``(batch_size, response_length)`` with the same values: ``A_i``
        broadcast over the response and zero where ``response_mask`` is 0.
    """
    if stats_from not in STATS_FROM_CHOICES:
        raise ValueError(f"stats_from must be one of {STATS_FROM_CHOICES}, got {stats_from!r}")
    if token_level_rewards.dim() != 2:
        raise ValueError(f"token_level_rewards must be 2-D, got shape {tuple(token_level_rewards.shape)}")
    if response_mask.shape != token_level_rewards.shape:
        raise ValueError(
            f"response_mask shape {tuple(response_mask.shape)} != token_level_rewards shape "
            f"{tuple(token_level_rewards.shape)}"
        )
    bsz = token_level_rewards.shape[0]
    device = token_level_rewards.device
    out_dtype = token_level_rewards.dtype if token_level_rewards.is_floating_point() else torch.float32
    cdt = torch.float64 if token_level_rewards.dtype == torch.float64 else torch.float32

    with torch.no_grad():
        gid = _group_ids(index, bsz, device)  # (B,)
        # s_i = sum_t r_it
        scores = token_level_rewards.to(cdt).sum(dim=-1)  # (B,)

        # w_i = 1 if sample i supplies statistics for its group
        if stats_mask is not None:
            if tuple(stats_mask.shape) != (bsz,):
                raise ValueError(f"stats_mask must have shape ({bsz},), got {tuple(stats_mask.shape)}")
            weights = stats_mask.to(device=device, dtype=torch.bool).to(cdt)  # (B,)
        elif stats_from == "all" or off_policy_mask is None:
            weights = torch.ones(bsz, dtype=cdt, device=device)  # (B,)
        else:
            off = _per_sample_off_mask(off_policy_mask, token_level_rewards.shape)  # (B,)
            weights = (~off).to(cdt)  # (B,)

        n_groups = int(gid.max().item()) + 1 if bsz > 0 else 0
        # n_g = sum_{i in g} w_i ; mu_g = sum_{i in g} w_i s_i / n_g
        count = torch.zeros(n_groups, dtype=cdt, device=device).index_add_(0, gid, weights)  # (G,)
        total = torch.zeros(n_groups, dtype=cdt, device=device).index_add_(0, gid, weights * scores)  # (G,)
        mean = total / count.clamp(min=1.0)  # (G,)
        # sd_g^2 = sum_{i in g} w_i (s_i - mu_g)^2 / (n_g - 1)   (two-pass, unbiased)
        centred = scores - mean[gid]  # (B,)
        sq = torch.zeros(n_groups, dtype=cdt, device=device).index_add_(0, gid, weights * centred * centred)
        std = (sq / (count - 1.0).clamp(min=1.0)).sqrt()  # (G,)
        # statistics samples all equal (sd_g = 0): mu_g = that value exactly, sd_g = 1
        used = weights > 0  # (B,)
        inf = torch.tensor(float("inf"), dtype=cdt, device=device)
        gmax = torch.full((n_groups,), -inf, dtype=cdt, device=device).scatter_reduce_(
            0, gid, torch.where(used, scores, -inf), reduce="amax"
        )  # (G,)
        gmin = torch.full((n_groups,), inf, dtype=cdt, device=device).scatter_reduce_(
            0, gid, torch.where(used, scores, inf), reduce="amin"
        )  # (G,)
        constant = gmax == gmin  # (G,)
        mean = torch.where(constant, gmax, mean)
        std = torch.where(constant, torch.ones_like(std), std)
        # groups with fewer than two statistics samples: mu_g = 0, sd_g = 1
        few = count < 2  # (G,)
        mean = torch.where(few, torch.zeros_like(mean), mean)
        std = torch.where(few, torch.ones_like(std), std)

        # A_i = (s_i - mu_g) / (sd_g + eps)   or   s_i - mu_g
        adv = scores - mean[gid]  # (B,)
        if norm_adv_by_std:
            adv = adv / (std[gid] + epsilon)
        advantages = (adv.unsqueeze(-1) * response_mask.to(cdt)).to(out_dtype)  # (B, T)
    return advantages, advantages


def _per_sample_off_mask(off_policy_mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """(B,) bool: a sample is off-policy if any of its entries is set."""
    bsz = shape[0]
    if off_policy_mask.dim() == 1 and off_policy_mask.shape[0] == bsz:
        return off_policy_mask.to(device=off_policy_mask.device).bool()
    if off_policy_mask.dim() == 2 and tuple(off_policy_mask.shape) == tuple(shape):
        return off_policy_mask.bool().any(dim=-1)
    raise ValueError(f"off_policy_mask must have shape ({bsz},) or {tuple(shape)}, got {tuple(off_policy_mask.shape)}")


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
