"""Prefix-ratio strategies for prefix guidance: LUFFY's formulas and the progress-based redesigns."""

from __future__ import annotations

import pytest

from luffy.mix_src.prefix import PREFIX_STRATEGIES, STEP_STRATEGIES, check_prefix_strategy, prefix_ratio

BOUNDED = [s for s in PREFIX_STRATEGIES if s not in STEP_STRATEGIES]


def _ratio(strategy, progress=0.0, slot=0, n_prefix=1, uid="u", share=False, lo=0.2, hi=0.8, step=0, steps=100, m=0.8):
    return prefix_ratio(strategy, lo, hi, progress, slot, n_prefix, uid, share, step, steps, m)


@pytest.mark.parametrize("strategy", BOUNDED)
@pytest.mark.parametrize("progress", [0.0, 0.3, 1.0])
def test_bounded_strategies_stay_within_bounds_and_are_reproducible(strategy, progress):
    values = [_ratio(strategy, progress, slot=s, n_prefix=3, uid=f"p{i}") for i in range(20) for s in range(3)]
    assert all(0.2 <= v <= 0.8 for v in values)
    again = [_ratio(strategy, progress, slot=s, n_prefix=3, uid=f"p{i}") for i in range(20) for s in range(3)]
    assert values == again


def test_whole_trace_when_both_bounds_are_one():
    for strategy in BOUNDED:
        assert _ratio(strategy, 0.5, lo=1.0, hi=1.0) == 1.0


def test_fixed_is_luffys_ascending_list_over_slots():
    # n_prefix = 4 slots over [0.2, 0.8]: lo + k (hi - lo) / 3 = 0.2, 0.4, 0.6, 0.8
    got = [_ratio("fixed", slot=s, n_prefix=4) for s in range(4)]
    assert got == pytest.approx([0.2, 0.4, 0.6, 0.8])


def test_luffys_linear_schedule():
    # M (1 - min(step / S, 1)), M = 0.8, S = 100
    assert _ratio("linear", step=0) == pytest.approx(0.8)
    assert _ratio("linear", step=25) == pytest.approx(0.6)
    assert _ratio("linear", step=250) == 0.0


@pytest.mark.parametrize(
    ("step", "reverse_cap", "max_cap"),
    [(0, 0.08, 0.8), (10, 0.08, 0.8), (11, 0.16, 0.72), (55, 0.48, 0.40), (100, 0.8, 0.08), (500, 0.8, 0.08)],
)
def test_luffys_staircase_caps(step, reverse_cap, max_cap):
    # 10 windows of S/10 = 10 steps; window w caps reverse_linear at (w + 1) M / 10 and linear_max at
    # (10 - w) M / 10; past S the last window; a step on a border belongs to the earlier window
    rev = [_ratio("reverse_linear", step=step, uid=str(i)) for i in range(300)]
    lmax = [_ratio("linear_max", step=step, uid=str(i)) for i in range(300)]
    assert 0.0 <= min(rev) and max(rev) <= reverse_cap + 1e-12 and max(rev) > 0.9 * reverse_cap
    assert 0.0 <= min(lmax) and max(lmax) <= max_cap + 1e-12 and max(lmax) > 0.9 * max_cap


def test_progress_schedules():
    assert _ratio("progress_linear", 0.0) == pytest.approx(0.8)
    assert _ratio("progress_linear", 0.5) == pytest.approx(0.5)
    assert _ratio("progress_linear", 1.0) == pytest.approx(0.2)
    assert _ratio("progress_reverse_linear", 0.0) == pytest.approx(0.2)
    assert _ratio("progress_reverse_linear", 1.0) == pytest.approx(0.8)
    # progress_linear_max draws below the decaying cap; progress_linear_variance ends on the schedule
    assert all(_ratio("progress_linear_max", 0.5, uid=str(i)) <= 0.5 + 1e-12 for i in range(50))
    assert _ratio("progress_linear_variance", 1.0, uid="x") == pytest.approx(0.2)


def test_random_draws_differ_per_slot_unless_shared():
    per_slot = {_ratio("random", slot=s, n_prefix=8, uid="same") for s in range(8)}
    shared = {_ratio("random", slot=s, n_prefix=8, uid="same", share=True) for s in range(8)}
    assert len(per_slot) == 8 and len(shared) == 1


def test_unknown_strategy_names_the_choices():
    with pytest.raises(ValueError, match="progress_linear_variance"):
        check_prefix_strategy("cosine")
    with pytest.raises(ValueError, match="LUFFY never implemented it"):
        check_prefix_strategy("linear_variance")
