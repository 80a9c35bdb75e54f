"""Prefix-ratio strategies for prefix guidance."""

from __future__ import annotations

import pytest

from luffy.mix_src.prefix import PREFIX_STRATEGIES, check_prefix_strategy, prefix_ratio


def _ratio(strategy, progress=0.0, slot=0, n_prefix=1, uid="u", share=False, lo=0.2, hi=0.8):
    return prefix_ratio(strategy, lo, hi, progress, slot, n_prefix, uid, share)


@pytest.mark.parametrize("strategy", PREFIX_STRATEGIES)
@pytest.mark.parametrize("progress", [0.0, 0.3, 1.0])
def test_every_strategy_stays_within_bounds_and_is_reproducible(strategy, progress):
    values = [_ratio(strategy, progress, slot=s, n_prefix=3, uid=f"p{i}") for i in range(20) for s in range(3)]
    assert all(0.2 <= v <= 0.8 for v in values)
    again = [_ratio(strategy, progress, slot=s, n_prefix=3, uid=f"p{i}") for i in range(20) for s in range(3)]
    assert values == again


def test_whole_trace_when_both_bounds_are_one():
    for strategy in PREFIX_STRATEGIES:
        assert _ratio(strategy, 0.5, lo=1.0, hi=1.0) == 1.0


def test_fixed_is_evenly_spaced_over_slots():
    # n_prefix = 4 slots over [0.2, 0.8]: 0.8, 0.6, 0.4, 0.2
    got = [_ratio("fixed", slot=s, n_prefix=4) for s in range(4)]
    assert got == pytest.approx([0.8, 0.6, 0.4, 0.2])


def test_linear_schedules():
    assert _ratio("linear", 0.0) == pytest.approx(0.8)
    assert _ratio("linear", 0.5) == pytest.approx(0.5)
    assert _ratio("linear", 1.0) == pytest.approx(0.2)
    assert _ratio("reverse_linear", 0.0) == pytest.approx(0.2)
    assert _ratio("reverse_linear", 1.0) == pytest.approx(0.8)
    # linear_max draws below the decaying cap; linear_variance collapses onto the schedule at the end
    assert all(_ratio("linear_max", 0.5, uid=str(i)) <= 0.5 + 1e-12 for i in range(50))
    assert _ratio("linear_variance", 1.0, uid="x") == pytest.approx(0.2)


def test_random_draws_differ_per_slot_unless_shared():
    per_slot = {_ratio("random", slot=s, n_prefix=8, uid="same") for s in range(8)}
    shared = {_ratio("random", slot=s, n_prefix=8, uid="same", share=True) for s in range(8)}
    assert len(per_slot) == 8 and len(shared) == 1


def test_unknown_strategy_names_the_choices():
    with pytest.raises(ValueError, match="linear_variance"):
        check_prefix_strategy("cosine")
