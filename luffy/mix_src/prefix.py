"""Prefix guidance: how much of an off-policy trace a sample keeps before the policy takes over.

An off-policy sample keeps the first ``ratio`` fraction of its target trace (those tokens are
off-policy) and the policy generates the rest (on-policy). ``ratio = 1.0`` is LUFFY's recipe: the whole
trace, no generation. ``rollout.prefix_strategy`` picks the ratio; ``lo, hi = rollout.min_prefix_ratio,
rollout.max_prefix_ratio``.

LUFFY's strategies, with LUFFY's formulas (``step`` = training step counted from 0, ``S =
rollout.prefix_steps``, ``M = rollout.prefix_linear_max_ratio``, ``w`` = the first ``i`` in 0..9 with
``i S/10 <= step <= (i+1) S/10``, or 9 past ``S``):

=====================  ============================================================================
``random``             uniform in [lo, hi], drawn per off-policy slot (or per prompt when shared)
``fixed``              slot k of n_prefix: lo + k (hi - lo) / (n_prefix - 1) (lo when n_prefix = 1)
``linear``             M (1 - min(step / S, 1)), the same for every slot
``reverse_linear``     uniform in [0, (w + 1) M / 10]: a 10-step staircase cap that grows
``linear_max``         uniform in [0, (10 - w) M / 10]: a 10-step staircase cap that shrinks
=====================  ============================================================================

Redesigned schedules over ``progress`` in [0, 1] (the fraction of training done), clipped to [lo, hi]:

============================  ======================================================================
``progress_linear``           hi - (hi - lo) progress: guidance fades out over training
``progress_reverse_linear``   lo + (hi - lo) progress: guidance grows over training
``progress_linear_max``       uniform in [lo, progress_linear]
``progress_linear_variance``  progress_linear + uniform(-v, v), v = (hi - lo) / 2 (1 - progress)
``progress_cosine``           lo + (hi - lo) (1 + cos(pi progress)) / 2: hi to lo on a half cosine
============================  ======================================================================

With ``lo = 0`` the two fading schedules anneal the hint from ``hi`` to nothing at the end of
training (UFT's and Prefix-RFT's hint schedules): ``progress_linear`` on a line, ``progress_cosine``
on a half cosine (slow at first and last).

Draws are reproducible: the generator is seeded from the prompt uid (and the slot unless
``prefix_share_across_samples``), so every session of a group computes the same shared ratio without
talking to the others.
"""

from __future__ import annotations

import math
import random

PREFIX_STRATEGIES: tuple[str, ...] = (
    "random",
    "fixed",
    "linear",
    "reverse_linear",
    "linear_max",
    "progress_linear",
    "progress_reverse_linear",
    "progress_linear_max",
    "progress_linear_variance",
    "progress_cosine",
)
# Strategies that ignore [min_prefix_ratio, max_prefix_ratio] (LUFFY's step schedules).
STEP_STRATEGIES: tuple[str, ...] = ("linear", "reverse_linear", "linear_max")
_STAIRS = 10


def check_prefix_strategy(strategy: str) -> None:
    """Raise ``ValueError`` naming the accepted strategies if ``strategy`` is not one of them."""
    if strategy not in PREFIX_STRATEGIES:
        hint = "; LUFFY never implemented it, use 'progress_linear_variance'" if strategy == "linear_variance" else ""
        raise ValueError(
            f"actor_rollout_ref.rollout.prefix_strategy={strategy!r} is not supported{hint}; "
            f"accepted: {', '.join(PREFIX_STRATEGIES)}"
        )


def _stair(step: int, prefix_steps: int) -> int:
    """Index 0..9 of the first window [i S/10, (i+1) S/10] holding ``step``; 9 past the last one."""
    for i in range(_STAIRS):
        if i * prefix_steps / _STAIRS <= step <= (i + 1) * prefix_steps / _STAIRS:
            return i
    return _STAIRS - 1


def prefix_ratio(
    strategy: str,
    min_ratio: float,
    max_ratio: float,
    progress: float,
    slot: int,
    n_prefix: int,
    uid: str,
    share_across_samples: bool,
    step: int = 0,
    prefix_steps: int = 1000,
    linear_max_ratio: float = 0.8,
) -> float:
    """Fraction of the target trace that off-policy slot ``slot`` of prompt ``uid`` keeps.

    Args:
        strategy: one of :data:`PREFIX_STRATEGIES`.
        min_ratio, max_ratio: bounds ``lo <= hi`` in [0, 1].
        progress: fraction of training done, clipped to [0, 1] (``progress_*`` strategies).
        slot: index of this off-policy sample in its group, ``0 <= slot < n_prefix``.
        n_prefix: number of off-policy samples per prompt.
        uid: the prompt's group id (seeds the random strategies).
        share_across_samples: one draw per prompt instead of one per slot.
        step: training step counted from 0 (LUFFY's step schedules).
        prefix_steps, linear_max_ratio: ``S`` and ``M`` of LUFFY's step schedules.

    Returns:
        The ratio in [0, 1]: in [lo, hi] except for LUFFY's step schedules, which ignore them.
    """
    check_prefix_strategy(strategy)
    lo, hi = float(min_ratio), float(max_ratio)
    seed = f"{uid}" if share_across_samples else f"{uid}:{slot}"
    rng = random.Random(seed)
    if strategy in STEP_STRATEGIES:
        if strategy == "linear":
            ratio = linear_max_ratio * (1.0 - min(step / prefix_steps, 1.0))
        elif strategy == "reverse_linear":
            ratio = rng.uniform(0.0, (_stair(step, prefix_steps) + 1) * linear_max_ratio / _STAIRS)
        else:  # linear_max
            ratio = rng.uniform(0.0, (_STAIRS - _stair(step, prefix_steps)) * linear_max_ratio / _STAIRS)
        return min(max(ratio, 0.0), 1.0)
    t = min(max(float(progress), 0.0), 1.0)
    linear = hi - (hi - lo) * t
    if strategy == "random":
        ratio = rng.uniform(lo, hi)
    elif strategy == "fixed":
        # evenly spaced from lo up to hi over the slots, as LUFFY's list of fixed ratios
        ratio = lo if n_prefix <= 1 else lo + (hi - lo) * slot / (n_prefix - 1)
    elif strategy == "progress_linear":
        ratio = linear
    elif strategy == "progress_reverse_linear":
        ratio = lo + (hi - lo) * t
    elif strategy == "progress_cosine":
        ratio = lo + (hi - lo) * 0.5 * (1.0 + math.cos(math.pi * t))
    elif strategy == "progress_linear_max":
        ratio = rng.uniform(lo, linear)
    else:  # progress_linear_variance
        half_width = (hi - lo) / 2.0 * (1.0 - t)
        ratio = linear + rng.uniform(-half_width, half_width)
    return min(max(ratio, lo), hi)
