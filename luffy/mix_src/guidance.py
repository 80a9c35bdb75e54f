"""When and how strongly the traces guide: a per-group gate and the SFT coefficient's schedule.

**The gate** (``algorithm.guidance_gate``; HPT's and BREAD's idea). Per group ``g`` (the samples of one
prompt uid), from the rewards of its on-policy samples only::

    n_g = number of on-policy samples of g,   c_g = those with reward > 0,   acc_g = c_g / n_g
    guided_g = true                              gate = none      (LUFFY: every trace always trains)
               acc_g < guidance_accuracy_threshold   gate = accuracy  (HPT; n_g = 0 counts as guided)
               c_g <= guidance_max_successes     gate = successes (BREAD: only where the group fails)

A trace (off-policy) sample of a guided group trains as usual (the shaped off-policy term, or the SFT
term with ``actor.use_sft_multitask_loss``); in an unguided group it is dropped from the loss (its
``response_mask`` and advantage are zeroed) and the group trains as plain GRPO on its own samples.
Group statistics (mean, std) are taken over::

    S_g = on-policy samples  +  the traces of g   if guided_g and adv_estimator = grpo (grpo_split: none)
                             +  the traces of g   if not guided_g and guidance_gated_trace_in_stats

One pure function, :func:`guidance_gate`, decides; :func:`gated_grpo_advantage` applies it with the
package's GRPO estimator. The trainer (``mix_trainer.py``) and the toy lab (``luffy/toy/lab.py``) call it.

**The SFT coefficient** (``actor.sft_loss_coef_schedule``; CHORD's mu), over training progress
``t`` in [0, 1] (:func:`sft_coef`): ``constant`` keeps ``sft_loss_coef``; ``warmup_cosine`` rises
linearly from 0 to the peak ``sft_loss_coef`` over ``t < w`` (``w = sft_loss_coef_warmup``), then decays
on a half cosine to the valley ``v = sft_loss_coef_valley`` at ``t = 1``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from luffy.mix_src.advantage import _group_ids, compute_grpo_outcome_advantage_split

GUIDANCE_GATES: tuple[str, ...] = ("none", "accuracy", "successes")
SFT_COEF_SCHEDULES: tuple[str, ...] = ("constant", "warmup_cosine")


class GuidanceGate(NamedTuple):
    """The gate's decision for one batch.

    ``keep`` ``(B,)``: samples that stay in the loss and get an advantage; ``stats`` ``(B,)``: samples
    supplying their group's statistics; ``guided`` ``(G,)``: per group id; ``group`` ``(B,)``: each
    sample's group id in 0..G-1; ``has_trace`` ``(G,)``: groups holding an off-policy sample.
    """

    keep: torch.Tensor
    stats: torch.Tensor
    guided: torch.Tensor
    group: torch.Tensor
    has_trace: torch.Tensor


def guidance_gate(
    scores: torch.Tensor,
    index: Any,
    off_samples: torch.Tensor,
    gate: str = "none",
    accuracy_threshold: float = 0.5,
    max_successes: int = 0,
    trace_in_stats: bool = True,
    gated_trace_in_stats: bool = False,
    valid: torch.Tensor | None = None,
) -> GuidanceGate:
    """Per-group gate: which groups keep their traces (formulas: module docstring).

    Args:
        scores: ``(B,)`` sequence rewards; a sample succeeds when its reward is > 0.
        index: ``(B,)`` group labels (veRL's uid array, a list or an integer tensor).
        off_samples: ``(B,)`` bool, trace (off-policy) samples.
        gate: ``none``, ``accuracy`` or ``successes``.
        accuracy_threshold: guided when the on-policy accuracy is strictly below it (``accuracy``).
        max_successes: guided when at most this many on-policy samples succeed (``successes``).
        trace_in_stats: a kept trace supplies its group's statistics (``grpo``; false for ``grpo_split``).
        gated_trace_in_stats: a dropped trace still supplies its group's statistics.
        valid: ``(B,)`` bool, false for veRL's synthetic padding samples, which then neither count as
            evidence (``n_g``, ``c_g``) nor as a group's trace (``has_trace``); ``None``: all real.

    Returns:
        :class:`GuidanceGate`.
    """
    if gate not in GUIDANCE_GATES:
        raise ValueError(f"guidance gate {gate!r} is not one of {', '.join(GUIDANCE_GATES)}")
    scores = scores.detach().reshape(-1)
    bsz = scores.shape[0]
    if tuple(off_samples.shape) != (bsz,):
        raise ValueError(f"off_samples must have shape ({bsz},), got {tuple(off_samples.shape)}")
    device = scores.device
    group = _group_ids(index, bsz, device)  # (B,)
    n_groups = int(group.max().item()) + 1 if bsz else 0
    off = off_samples.to(device=device, dtype=torch.bool)  # (B,)
    on = ~off
    real = torch.ones_like(on) if valid is None else valid.to(device=device, dtype=torch.bool)  # (B,)
    zeros = torch.zeros(n_groups, dtype=torch.float64, device=device)
    n_on = zeros.index_add(0, group, (on & real).to(torch.float64))  # (G,)
    successes = zeros.index_add(0, group, (on & real & (scores > 0)).to(torch.float64))  # (G,)
    if gate == "none":
        guided = torch.ones(n_groups, dtype=torch.bool, device=device)
    elif gate == "accuracy":
        accuracy = successes / n_on.clamp(min=1.0)  # (G,)
        guided = (n_on == 0) | (accuracy < float(accuracy_threshold))
    else:
        guided = successes <= int(max_successes)
    guided_i = guided[group]  # (B,)
    keep = on | guided_i
    stats = on | (off & torch.where(guided_i, bool(trace_in_stats), bool(gated_trace_in_stats)))
    has_trace = zeros.index_add(0, group, (off & real).to(torch.float64)) > 0  # (G,)
    return GuidanceGate(keep, stats, guided, group, has_trace)


def gate_metrics(decision: GuidanceGate, off_samples: torch.Tensor, valid: torch.Tensor | None = None
                 ) -> dict[str, float]:
    """``luffy/guided_group_frac`` (groups holding a trace whose traces were kept) and
    ``luffy/trace_kept_frac`` (real trace samples kept); empty when the batch holds no trace."""
    if not bool(decision.has_trace.any()):
        return {}
    off = off_samples.to(decision.keep.device, torch.bool)
    if valid is not None:
        off = off & valid.to(off.device, torch.bool)
    return {
        "luffy/guided_group_frac": float((decision.guided & decision.has_trace).sum() / decision.has_trace.sum()),
        "luffy/trace_kept_frac": float((decision.keep & off).sum() / off.sum()),
    }


def gate_settings(algorithm: Any) -> dict[str, Any] | None:
    """The gate's keyword arguments read from the ``algorithm`` config, or ``None`` when the gate is off."""
    gate = algorithm.get("guidance_gate", "none") if hasattr(algorithm, "get") else "none"
    if gate in (None, "none"):
        return None
    return {
        "gate": gate,
        "accuracy_threshold": float(algorithm.get("guidance_accuracy_threshold", 0.5)),
        "max_successes": int(algorithm.get("guidance_max_successes", 0)),
        "trace_in_stats": algorithm.get("adv_estimator", "grpo") != "grpo_split",
        "gated_trace_in_stats": bool(algorithm.get("guidance_gated_trace_in_stats", False)),
    }


def gated_grpo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any,
    off_samples: torch.Tensor,
    settings: dict[str, Any],
    norm_adv_by_std: bool = True,
    epsilon: float = 1e-6,
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """GRPO advantages under the gate.

    Args:
        token_level_rewards, response_mask: ``(B, T)``.
        index: ``(B,)`` group labels.
        off_samples: ``(B,)`` bool, trace samples.
        settings: :func:`guidance_gate`'s keyword arguments (:func:`gate_settings`).
        norm_adv_by_std, epsilon: as in :func:`~luffy.mix_src.advantage.compute_grpo_outcome_advantage_split`.
        valid: ``(B,)`` bool, false for veRL's padding samples (see :func:`guidance_gate`).

    Returns:
        ``(advantages, keep, metrics)``: ``(B, T)`` advantages over ``S_g`` (zero on dropped samples),
        ``(B,)`` bool kept samples (the caller zeroes the others' ``response_mask``), and
        :func:`gate_metrics`.
    """
    scores = token_level_rewards.detach().sum(dim=-1)  # (B,)
    decision = guidance_gate(scores, index, off_samples, **settings, valid=valid)
    advantages, _ = compute_grpo_outcome_advantage_split(
        token_level_rewards, response_mask, index, norm_adv_by_std=norm_adv_by_std, epsilon=epsilon,
        stats_mask=decision.stats,
    )
    advantages = advantages * decision.keep.to(advantages.device, advantages.dtype).unsqueeze(-1)  # (B, T)
    return advantages, decision.keep, gate_metrics(decision, off_samples, valid)


def sft_coef(schedule: str, progress: float, peak: float, valley: float = 0.0, warmup: float = 0.0) -> float:
    """The SFT coefficient ``mu`` at training ``progress`` in [0, 1] (clipped).

    ``constant``: ``peak``. ``warmup_cosine``: ``peak * t / w`` for ``t < w``, then
    ``v + (peak - v) (1 + cos(pi (t - w) / (1 - w))) / 2``: ``peak`` at ``t = w``, ``v`` at ``t = 1``.
    """
    if schedule not in SFT_COEF_SCHEDULES:
        raise ValueError(f"SFT coefficient schedule {schedule!r} is not one of {', '.join(SFT_COEF_SCHEDULES)}")
    if schedule == "constant":
        return float(peak)
    t = min(max(float(progress), 0.0), 1.0)
    if t < warmup:
        return float(peak) * t / warmup
    span = 1.0 - warmup
    frac = 1.0 if span <= 0 else (t - warmup) / span
    return float(valley) + (float(peak) - float(valley)) * 0.5 * (1.0 + math.cos(math.pi * frac))
