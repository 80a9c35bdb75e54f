"""Answer extraction and verification shared by evaluation and the trainer's reward.

Public API::

    extract_answer(data_source, response, extra_info=None) -> str | None
    is_correct(data_source, response, ground_truth, extra_info=None) -> bool
    score_response(data_source, response, ground_truth, extra_info=None) -> ScoreResult
    is_multiple_choice(data_source, extra_info=None) -> bool

Math sources are checked with math-verify in bounded worker processes
(:mod:`luffy.scoring.math_verify_bounded`); multiple-choice sources (ARC-c, GPQA, MMLU-Pro, or rows
flagged ``multiple_choice``) compare option letters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from luffy.scoring.choice import extract_choice, is_multiple_choice, normalize_letter, valid_letters
from luffy.scoring.extract import extract_math_answer, normalize_answer
from luffy.scoring.math_verify_bounded import BoundedVerifier, get_verifier, verify_math
from luffy.scoring.metrics import majority_vote, pass_at_k

__all__ = [
    "BoundedVerifier",
    "ScoreResult",
    "extract_answer",
    "extract_choice",
    "extract_math_answer",
    "get_verifier",
    "is_correct",
    "is_multiple_choice",
    "majority_vote",
    "normalize_answer",
    "pass_at_k",
    "score_response",
    "score_responses",
    "verify_math",
]


@dataclass(frozen=True)
class ScoreResult:
    """Verdict for one response: the extracted answer (None when missing) and its correctness."""

    pred: str | None
    correct: bool


def extract_answer(data_source: str, response: str, extra_info: Mapping[str, Any] | None = None) -> str | None:
    """Final answer of ``response``: an option letter for multiple choice, else the math answer.

    For multiple choice, ``extra_info`` may give ``choices`` or ``n_choices`` to restrict the letters.
    """
    if is_multiple_choice(data_source, extra_info):
        return extract_choice(response or "", valid_letters(extra_info))
    return extract_math_answer(response or "")


def _judge(data_source: str, pred: str | None, ground_truth: str, extra_info: Mapping[str, Any] | None) -> bool:
    if pred is None:
        return False
    if is_multiple_choice(data_source, extra_info):
        gold = normalize_letter(ground_truth)
        return gold is not None and pred == gold
    return verify_math(str(ground_truth), pred)


def score_response(
    data_source: str, response: str, ground_truth: str, extra_info: Mapping[str, Any] | None = None
) -> ScoreResult:
    """Extract the answer of ``response`` and judge it against ``ground_truth``."""
    pred = extract_answer(data_source, response, extra_info)
    return ScoreResult(pred=pred, correct=_judge(data_source, pred, ground_truth, extra_info))


def is_correct(data_source: str, response: str, ground_truth: str, extra_info: Mapping[str, Any] | None = None) -> bool:
    """True when ``response``'s final answer matches ``ground_truth`` (bounded in time, any thread)."""
    return score_response(data_source, response, ground_truth, extra_info).correct


def score_responses(
    data_source: str,
    responses: list[str],
    ground_truth: str,
    extra_info: Mapping[str, Any] | None = None,
) -> list[ScoreResult]:
    """Score several responses to one problem, verifying math answers on all workers at once."""
    preds = [extract_answer(data_source, r, extra_info) for r in responses]
    if is_multiple_choice(data_source, extra_info):
        return [ScoreResult(p, _judge(data_source, p, ground_truth, extra_info)) for p in preds]
    verdicts = get_verifier().verify_many([(str(ground_truth), p) for p in preds])
    return [ScoreResult(p, v) for p, v in zip(preds, verdicts)]
