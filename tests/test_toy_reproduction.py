"""End to end: ``exp_scripts/toy_reproduction.sh --quick`` (LUFFY with ``grpo_split`` advantages and
on-policy GRPO, from one base model).

The script itself exits non-zero unless the held-out traces are more likely under LUFFY's final policy
than under GRPO's; this test also reads what it wrote (results, table, figure, metrics) and checks the
runs were what they claim: GRPO never saw a target, LUFFY saw one per group.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _limits import END_TO_END_S

REPO_ROOT = Path(__file__).resolve().parents[1]

# ~6.5 min alone on 2 cores (format pre-training, then two trainer runs of 10 steps: ~8 CPU-min)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("luffy_toy")
    env = dict(os.environ, PYTHON=sys.executable, OUT_DIR=str(out))
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "exp_scripts" / "toy_reproduction.sh"), "--quick"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=END_TO_END_S,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return out, proc.stdout


def _metrics(path: Path) -> dict[int, dict]:
    return {r["step"]: r["data"] for r in map(json.loads, path.read_text().splitlines()) if r.get("data")}


def test_luffy_makes_held_out_traces_more_likely_than_grpo(quick_run):
    out, stdout = quick_run
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"luffy_split", "grpo"}
    base = results["luffy_split"]["0"]
    assert results["grpo"]["0"] == base  # one start for both runs
    final = {run: by_step[str(max(map(int, by_step)))] for run, by_step in results.items()}
    assert min(map(int, results["luffy_split"])) == 0 and max(map(int, results["luffy_split"])) > 0
    assert final["luffy_split"]["trace_logprob"] > final["grpo"]["trace_logprob"]
    assert final["luffy_split"]["trace_logprob"] > base["trace_logprob"]  # LUFFY learned from the traces
    assert "is higher than GRPO" in stdout


def test_table_and_figure_written(quick_run):
    out, stdout = quick_run
    table = (out / "table.md").read_text().splitlines()
    assert len(table) == 2 + 3  # header, rule, base model, LUFFY, GRPO
    assert table[3].startswith("| LUFFY, grpo_split") and table[4].startswith("| on-policy GRPO")
    assert "\n".join(table) in stdout
    assert (out / "toy_luffy_vs_grpo_vs_sft.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_grpo_saw_no_target_and_luffy_one_per_group(quick_run):
    out, _ = quick_run
    luffy, grpo = _metrics(out / "luffy_split" / "metrics.jsonl"), _metrics(out / "grpo" / "metrics.jsonl")
    assert luffy and grpo and sorted(luffy) == sorted(grpo)
    for step in luffy:
        assert luffy[step]["luffy/off_policy_sample_share"] == pytest.approx(1 / 4)
        assert grpo[step].get("luffy/off_policy_sample_share", 0.0) == 0.0
