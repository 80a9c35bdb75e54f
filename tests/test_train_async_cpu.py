"""End to end: LUFFY in veRL's async V1 modes (``colocate_async``, ``separate_async``) on the CPU.

One short run of exp_scripts/train_tiny_cpu.sh per mode (``TRAINER_MODE``; no resume, no validation):
4 prompts x n=4 (1 whole target) per step. Checks on what the run left (metrics JSONL, rollout dumps,
checkpoint): a target in every group, the off-policy mask and advantages (GRPO without std: each
sample's score minus its group's mean, the target included), rollout correction and the
rollout-vs-actor diagnostics over generated tokens only, the staleness metrics, and trained weights.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import pytest
from _limits import run_tiny_cpu, step_metrics

REPO_ROOT = Path(__file__).resolve().parents[1]
STEPS, BATCH, N, N_PREFIX = 3, 4, 4, 1
MODES = ("colocate_async", "separate_async")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=MODES)
def async_run(request, tmp_path_factory) -> tuple[str, Path]:
    mode = request.param
    out = tmp_path_factory.mktemp(f"luffy_{mode}")
    run_tiny_cpu(
        out, TRAINER_MODE=mode, FIGURE="none", RESUME=0, TEST_FREQ=-1, STEPS=STEPS, BATCH=BATCH, N=N, N_PREFIX=N_PREFIX
    )
    return mode, out




def _groups(out: Path, step: int) -> dict[str, dict[int, dict]]:
    """The step's trained samples as ``{uid: {session: row}}``."""
    groups: dict[str, dict[int, dict]] = defaultdict(dict)
    for line in (out / "rollouts" / f"{step}.jsonl").read_text().splitlines():
        row = json.loads(line)
        uid, session, _ = row["uid"].rsplit("_", 2)
        groups[uid][int(session)] = row
    return groups


def test_every_group_holds_its_target_and_all_its_samples(async_run):
    _, out = async_run
    metrics = step_metrics(out / "metrics.jsonl")
    assert sorted(metrics) == list(range(1, STEPS + 1))
    for step, m in metrics.items():
        groups = _groups(out, step)
        assert len(groups) == BATCH
        assert all(sorted(sessions) == list(range(N)) for sessions in groups.values())
        # the sample traces open with a think block; random generations essentially never do
        assert all(g[s]["output"].startswith("<think>") for g in groups.values() for s in range(N_PREFIX))
        assert m["luffy/off_policy_sample_share"] == pytest.approx(N_PREFIX / N)
        assert 0 < m["luffy/off_policy_token_share"] < 1
        assert 0 < m["luffy/off_policy_prob"] < 1


def test_advantages_are_grpo_over_the_whole_mixed_group(async_run):
    _, out = async_run
    for step, m in step_metrics(out / "metrics.jsonl").items():
        off, on = [], []
        for sessions in _groups(out, step).values():
            scores = [sessions[s]["score"] for s in range(N)]
            mean = sum(scores) / N
            off += [scores[s] - mean for s in range(N_PREFIX)]
            on += [scores[s] - mean for s in range(N_PREFIX, N)]
        assert m["luffy/advantage_off_policy"] == pytest.approx(sum(off) / len(off), abs=1e-5)
        assert m["luffy/advantage_on_policy"] == pytest.approx(sum(on) / len(on), abs=1e-5)


def test_rollout_correction_and_diagnostics_see_generated_tokens_only(async_run):
    _, out = async_run
    for step, m in step_metrics(out / "metrics.jsonl").items():
        for key in ("actor/pg_loss", "actor/on_pg_loss", "actor/off_pg_loss", "actor/grad_norm"):
            assert math.isfinite(m[key]), (step, key, m[key])
        # target tokens carry 0.0 filler as behaviour log-prob (probability 1): counted in, these
        # would be near 1 (the tiny model gives the trace tokens little probability)
        assert m["training/rollout_probs_diff_max"] < 0.05
        assert abs(m["rollout_corr/log_ppl_diff"]) < 0.05


def test_staleness_metrics_are_logged(async_run):
    _, out = async_run
    metrics = step_metrics(out / "metrics.jsonl")
    for step, m in metrics.items():
        for key in ("training/off_policy/trajectory_staleness/mean", "luffy/on_policy_staleness/mean"):
            assert key in m, (step, key)
        # a sample trains on the step after at most max_off_policy_threshold versions (veRL's default 8)
        assert 0 <= m["luffy/on_policy_staleness/max"] <= min(step - 1, 8)
    # the warm-up batch is generated ahead, so some step trains on samples from older weights
    assert max(m["luffy/on_policy_staleness_worst/max"] for m in metrics.values()) >= 1


def test_parameters_changed(async_run):
    from safetensors.torch import load_file

    _, out = async_run
    before = load_file(str(out / "tiny_model" / "model.safetensors"))
    hf_dir = out / "checkpoints" / f"global_step_{STEPS}" / "actor" / "huggingface"
    after = load_file(str(next(hf_dir.glob("*.safetensors"))))
    shared = set(before) & set(after)
    assert shared
    assert not [name for name in shared if before[name].equal(after[name].to(before[name].dtype))]
