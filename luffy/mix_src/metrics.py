"""Per-step LUFFY metrics on top of veRL's: how the mixed groups look before the update."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    mask = mask.bool()
    return float(values[mask].float().mean()) if mask.any() else float("nan")


def compute_mix_metrics(
    scores: torch.Tensor,
    response_mask: torch.Tensor,
    off_tokens: torch.Tensor,
    off_samples: torch.Tensor,
    uids: Sequence[str],
    valid: torch.Tensor,
    old_log_probs: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
) -> dict[str, float]:
    """Metrics of one training batch, split by on-/off-policy.

    Args:
        scores: ``(B,)`` sequence rewards.
        response_mask: ``(B, T)`` response tokens.
        off_tokens: ``(B, T)`` bool, off-policy (target) tokens.
        off_samples: ``(B,)`` bool, samples in an off-policy slot.
        uids: ``B`` group ids.
        valid: ``(B,)`` bool, false for veRL's synthetic padding samples.
        old_log_probs: ``(B, T)`` the actor's log-probs before the update (optional).
        entropy: ``(B, T)`` the actor's token entropy before the update (optional).

    Returns:
        ``luffy/*`` floats: ``off_policy_token_share``, ``off_policy_sample_share``,
        ``reward_on_policy``, ``reward_off_policy``, ``off_policy_prob``, ``on_policy_prob``,
        ``entropy_on_policy``, ``entropy_off_policy``, ``groups_all_correct``, ``groups_all_wrong``
        (the last two over each group's on-policy samples, "correct" meaning reward > 0).
        Averages over an empty set are NaN.
    """
    valid = valid.bool()
    mask = response_mask.bool() & valid.unsqueeze(1)  # (B, T)
    off_t = off_tokens.bool() & mask  # (B, T)
    on_t = mask & ~off_t  # (B, T)
    off_s = off_samples.bool() & valid  # (B,)
    on_s = ~off_samples.bool() & valid  # (B,)
    metrics = {
        "luffy/off_policy_token_share": float(off_t.sum()) / max(float(mask.sum()), 1.0),
        "luffy/off_policy_sample_share": float(off_s.sum()) / max(float(valid.sum()), 1.0),
        "luffy/reward_on_policy": _masked_mean(scores, on_s),
        "luffy/reward_off_policy": _masked_mean(scores, off_s),
    }
    if old_log_probs is not None:
        probs = old_log_probs.float().exp()  # (B, T)
        metrics["luffy/off_policy_prob"] = _masked_mean(probs, off_t)
        metrics["luffy/on_policy_prob"] = _masked_mean(probs, on_t)
    if entropy is not None:
        metrics["luffy/entropy_on_policy"] = _masked_mean(entropy, on_t)
        metrics["luffy/entropy_off_policy"] = _masked_mean(entropy, off_t)

    correct_by_group: dict[str, list[bool]] = defaultdict(list)
    for i, uid in enumerate(uids):
        if on_s[i]:
            correct_by_group[str(uid)].append(bool(scores[i] > 0))
    groups = list(correct_by_group.values())
    n_groups = max(len(groups), 1)
    metrics["luffy/groups_all_correct"] = sum(all(g) for g in groups) / n_groups
    metrics["luffy/groups_all_wrong"] = sum(not any(g) for g in groups) / n_groups
    return metrics


def on_policy_staleness_metrics(
    tags: Sequence[dict], generated: torch.Tensor, valid: torch.Tensor, global_steps: int
) -> dict[str, float]:
    """How many weight versions the generated samples lag the policy being updated (targets excluded).

    veRL's ``training/off_policy/trajectory_staleness`` counts every sample; a target has no behaviour
    weights, so its tags only repeat its prompt's submission step. This is the same quantity over
    samples with generated tokens: ``(global_steps - 1) - max_global_steps`` (lower bound) and
    ``(global_steps - 1) - min_global_steps`` (the oldest weights a partial rollout used).

    Args:
        tags: ``B`` TransferQueue tags of the batch (``min_global_steps``, ``max_global_steps``).
        generated: ``(B,)`` bool, samples holding at least one generated (on-policy) token.
        valid: ``(B,)`` bool, false for veRL's synthetic padding samples.
        global_steps: the step being trained (weights version ``global_steps - 1``).

    Returns:
        ``luffy/on_policy_staleness/{mean,max}`` and ``luffy/on_policy_staleness_worst/max``; empty
        when no sample was generated or no tag carries versions.
    """
    keep = [i for i in range(len(tags)) if bool(generated[i]) and bool(valid[i])]
    latest = [tags[i].get("max_global_steps") for i in keep]
    oldest = [tags[i].get("min_global_steps") for i in keep]
    pairs = [(int(lo), int(hi)) for lo, hi in zip(oldest, latest) if lo is not None and hi is not None]
    if not pairs:
        return {}
    lag = [(global_steps - 1) - hi for _, hi in pairs]
    worst = [(global_steps - 1) - lo for lo, _ in pairs]
    return {
        "luffy/on_policy_staleness/mean": sum(lag) / len(lag),
        "luffy/on_policy_staleness/max": float(max(lag)),
        "luffy/on_policy_staleness_worst/max": float(max(worst)),
    }


def advantage_by_kind(
    advantages: torch.Tensor, response_mask: torch.Tensor, off_samples: torch.Tensor, valid: torch.Tensor
) -> dict[str, float]:
    """Mean sequence advantage of the target samples and of the generated ones.

    Args:
        advantages: ``(B, T)`` token advantages (GRPO: one value per sample on its response tokens).
        response_mask: ``(B, T)`` response tokens.
        off_samples: ``(B,)`` bool, samples in an off-policy slot.
        valid: ``(B,)`` bool, false for veRL's synthetic padding samples.

    Returns:
        ``luffy/advantage_off_policy`` and ``luffy/advantage_on_policy`` (NaN over an empty set).
    """
    mask = response_mask.float()  # (B, T)
    per_sample = (advantages.float() * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # (B,)
    valid = valid.bool()
    return {
        "luffy/advantage_off_policy": _masked_mean(per_sample, off_samples.bool() & valid),
        "luffy/advantage_on_policy": _masked_mean(per_sample, ~off_samples.bool() & valid),
    }
