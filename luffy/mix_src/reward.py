"""LUFFY's rule reward for veRL: math-verify (or option letters) on the final answer.

Hydra config::

    reward.custom_reward_function.path=pkg://luffy.mix_src.reward
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.format_penalty=0.0

veRL's reward managers call the function from executor threads, so the time bound must not use
signals: verification runs in :mod:`luffy.scoring`'s bounded worker processes. Model text is only
parsed, never executed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from luffy.scoring import score_response
from luffy.scoring.ground_truth import BadGroundTruth, ground_truth_text

logger = logging.getLogger(__name__)


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str | list[str],
    extra_info: Mapping[str, Any] | None = None,
    format_penalty: float = 0.0,
    **kwargs: Any,
) -> dict[str, Any]:
    """Score one response.

    Args:
        data_source: benchmark/dataset name; selects math-verify or option-letter comparison.
        solution_str: decoded response text.
        ground_truth: reference answer (LaTeX/number, or the option letter), or a list of them.
        extra_info: the row's ``extra_info`` (a ``multiple_choice`` flag there is honoured).
        format_penalty: score given as ``-format_penalty`` when no final answer can be extracted.
        **kwargs: extra arguments veRL may pass (ignored).

    Returns:
        ``{"score": float, "acc": float, "pred": str}``: 1.0 for a verified answer, 0.0 for a wrong
        one, ``-format_penalty`` when no answer is found; ``acc`` is 1.0/0.0; ``pred`` is the extracted
        answer ("" when none).
    """
    if format_penalty < 0:
        raise ValueError(f"format_penalty must be >= 0, got {format_penalty}")
    golds = ground_truth.tolist() if hasattr(ground_truth, "tolist") else ground_truth
    if not isinstance(golds, (list, tuple)):
        golds = [golds]
    if not golds:
        raise ValueError("ground_truth is empty")
    # A reference answer that cannot be scored (NaN, a container, over-long: see ground_truth.py) is
    # refused and logged with the row; its samples score 0 rather than stopping the training step.
    usable = []
    for g in golds:
        try:
            usable.append(ground_truth_text(g))
        except BadGroundTruth as err:
            row = extra_info.get("index") if isinstance(extra_info, Mapping) else None
            logger.warning("data_source %r row %s: ground truth refused (%s); reward 0", data_source, row, err)
    if not usable:
        return {"score": 0.0, "acc": 0.0, "pred": ""}
    # Several acceptable answers: correct when any matches (the extracted answer is the same for all).
    results = [score_response(str(data_source), solution_str or "", g, extra_info) for g in usable]
    result = next((r for r in results if r.correct), results[0])
    if result.pred is None:
        score = -float(format_penalty)
    else:
        score = 1.0 if result.correct else 0.0
    return {"score": score, "acc": 1.0 if result.correct else 0.0, "pred": result.pred or ""}
