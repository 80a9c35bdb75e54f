"""End to end: exp_scripts/train_tiny_cpu.sh trains LUFFY on CPU, checkpoints, resumes one step.

One run of the script (a few steps, one validation, checkpoint, resume), then checks on what it left:
metrics JSONL, rollout dumps, checkpoint, figure. Sizes are the script's defaults: 4 prompts x n=4
(1 target) per step, 256-token responses so the sample traces fit whole and earn their reward.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from _limits import run_tiny_cpu, step_metrics

REPO_ROOT = Path(__file__).resolve().parents[1]
STEPS, BATCH, N, N_PREFIX = 3, 4, 4, 1

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("luffy_tiny_cpu")
    run_tiny_cpu(out, FIGURE=out / "figure.png", STEPS=STEPS, BATCH=BATCH, N=N, N_PREFIX=N_PREFIX)
    return out




def _rollouts(out: Path, step: int) -> list[dict]:
    return [json.loads(line) for line in (out / "rollouts" / f"{step}.jsonl").read_text().splitlines()]


def test_losses_are_finite_and_off_policy_share_is_n_prefix_over_n(tiny_run):
    metrics = step_metrics(tiny_run / "metrics.jsonl")
    assert sorted(metrics) == list(range(1, STEPS + 1))
    for step, m in metrics.items():
        for key in ("actor/pg_loss", "actor/on_pg_loss", "actor/off_pg_loss", "actor/grad_norm"):
            assert math.isfinite(m[key]), (step, key, m[key])
        assert m["luffy/off_policy_sample_share"] == pytest.approx(N_PREFIX / N)
        assert 0 < m["luffy/off_policy_token_share"] < 1
        assert 0 < m["luffy/off_policy_prob"] < 1
        # rollout-vs-actor diagnostics see on-policy tokens only: server and actor agree closely
        assert m["training/rollout_probs_diff_max"] < 0.05
    assert any(k.startswith("val-") for m in metrics.values() for k in m), "no validation metrics"


def test_each_group_holds_its_off_policy_targets(tiny_run):
    for step in range(1, STEPS + 1):
        groups: dict[str, list[int]] = defaultdict(list)
        for row in _rollouts(tiny_run, step):
            uid, session, _ = row["uid"].rsplit("_", 2)
            groups[uid].append(int(session))
        assert len(groups) == BATCH
        assert all(sorted(sessions) == list(range(N)) for sessions in groups.values())
        targets = [r for r in _rollouts(tiny_run, step) if int(r["uid"].rsplit("_", 2)[1]) < N_PREFIX]
        # the sample traces open with a think block; random generations essentially never do
        assert all(r["output"].startswith("<think>") for r in targets)


def test_parameters_changed(tiny_run):
    from safetensors.torch import load_file

    before = load_file(str(tiny_run / "tiny_model" / "model.safetensors"))
    hf_dir = tiny_run / "checkpoints" / f"global_step_{STEPS}" / "actor" / "huggingface"
    after = load_file(str(next(hf_dir.glob("*.safetensors"))))
    shared = set(before) & set(after)
    assert shared, (sorted(before)[:5], sorted(after)[:5])
    unchanged = [name for name in shared if before[name].equal(after[name].to(before[name].dtype))]
    assert not unchanged, unchanged


def test_resume_continues_from_the_checkpoint_in_data_order(tiny_run):
    log = (tiny_run / "resume.log").read_text()
    assert f"global_step_{STEPS}" in log  # veRL found and loaded the checkpoint
    resumed = step_metrics(tiny_run / "metrics_resume.jsonl")
    assert sorted(resumed) == [STEPS + 1]  # only the next step ran
    assert math.isfinite(resumed[STEPS + 1]["actor/pg_loss"])
    # the dataloader continued its epoch: the resumed step sees prompts no earlier step saw
    # (a restarted loader would replay step 1's prompts, with the same seed)
    seen = {r["input"] for step in range(1, STEPS + 1) for r in _rollouts(tiny_run, step)}
    resumed_prompts = {r["input"] for r in _rollouts(tiny_run, STEPS + 1)}
    assert len(resumed_prompts) == BATCH and not resumed_prompts & seen


def test_figure_written(tiny_run, tmp_path):
    figure = tiny_run / "figure.png"
    assert figure.is_file() and figure.stat().st_size > 10_000
    # the curves drawn are the run's per-step metrics, every step of the run and its resume
    sys.path.insert(0, str(REPO_ROOT / "exp_scripts"))
    from plot_metrics import plot as plot_curves
    from plot_metrics import read_metrics

    by_step = read_metrics([tiny_run / "metrics.jsonl", tiny_run / "metrics_resume.jsonl"])
    drawn = plot_curves(by_step, tmp_path / "again.png", "check")
    steps, probs = drawn["luffy/off_policy_prob"]
    assert steps == list(range(1, STEPS + 2))
    assert probs == [by_step[s]["luffy/off_policy_prob"] for s in steps]
    assert {"luffy/reward_on_policy", "luffy/reward_off_policy", "response_length/mean"} <= set(drawn)


def test_rerunning_a_finished_run_keeps_its_metrics(tiny_run):
    """The same command again on a finished OUT_DIR trains nothing and loses no metrics (veRL's file
    logger would start metrics.jsonl afresh): both runs are skipped, the figure is drawn again."""
    before = {p.name: p.read_bytes() for p in tiny_run.glob("metrics*.jsonl")}
    assert before["metrics.jsonl"] and before["metrics_resume.jsonl"]
    (tiny_run / "figure.png").unlink()
    run_tiny_cpu(tiny_run, FIGURE=tiny_run / "figure.png", STEPS=STEPS, BATCH=BATCH, N=N, N_PREFIX=N_PREFIX)
    assert {p.name: p.read_bytes() for p in tiny_run.glob("metrics*.jsonl")} == before
    assert (tiny_run / "figure.png").stat().st_size > 0
