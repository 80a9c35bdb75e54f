"""pass@k and maj@n, and the per-source summary."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from luffy.evaluation.summary import summarize
from luffy.scoring.metrics import majority_vote, pass_at_k


def brute_force_pass_at_k(correct: list[bool], k: int) -> float:
    """Fraction of all k-subsets of the samples that contain a correct one."""
    subsets = list(itertools.combinations(range(len(correct)), k))
    return sum(any(correct[i] for i in s) for s in subsets) / len(subsets)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_pass_at_k_matches_brute_force(data: st.DataObject) -> None:
    correct = data.draw(st.lists(st.booleans(), min_size=1, max_size=10))
    k = data.draw(st.integers(min_value=1, max_value=len(correct)))
    expected = brute_force_pass_at_k(correct, k)
    assert pass_at_k(len(correct), sum(correct), k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_edges_and_stability() -> None:
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(10, 2, 9) == 1.0  # fewer than k wrong samples
    value = pass_at_k(1024, 3, 16)
    exact = 1 - math.comb(1021, 16) / math.comb(1024, 16)
    assert value == pytest.approx(exact, rel=1e-12)
    assert 0.0 <= pass_at_k(100_000, 1, 50_000) <= 1.0
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_majority_vote_cases() -> None:
    assert majority_vote(["5", "5", "6"], [True, True, False]) is True
    assert majority_vote(["5", "6", "6"], [True, False, False]) is False
    assert majority_vote(["\\dfrac{1}{2}", "\\frac{1}{2}", "3"], [True, True, False]) is True  # same answer
    assert majority_vote(["6", "5"], [False, True]) is False  # tie: first seen wins
    assert majority_vote([None, None, "5"], [False, False, True]) is True  # missing answers do not vote
    assert majority_vote([None, None], [False, False]) is False
    assert majority_vote([], []) is False
    with pytest.raises(ValueError):
        majority_vote(["1"], [True, False])


def test_summary_per_source_and_all() -> None:
    records = [
        {
            "data_source": "math",
            "correct": [True, False, False, False],
            "extracted": ["1", "2", "2", None],
            "responses": ["ab", "abcd", "ab", "ab"],
            "response_lengths": [1, 2, 1, 1],
        },
        {
            "data_source": "math",
            "correct": [True, True, True, True],
            "extracted": ["3"] * 4,
            "responses": ["a"] * 4,
            "response_lengths": [1] * 4,
        },
        {
            "data_source": "gpqa",
            "correct": [False, False, False, False],
            "extracted": ["A"] * 4,
            "responses": ["a"] * 4,
        },
    ]
    summary = summarize(records)
    assert list(summary) == ["gpqa", "math", "all", "macro"]
    math_s = summary["math"]
    assert math_s["n_problems"] == 2 and math_s["n"] == 4
    assert math_s["avg@n"] == pytest.approx(5 / 8)
    assert math_s["pass@1"] == pytest.approx(5 / 8)
    assert math_s["pass@4"] == pytest.approx(1.0)
    assert math_s["maj@n"] == pytest.approx(0.5)
    assert summary["all"]["n_problems"] == 3
    assert summary["all"]["avg@n"] == pytest.approx(5 / 12)
    assert summary["gpqa"]["pass@4"] == 0.0
