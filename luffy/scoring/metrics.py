"""Sample-based metrics: unbiased pass@k and majority voting."""

from __future__ import annotations

from collections.abc import Sequence

from luffy.scoring.extract import normalize_answer


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k = 1 - C(n-c, k) / C(n, k) for ``c`` correct out of ``n`` samples.

    Computed as a running product (no large binomials), so it is stable for any ``n``.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def majority_vote(preds: Sequence[str | None], correct: Sequence[bool]) -> bool:
    """maj@n: is the most frequent extracted answer correct?

    Answers are grouped by :func:`normalize_answer`; missing answers do not vote; ties go to the
    answer seen first. False when no response has an answer.
    """
    if len(preds) != len(correct):
        raise ValueError(f"preds and correct differ in length: {len(preds)} vs {len(correct)}")
    counts: dict[str, int] = {}
    verdict: dict[str, bool] = {}
    for pred, ok in zip(preds, correct):
        if pred is None:
            continue
        key = normalize_answer(str(pred))
        counts[key] = counts.get(key, 0) + 1
        verdict[key] = verdict.get(key, False) or bool(ok)
    if not counts:
        return False
    best = max(counts, key=lambda key: counts[key])  # max keeps the first of equal counts
    return verdict[best]
