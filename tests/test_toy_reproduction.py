"""End to end: ``exp_scripts/toy_reproduction.sh --quick`` (pre-training, then LUFFY and on-policy GRPO in
the in-process loop, seed 0, a few steps).

The script exits non-zero unless the regime holds (the base solves some held-out problems but not all,
pass@8 above greedy; GRPO's groups hold successes at step 1 and it learns from them; LUFFY learns from
the traces); this test reads what it wrote and checks the same, that both arms had one start, and that
the report and figure exist.
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

# ~1.5-2.5 min on the shared 2 cores (pre-training, then two 6-step runs with 3 evaluations each)
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


def test_the_base_is_partly_competent_and_grpo_learns_from_its_successes(quick_run):
    out, stdout = quick_run
    sweep = json.loads((out / "sweep.json").read_text())
    assert set(sweep) == {"luffy", "grpo"}
    base = sweep["luffy"]["0"]["eval"]["0"]
    assert sweep["grpo"]["0"]["eval"]["0"] == base  # one start for both arms
    assert 0 < base["id_greedy"] < 1 and base["id_pass8"] > base["id_greedy"]
    grpo = sweep["grpo"]["0"]
    assert grpo["train"]["1"]["groups_with_success"] > 0
    assert grpo["eval"][str(max(map(int, grpo["eval"])))]["id_greedy"] > base["id_greedy"]
    assert "regime check failed" not in stdout


def test_luffy_learns_from_the_traces(quick_run):
    out, _ = quick_run
    luffy = json.loads((out / "sweep.json").read_text())["luffy"]["0"]
    assert luffy["eval"][str(max(map(int, luffy["eval"])))]["trace_logprob"] > luffy["eval"]["0"]["trace_logprob"]


def test_report_and_figure_written(quick_run):
    out, stdout = quick_run
    report = (out / "report.md").read_text()
    assert "## Claims at the final step" in report and "holds in" in report and report.strip() in stdout
    assert (out / "toy_reproduction.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
