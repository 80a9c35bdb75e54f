"""The toy's claims table and trainer check (luffy/toy/report.py) on hand-made sweeps."""

from __future__ import annotations

import statistics

import pytest

from luffy.toy.report import claim_verdicts, claims_table, seed_band, trainer_within_spread


def _m(greedy, pass8=0.5, retention=0.9, transfer=0.0, entropy=0.05, logprob=-2.0):
    return {"id_greedy": greedy, "id_pass8": pass8, "id_sampled": greedy, "retention_greedy": retention,
            "transfer_greedy": transfer, "entropy": entropy, "trace_logprob": logprob}


def _sweep():
    base = _m(0.2)
    return {
        # seed 0: LUFFY above GRPO and SFT everywhere; seed 1: below GRPO in accuracy, ties SFT in ID
        "luffy": {0: {0: base, 10: _m(0.6, 0.8, 0.9, 0.1, 0.08)}, 1: {0: base, 10: _m(0.4, 0.7, 0.8, 0.0, 0.04)}},
        "grpo": {0: {0: base, 10: _m(0.5, 0.8, 0.9, 0.0, 0.06)}, 1: {0: base, 10: _m(0.5, 0.7, 0.9, 0.0, 0.05)}},
        "sft": {0: {0: base, 10: _m(0.5, 0.6, 0.8, 0.0, 0.03)}, 1: {0: base, 10: _m(0.4, 0.6, 0.9, 0.0, 0.03)}},
    }


def test_claim_verdicts_count_the_seeds_where_each_claim_holds():
    rows = {claim: (holds, m) for claim, _, _, _, holds, m in claim_verdicts(_sweep())}
    assert rows["(a) LUFFY beats on-policy GRPO in-distribution"] == (1, 2)
    assert rows["(b) LUFFY >= SFT in-distribution"] == (2, 2)  # 0.6 > 0.5; 0.4 = 0.4
    # OOD = mean of retention and transfer: (0.9+0.1)/2 > 0.4; (0.8+0)/2 < 0.45
    assert rows["(b) LUFFY beats SFT out of distribution"] == (1, 2)
    assert rows["(c) LUFFY keeps more entropy than on-policy GRPO"] == (1, 2)
    assert rows["(c) ... with pass@8 no lower"] == (2, 2)
    table = claims_table(_sweep())
    assert "| 0.60 vs 0.50 yes | 0.40 vs 0.50 no | holds in 1 of 2 seeds |" in table
    assert table.count("\n") == 1 + 5  # header, rule, five claim rows (no luffy_split arm in this sweep)


def test_a_successor_arm_takes_luffys_place_in_the_claims():
    sweep = _sweep()
    sweep["bread"] = {seed: by_step for seed, by_step in sweep["grpo"].items()}  # ties GRPO everywhere
    table = claims_table(sweep)
    assert table.count("\n") == 1 + 10  # LUFFY's five rows, then bread's
    assert "| (a) bread beats on-policy GRPO in-distribution | grpo | ID greedy acc. | 0.50 vs 0.50 no" in table
    assert "| ID pass@8 | 0.80 vs 0.80 yes | 0.70 vs 0.70 yes | holds in 2 of 2 seeds |" in table


def test_seed_band_is_the_wider_of_range_and_two_sd():
    values = [0.1, 0.2, 0.3, 0.4, 0.5]
    sd = statistics.stdev(values)
    assert seed_band(values) == pytest.approx((0.3 - 2 * sd, 0.3 + 2 * sd))
    skewed = [0.0, 0.0, 0.0, 0.0, 1.0]  # with 5 seeds the 2-sd band always holds the range
    lo, hi = seed_band(skewed)
    assert lo < 0.0 and hi > 1.0
    assert seed_band([0.5]) == (0.5, 0.5)


def test_trainer_values_are_checked_against_the_band_at_common_steps():
    sweep = _sweep()
    trainer = {"luffy": {10: _m(0.5, 0.75, 0.85, 0.05, 0.06, -2.0), 20: _m(0.9)}, "sft": {10: _m(0.9)}}
    rows = trainer_within_spread(sweep, trainer)
    assert {(arm, step) for arm, step, *_ in rows} == {("luffy", 10), ("sft", 10)}  # no step 20 in the sweep
    by_key = {(arm, key): inside for arm, step, key, value, lo, hi, inside in rows}
    assert by_key[("luffy", "id_greedy")] and by_key[("luffy", "trace_logprob")]
    assert not by_key[("sft", "id_greedy")]  # 0.9 against 0.5, 0.4


def test_run_mean_averages_the_evaluations_after_the_start():
    from luffy.toy.report import run_mean

    sweep = _sweep()
    sweep["luffy"][0][5] = _m(0.2, logprob=-4.0)
    mean = run_mean(sweep, "luffy")
    assert mean[0]["id_greedy"] == pytest.approx((0.2 + 0.6) / 2)  # steps 5 and 10, not the base at 0
    assert mean[0]["trace_logprob"] == pytest.approx(-3.0)
    assert mean[1]["id_greedy"] == pytest.approx(0.4)  # seed 1: step 10 only
    rows = {claim: holds for claim, _, _, _, holds, _ in claim_verdicts(sweep, summary="mean")}
    assert rows["(a) LUFFY beats on-policy GRPO in-distribution"] == 0  # 0.4 < 0.5 in both seeds


def test_a_sweep_extends_the_runs_of_the_same_settings_and_drops_others(tmp_path, capsys):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "exp_scripts" / "toy_reproduction.py"
    spec = importlib.util.spec_from_file_location("toy_reproduction", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    config, base = {"steps": 40, "lr": 1e-4}, _m(0.16)
    sweep = {
        "luffy": {"0": {"config": config, "eval": {"0": base, "40": _m(0.9)}},
                  "1": {"config": {**config, "lr": 2e-3}, "eval": {"0": base}}},  # other settings: dropped
        "grpo": {"0": {"config": config, "eval": {"0": _m(0.5)}},  # another base model at seed 0: dropped
                 "3": {"config": config, "eval": {"0": _m(0.5)}}},  # seed 3 not rerun: kept
    }
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    kept = script._kept_results(tmp_path / "sweep.json", config, {0: base, 1: base})
    assert {arm: sorted(by_seed) for arm, by_seed in kept.items()} == {"luffy": ["0"], "grpo": ["3"]}
    assert "2 earlier runs kept, 2 of other settings dropped" in capsys.readouterr().out
    assert script._kept_results(tmp_path / "missing.json", config, {}) == {}


def test_the_scripts_arm_lists_are_the_labs():
    """toy_reproduction.py (which keeps --help free of the loop's imports) and .sh name the lab's arms."""
    import importlib.util
    import re
    from pathlib import Path

    from luffy.toy.lab import ARMS

    scripts = Path(__file__).resolve().parents[1] / "exp_scripts"
    spec = importlib.util.spec_from_file_location("toy_reproduction", scripts / "toy_reproduction.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.ARM_NAMES == tuple(ARMS)
    all_arms = re.search(r'^ALL_ARMS="([^"]*)"', (scripts / "toy_reproduction.sh").read_text(), re.M).group(1)
    assert all_arms.split() == list(ARMS)
