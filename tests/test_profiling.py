"""luffy.profiling: spans written by wrapped callables, and the union of overlapping spans."""

from __future__ import annotations

import asyncio
import importlib
import random
import sys

import pytest

from luffy import profiling


def test_covered_matches_a_fine_grid_on_random_intervals():
    rng = random.Random(0)
    for _ in range(50):
        intervals = [(a, a + rng.uniform(0, 3)) for a in (rng.uniform(0, 10) for _ in range(rng.randint(0, 8)))]
        lo, hi = sorted((rng.uniform(-1, 11), rng.uniform(-1, 11)))
        grid = 20000
        step = (hi - lo) / grid
        expected = sum(
            step for i in range(grid) if any(a <= lo + (i + 0.5) * step < b for a, b in intervals)
        )
        assert profiling.covered(intervals, lo, hi) == pytest.approx(expected, abs=2 * len(intervals) * step + 1e-9)


def test_covered_by_hand():
    assert profiling.covered([(0, 2), (1, 3), (5, 6)], 0, 10) == 4  # [0, 3] and [5, 6]
    assert profiling.covered([(0, 2), (1, 3), (5, 6)], 2.5, 5.5) == 1  # [2.5, 3] and [5, 5.5]
    assert profiling.covered([], 0, 1) == 0


def test_probes_wrap_modules_imported_later_and_record_spans(tmp_path, monkeypatch):
    (tmp_path / "probe_target_mod.py").write_text(
        "import asyncio\n"
        "class Worker:\n"
        "    def work(self, items):\n        return sum(items)\n"
        "    async def awork(self, x):\n        await asyncio.sleep(0.01)\n        return x * 2\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spans_dir = tmp_path / "spans"
    monkeypatch.setenv(profiling.ENV, str(spans_dir))
    probes = {"probe_target_mod:Worker.work": "test/work", "probe_target_mod:Worker.awork": "test/awork"}
    assert profiling.install(probes) == 0  # not imported yet: wrapped when it is
    module = importlib.import_module("probe_target_mod")
    try:
        worker = module.Worker()
        assert worker.work([1, 2, 3]) == 6
        assert asyncio.run(worker.awork(4)) == 8
    finally:
        sys.modules.pop("probe_target_mod", None)
    spans = profiling.read_spans(spans_dir)
    assert [s["name"] for s in spans] == ["test/work", "test/awork"]
    assert spans[0]["size"] == 3  # a list first argument is recorded as the call's batch size
    assert spans[1]["end"] - spans[1]["start"] >= 0.01


def test_nothing_is_wrapped_or_written_when_off(tmp_path, monkeypatch):
    monkeypatch.delenv(profiling.ENV, raising=False)
    assert profiling.install({"json:dumps": "test/dumps"}) == 0
    import json

    assert not hasattr(json.dumps, "__wrapped__")
    with profiling.span("test/block"):
        pass
    assert not list(tmp_path.iterdir())
