"""End to end: ``exp_scripts/toy_reproduction.sh --quick`` (pre-training, then LUFFY and on-policy GRPO in
the in-process loop, seed 0, a few steps).

The script exits non-zero unless the regime holds (the base solves some held-out problems but not all,
pass@8 above greedy; LUFFY's held-out trace log-prob ends above the base's and GRPO's); this test also
reads what it wrote and checks the runs were what they claim: one start, GRPO's groups held successes
from the first step (on-policy RL has a signal), and the report and figure exist.
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

# ~3 min alone on 2 cores (pre-training ~1.5 min, two 6-step runs with 3 evaluations each)
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


def test_the_base_is_partly_competent_and_grpo_has_a_signal(quick_run):
    out, _ = quick_run
    sweep = json.loads((out / "sweep.json").read_text())
    assert set(sweep) == {"luffy", "grpo"}
    base = sweep["luffy"]["0"]["eval"]["0"]
    assert sweep["grpo"]["0"]["eval"]["0"] == base  # one start for both arms
    assert 0 < base["id_greedy"] < 1 and base["id_pass8"] > base["id_greedy"]
    assert sweep["grpo"]["0"]["train"]["1"]["groups_with_success"] > 0


def test_luffy_learns_from_the_traces(quick_run):
    out, stdout = quick_run
    sweep = json.loads((out / "sweep.json").read_text())
    last = {arm: runs["0"]["eval"][str(max(map(int, runs["0"]["eval"])))] for arm, runs in sweep.items()}
    base = sweep["luffy"]["0"]["eval"]["0"]
    assert last["luffy"]["trace_logprob"] > base["trace_logprob"]
    assert last["luffy"]["trace_logprob"] > last["grpo"]["trace_logprob"]
    assert "regime check failed" not in stdout


def test_report_and_figure_written(quick_run):
    out, stdout = quick_run
    report = (out / "report.md").read_text()
    assert "## Claims" in report and "holds in" in report and report.strip() in stdout
    assert (out / "toy_reproduction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
