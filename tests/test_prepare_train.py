"""data/prepare_train.py and luffy.data: formats, broken rows, filters, determinism, schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import _data_fixtures as fixtures
import pyarrow.parquet as pq
import pytest
from _data_fixtures import (
    EXPECTED_SKIPS,
    NUM_ROWS,
    OVER_BUDGET_ROW,
    WRITERS,
    WRONG_TRACE_ROW,
    good_rows_expected,
    raw_rows,
    write_jsonl,
)

from luffy.data.errors import LuffyDataError
from luffy.data.pipeline import PrepareOptions, format_summary, prepare, write_outputs
from luffy.data.schema import TRAIN_SCHEMA, build_prompt
from luffy.prompts import LUFFY_SYSTEM_PROMPT

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"progress": False}
COLUMNAR = {"parquet", "parquet_folder", "save_to_disk"}

# Shared fixtures, registered in this module under their own names.
shared_data = fixtures.shared_data
tiny_tokenizer = fixtures.tiny_tokenizer
tiny_tokenizer_dir = fixtures.tiny_tokenizer_dir



def _problems(rows: list[dict]) -> set[str]:
    return {r["prompt"][-1]["content"] for r in rows}


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_every_format_reports_bad_rows_and_keeps_good_ones(fmt: str, tmp_path: Path) -> None:
    source = WRITERS[fmt](raw_rows(), tmp_path)
    result = prepare(str(source), PrepareOptions(**QUIET))
    assert result.num_input == NUM_ROWS
    expected = dict(EXPECTED_SKIPS)
    if fmt in COLUMNAR:  # a columnar file stores an absent key as null
        expected[1] = "null_problem"
    assert {s.row: s.reason for s in result.skipped} == expected
    assert _problems(result.train) == good_rows_expected()
    # The target is the first generation marked correct (the second one here).
    row = next(r for r in result.train if r["extra_info"]["uuid"] == "uuid-0")
    assert row["target"] == [{"content": raw_rows()[0]["generations"][1], "role": "assistant"}]
    assert row["reward_model"] == {"ground_truth": "0", "style": "rule"}
    assert row["data_source"] == "openr1" and row["ability"] == "math"
    assert row["prompt"] == build_prompt(raw_rows()[0]["problem"])


def test_unreadable_jsonl_line_is_reported_by_row(tmp_path: Path) -> None:
    source = write_jsonl(raw_rows()[:4], tmp_path / "in.jsonl", bad_line_at=2)
    result = prepare(str(source), PrepareOptions(**QUIET))
    reasons = {s.row: s.reason for s in result.skipped}
    assert reasons[2] == "unreadable_row" and "line 3" in result.skipped[1].detail
    assert len(result.train) == 2  # rows 0 and 3 (row 1 lacks its problem)


def test_outputs_schema_report_and_summary(tmp_path: Path) -> None:
    source = write_jsonl(raw_rows(), tmp_path / "in.jsonl")
    result = prepare(str(source), PrepareOptions(val_size=3, **QUIET))
    paths = write_outputs(result, tmp_path / "out")
    train, val = pq.read_table(paths["train"]), pq.read_table(paths["val"])
    assert train.schema.remove_metadata() == TRAIN_SCHEMA and val.num_rows == 3
    assert train.num_rows + 3 == NUM_ROWS - len(EXPECTED_SKIPS)
    assert sorted(r["index"] for r in train.column("extra_info").to_pylist()) == list(range(train.num_rows))
    report = [json.loads(line) for line in paths["skipped"].read_text().splitlines()]
    assert {r["row"]: r["reason"] for r in report} == EXPECTED_SKIPS
    summary = format_summary(result, paths)
    for reason in EXPECTED_SKIPS.values():
        assert reason in summary


def test_same_seed_same_bytes_other_seed_other_order(tmp_path: Path) -> None:
    source = write_jsonl(raw_rows(), tmp_path / "in.jsonl")
    outs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        write_outputs(prepare(str(source), PrepareOptions(seed=seed, val_size=2, **QUIET)), tmp_path / name)
        outs.append((tmp_path / name / "train.parquet").read_bytes())
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]


def test_prepared_schema_passes_through(tmp_path: Path) -> None:
    first = prepare(str(write_jsonl(raw_rows(), tmp_path / "in.jsonl")), PrepareOptions(shuffle=False, **QUIET))
    paths = write_outputs(first, tmp_path / "once")
    again = prepare(str(paths["train"]), PrepareOptions(shuffle=False, **QUIET))
    assert not again.skipped
    strip = [(r["prompt"], r["target"], r["reward_model"], r["data_source"]) for r in first.train]
    assert strip == [(r["prompt"], r["target"], r["reward_model"], r["data_source"]) for r in again.train]


def test_malformed_prepared_rows_are_reported(tmp_path: Path) -> None:
    good = {
        "data_source": "openr1",
        "prompt": build_prompt("Q1"),
        "reward_model": {"ground_truth": "1", "style": "rule"},
        "target": [{"role": "assistant", "content": "<think>\nx\n</think>\n\n\\boxed{1}"}],
    }
    rows = [
        good,
        {**good, "prompt": build_prompt("Q2"), "target": []},
        {**good, "prompt": build_prompt("Q3"), "reward_model": {"ground_truth": "", "style": "rule"}},
        {**good, "prompt": [{"role": "user"}]},
    ]
    result = prepare(str(write_jsonl(rows, tmp_path / "p.jsonl")), PrepareOptions(**QUIET))
    assert {s.row: s.reason for s in result.skipped} == {
        1: "malformed_prepared_row",
        2: "missing_answer",
        3: "malformed_prepared_row",
    }
    assert len(result.train) == 1


def test_token_budget_drop_and_truncate(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    source = str(write_jsonl(raw_rows(), tmp_path / "in.jsonl"))
    drop = prepare(source, PrepareOptions(tokenizer=str(tiny_tokenizer_dir), max_target_tokens=300, **QUIET))
    assert {s.row: s.reason for s in drop.skipped}[OVER_BUDGET_ROW] == "trace_over_token_budget"
    cut = prepare(
        source,
        PrepareOptions(tokenizer=str(tiny_tokenizer_dir), max_target_tokens=300, overlong="truncate", **QUIET),
    )
    assert OVER_BUDGET_ROW not in {s.row for s in cut.skipped}
    row = next(r for r in cut.train if r["extra_info"]["row"] == OVER_BUDGET_ROW)
    assert row["extra_info"]["target_truncated"] and cut.truncated == 1
    from transformers import AutoTokenizer

    from luffy.tokens import TargetEncoder

    encoder = TargetEncoder(AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir)), max_response_length=300)
    ids = encoder.encode(row["target"]).ids
    assert len(ids) <= 300 and ids[-1] == encoder.eos_token_id


def test_num_proc_does_not_change_output(tmp_path: Path, tiny_tokenizer_dir: Path, monkeypatch) -> None:
    import luffy.data.filters

    monkeypatch.setattr(luffy.data.filters, "CHUNK", 3)  # several chunks, so the pool really runs
    source = str(write_jsonl(raw_rows(), tmp_path / "in.jsonl"))
    results = [
        prepare(
            source,
            PrepareOptions(tokenizer=str(tiny_tokenizer_dir), max_target_tokens=20, overlong="truncate",
                           num_proc=n, **QUIET),
        )
        for n in (1, 2)
    ]
    assert results[0].stats["traces_tokenised"] > 6  # the short budget makes every trace count
    assert results[0].train == results[1].train
    assert [s.as_dict() for s in results[0].skipped] == [s.as_dict() for s in results[1].skipped]


def test_verify_targets_drops_wrong_traces(tmp_path: Path) -> None:
    pytest.importorskip("luffy.scoring", reason="luffy.scoring (math-verify answer check) is not available")
    source = str(write_jsonl(raw_rows(), tmp_path / "in.jsonl"))
    result = prepare(source, PrepareOptions(verify_targets=True, **QUIET))
    reasons = {s.row: s.reason for s in result.skipped}
    assert reasons[WRONG_TRACE_ROW] == "trace_answer_wrong"
    assert {r: reasons[r] for r in EXPECTED_SKIPS} == EXPECTED_SKIPS


def test_max_targets_keeps_several_traces(tmp_path: Path) -> None:
    rows = raw_rows()[:1]
    rows[0]["correctness_math_verify"] = [True, True]
    result = prepare(str(write_jsonl(rows, tmp_path / "in.jsonl")), PrepareOptions(max_targets=2, **QUIET))
    assert [t["content"] for t in result.train[0]["target"]] == rows[0]["generations"]


def test_unmarked_generations_are_not_trusted(tmp_path: Path) -> None:
    rows = raw_rows()[:1]
    rows[0]["correctness_math_verify"] = [False]  # the second generation has no mark
    result = prepare(str(write_jsonl(rows, tmp_path / "in.jsonl")), PrepareOptions(**QUIET))
    assert [s.reason for s in result.skipped] == ["no_trace_marked_correct"]


def test_bad_options_and_missing_input_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(LuffyDataError, match="go together"):
        prepare("x.jsonl", PrepareOptions(max_target_tokens=10))
    with pytest.raises(LuffyDataError, match="neither an existing file"):
        prepare(str(tmp_path / "nope.jsonl"), PrepareOptions(**QUIET))


def test_prompt_matches_benchmark_parquet_bytes(shared_data: Path) -> None:
    table = pq.read_table(shared_data / "benchmarks" / "valid.parquet").slice(0, 50)
    for prompt in table.column("prompt").to_pylist():
        assert prompt[0]["content"] == LUFFY_SYSTEM_PROMPT
        assert build_prompt(prompt[1]["content"]) == prompt


def test_shared_broken_file_reports_every_fault(shared_data: Path, tmp_path: Path) -> None:
    result = prepare(str(shared_data / "openr1_sample_broken.jsonl"), PrepareOptions(**QUIET))
    reasons = {s.reason for s in result.skipped}
    assert {"missing_problem", "null_problem", "missing_answer", "missing_trace", "duplicate_problem"} <= reasons
    assert result.num_input == len(result.train) + len(result.skipped)
    assert all(isinstance(s.row, int) and s.detail for s in result.skipped)


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "data" / "prepare_train.py"), *args],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})}, timeout=120,
    )


@pytest.mark.slow  # runs the script in a subprocess
def test_cli_hub_name_offline_gives_one_error_line(tmp_path: Path) -> None:
    proc = _cli("--input", "Elliott/Openr1-Math-46k-8192", "--output_dir", str(tmp_path),
                env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Elliott/Openr1-Math-46k-8192" in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow  # runs the script in a subprocess
def test_cli_run_prints_summary(tmp_path: Path) -> None:
    source = write_jsonl(raw_rows(), tmp_path / "in.jsonl")
    proc = _cli("--input", str(source), "--output_dir", str(tmp_path / "out"), "--val_size", "2", "--no_progress")
    assert proc.returncode == 0, proc.stderr
    assert "missing_problem" in proc.stdout and "skipped row 1: missing_problem" in proc.stderr
    assert (tmp_path / "out" / "train.parquet").exists() and (tmp_path / "out" / "val.parquet").exists()
    assert "--max_target_tokens" in _cli("--help").stdout


def test_cli_complement_set_from_the_hub_name_or_a_local_file(tmp_path: Path) -> None:
    # --complement: LUFFY's SFT-then-RL problem set by default (offline here: one error line naming it)
    proc = _cli("--complement", "--output_dir", str(tmp_path / "hub"), env={"HF_DATASETS_OFFLINE": "1",
                                                                             "HF_HUB_OFFLINE": "1"})
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Elliott/Openr1-Math-48k-Complement" in lines[0]
    # a local copy: the same reading, filters and bad-row report
    source = write_jsonl(raw_rows(), tmp_path / "complement.jsonl")
    proc = _cli("--complement", "--input", str(source), "--output_dir", str(tmp_path / "out"), "--no_progress")
    assert proc.returncode == 0, proc.stderr
    assert "skipped row 1: missing_problem" in proc.stderr
    assert (tmp_path / "out" / "train.parquet").exists() and (tmp_path / "out" / "skipped.jsonl").exists()
