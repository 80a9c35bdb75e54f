"""data/prepare_eval.py (benchmark-style rows, multiple choice, copies) and data/prepare_sft.py."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import _data_fixtures as fixtures
import pyarrow.parquet as pq
import pytest
from _data_fixtures import raw_rows, write_jsonl

from luffy.data.errors import LuffyDataError
from luffy.data.eval_rows import EVAL_SCHEMA, eval_problem, eval_rows, parse_copies, render_choices
from luffy.data.schema import build_prompt

ROOT = Path(__file__).resolve().parents[1]

# Shared fixtures, registered in this module under their own names.
shared_data = fixtures.shared_data



def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "data" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


EVAL_ROWS = [
    {"data_source": "aime24", "problem": "What is $1+1$?", "answer": "2"},
    {"data_source": "aime24", "problem": "What is $2+2$?", "answer": "4"},
    {"data_source": "math500", "problem": "What is $3+3$?", "answer": "6"},
    {"data_source": "arc_c", "problem": "Which is red?", "choices": ["sky", "blood", "grass", "snow"], "answer": "B"},
    {"data_source": "gpqa_diamond", "problem": "Pick one.", "choices": ["w", "x", "y", "z"], "answer": 2},
    {"data_source": "mmlu_pro", "problem": "Pick.", "choices": list("abcdefghij"), "answer": "j"},
    {"data_source": "arc_c", "problem": "No choices here.", "answer": "A"},
]


def test_eval_cli_rows_copies_and_choices(tmp_path: Path, capsys) -> None:
    source = write_jsonl(EVAL_ROWS, tmp_path / "eval.jsonl")
    out = tmp_path / "valid.all.parquet"
    assert _script("prepare_eval").main(["--input", str(source), "--output", str(out), "--copies", "aime24=3"]) == 0
    assert "skipped: 1" in capsys.readouterr().out
    table = pq.read_table(out)
    assert table.schema.remove_metadata() == EVAL_SCHEMA
    rows = table.to_pylist()
    assert [r["data_source"] for r in rows] == ["aime24"] * 6 + ["math500", "arc_c", "gpqa_diamond", "mmlu_pro"]
    assert [r["extra_info"]["index"] for r in rows[:6]] == [0, 0, 0, 1, 1, 1]
    assert rows[0]["prompt"] == build_prompt("What is $1+1$?")
    assert rows[7]["prompt"][1]["content"] == "Which is red?\n\nA) sky\nB) blood\nC) grass\nD) snow\n"
    assert rows[8]["reward_model"]["ground_truth"] == "C" and "one of ABCD." in rows[8]["prompt"][1]["content"]
    assert rows[9]["reward_model"]["ground_truth"] == "J" and "J) j\n" in rows[9]["prompt"][1]["content"]


def test_parse_copies_and_rename() -> None:
    assert parse_copies("32") == (32, {})
    assert parse_copies("2,aime24=32") == (2, {"aime24": 32})
    with pytest.raises(LuffyDataError):
        parse_copies("aime24=zero")
    problems = [eval_problem(0, EVAL_ROWS[0], None, "own")]
    assert eval_rows(problems, "2", {"aime24": "aime"})[0]["data_source"] == "aime"


def _split_choices(text: str, gpqa: bool) -> tuple[str, list[str]]:
    body = text.split("\n\n", 1)[1] if gpqa else text
    question, _, options = body.rpartition("\n\nA) ")
    parts = re.split(r"\n[B-Z]\) ", "A) " + options)
    parts[0] = parts[0][3:]
    if not gpqa:
        parts[-1] = parts[-1][:-1]  # arc-style lines end with a newline
    return question, parts


@pytest.mark.parametrize("name,source", [("valid.arc_c.parquet", "arc_c"), ("valid.gpqa.parquet", "gpqa_diamond")])
def test_choices_render_like_the_benchmark_files(shared_data: Path, name: str, source: str) -> None:
    rows = pq.read_table(shared_data / "benchmarks" / name).slice(0, 40).to_pylist()
    for row in rows:
        text = row["prompt"][1]["content"]
        question, choices = _split_choices(text, gpqa=source.startswith("gpqa"))
        assert render_choices(source, question, choices) == text


def test_sft_parquet_loads_in_verl_multiturn_dataset(tmp_path: Path, capsys) -> None:
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer  # noqa: F401  (verl's dataset imports it too)
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    from luffy.tiny import build_tokenizer

    source = write_jsonl(raw_rows(), tmp_path / "in.jsonl")
    out = tmp_path / "sft.parquet"
    assert _script("prepare_sft").main(["--input", str(source), "--output", str(out)]) == 0
    rows = pq.read_table(out).to_pylist()
    assert [m["role"] for m in rows[0]["messages"]] == ["system", "user", "assistant"]
    assert rows[0]["messages"][2]["content"].startswith("<think>")
    tokenizer = build_tokenizer(tmp_path / "tok")
    config = OmegaConf.create({"messages_key": "messages", "max_length": 4096, "truncation": "error"})
    item = MultiTurnSFTDataset(str(out), tokenizer, config)[0]
    assert 0 < int(item["loss_mask"].sum()) < len(item["input_ids"])  # loss on the assistant turn only
    json.dumps(capsys.readouterr().out)  # the CLI printed its summary
