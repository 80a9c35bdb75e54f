"""Prefix guidance: how much of an off-policy trace a sample keeps before the policy takes over.

An off-policy sample keeps the first ``ratio`` fraction of its target trace (those tokens are
off-policy) and the policy generates the rest (on-policy). ``ratio = 1.0`` is LUFFY's recipe: the whole
trace, no generation. The ratio comes from ``rollout.prefix_strategy`` with ``progress`` in [0, 1] the
fraction of training done and ``lo, hi = rollout.min_prefix_ratio, rollout.max_prefix_ratio``:

=================  ============================================================================
``random``         uniform in [lo, hi], drawn per sample (or per prompt when shared)
``fixed``          evenly spaced over the ``n_prefix`` off-policy slots: hi, ..., lo (hi if one)
``linear``         hi - (hi - lo) * progress: guidance fades out over training
``reverse_linear`` lo + (hi - lo) * progress: guidance grows over training
``linear_max``     uniform in [lo, linear(progress)]: the cap fades out, the draw stays random
``linear_variance`` linear(progress) + uniform(-w, w), w = (hi - lo) / 2 * (1 - progress), clipped
=================  ============================================================================

Draws are reproducible: the generator is seeded from the prompt uid (and the slot unless
``prefix_share_across_samples``), so every session of a group computes the same shared ratio without
talking to the others.
"""

from __future__ import annotations

import random

PREFIX_STRATEGIES: tuple[str, ...] = (
    "random",
    "fixed",
    "linear",
    "reverse_linear",
    "linear_max",
    "linear_variance",
)


def check_prefix_strategy(strategy: str) -> None:
    """Raise ``ValueError`` naming the accepted strategies if ``strategy`` is not one of them."""
    if strategy not in PREFIX_STRATEGIES:
        raise ValueError(
            f"actor_rollout_ref.rollout.prefix_strategy={strategy!r} is not supported; "
            f"accepted: {', '.join(PREFIX_STRATEGIES)}"
        )


def prefix_ratio(
    strategy: str,
    min_ratio: float,
    max_ratio: float,
    progress: float,
    slot: int,
    n_prefix: int,
    uid: str,
    share_across_samples: bool,
) -> float:
    """Fraction of the target trace that off-policy slot ``slot`` of prompt ``uid`` keeps.

    Args:
        strategy: one of :data:`PREFIX_STRATEGIES`.
        min_ratio, max_ratio: bounds ``lo <= hi`` in [0, 1].
        progress: fraction of training done, clipped to [0, 1].
        slot: index of this off-policy sample in its group, ``0 <= slot < n_prefix``.
        n_prefix: number of off-policy samples per prompt.
        uid: the prompt's group id (seeds the random strategies).
        share_across_samples: one draw per prompt instead of one per slot.

    Returns:
        The ratio in [lo, hi].
    """
    check_prefix_strategy(strategy)
    lo, hi = float(min_ratio), float(max_ratio)
    t = min(max(float(progress), 0.0), 1.0)
    seed = f"{uid}" if share_across_samples else f"{uid}:{slot}"
    rng = random.Random(seed)
    linear = hi - (hi - lo) * t
    if strategy == "random":
        ratio = rng.uniform(lo, hi)
    elif strategy == "fixed":
        # evenly spaced from hi down to lo; a shared ratio uses the first (largest) one
        k = 0 if share_across_samples else slot
        ratio = hi if n_prefix <= 1 else hi - (hi - lo) * k / (n_prefix - 1)
    elif strategy == "linear":
        ratio = linear
    elif strategy == "reverse_linear":
        ratio = lo + (hi - lo) * t
    elif strategy == "linear_max":
        ratio = rng.uniform(lo, linear)
    else:  # linear_variance
        half_width = (hi - lo) / 2.0 * (1.0 - t)
        ratio = linear + rng.uniform(-half_width, half_width)
    return min(max(ratio, lo), hi)
