"""Inputs for the data-preparation tests, made here so no test depends on ``../shared``.

``raw_rows()`` returns good raw OpenR1-Math rows with broken rows planted among them, and
``EXPECTED_SKIPS`` maps each planted row number to the reason the pipeline must report.
Writers put the same rows into every supported container.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def trace(answer: str, body: str = "Let me work through this.") -> str:
    return f"<think>\n{body}\n</think>\n\nThe final answer is $\\boxed{{{answer}}}$."


def good_row(i: int) -> dict[str, Any]:
    """A well-formed raw row; ``i`` makes problem, answer and uuid unique."""
    return {
        "problem": f"What is ${i} + {i}$?",
        "solution": "Add.",
        "answer": str(2 * i),
        "problem_type": "Algebra",
        "question_type": "math-word-problem",
        "source": "synthetic",
        "uuid": f"uuid-{i}",
        "generations": [trace(str(2 * i + 1), "A slip."), trace(str(2 * i))],
        "correctness_math_verify": [False, True],
    }


#: row number -> reason, for the rows ``raw_rows`` plants (0-based positions in the input).
EXPECTED_SKIPS = {
    1: "missing_problem",
    3: "null_problem",
    5: "missing_answer",
    7: "missing_trace",
    9: "no_trace_marked_correct",
    11: "duplicate_problem",
    13: "empty_problem",
}
#: rows skipped only when a filter is on.
OVER_BUDGET_ROW = 15
WRONG_TRACE_ROW = 17
NUM_ROWS = 20


def raw_rows() -> list[dict[str, Any]]:
    """``NUM_ROWS`` rows: good ones with the faults of ``EXPECTED_SKIPS`` and the filter rows."""
    rows = [good_row(i) for i in range(NUM_ROWS)]
    del rows[1]["problem"]
    rows[3]["problem"] = None
    rows[5]["answer"] = ""
    rows[7]["generations"] = []
    rows[7]["correctness_math_verify"] = []
    rows[9]["correctness_math_verify"] = [False, False]
    rows[11]["problem"] = rows[2]["problem"]
    rows[13]["problem"] = "   "
    rows[OVER_BUDGET_ROW]["generations"][1] = trace(str(2 * OVER_BUDGET_ROW), "very long reasoning " * 400)
    rows[WRONG_TRACE_ROW]["generations"][1] = trace("999999")  # marked correct, but it is not
    return rows


def good_rows_expected() -> set[str]:
    """Problems that must come out when no optional filter is on."""
    rows = raw_rows()
    return {rows[i]["problem"] for i in range(NUM_ROWS) if i not in EXPECTED_SKIPS}


def write_jsonl(rows: list[dict[str, Any]], path: Path, bad_line_at: int | None = None) -> Path:
    lines = [json.dumps(r) for r in rows]
    if bad_line_at is not None:
        lines.insert(bad_line_at, "{not json")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_json(rows: list[dict[str, Any]], path: Path) -> Path:
    path.write_text(json.dumps(rows))
    return path


def _table(rows: list[dict[str, Any]]):
    import pyarrow as pa

    return pa.Table.from_pylist(rows)


def write_parquet(rows: list[dict[str, Any]], path: Path) -> Path:
    import pyarrow.parquet as pq

    pq.write_table(_table(rows), path)
    return path


def write_saved_dataset(rows: list[dict[str, Any]], path: Path) -> Path:
    import datasets

    datasets.Dataset(_table(rows)).save_to_disk(str(path))
    return path


WRITERS = {
    "jsonl": lambda rows, d: write_jsonl(rows, d / "in.jsonl"),
    "json": lambda rows, d: write_json(rows, d / "in.json"),
    "parquet": lambda rows, d: write_parquet(rows, d / "in.parquet"),
    "parquet_folder": lambda rows, d: write_parquet(rows, (d / "pq").mkdir() or d / "pq" / "part-0.parquet").parent,
    "save_to_disk": lambda rows, d: write_saved_dataset(rows, d / "saved"),
}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; skips with the reason when the shared folder is not beside the checkout."""
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"shared sample data not found at {data} (it sits beside the repository checkout)")
    return data


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """The offline byte-level BPE tokenizer, trained on the fixture rows, saved to a temp folder."""
    from luffy.tiny import build_tokenizer

    out = tmp_path_factory.mktemp("tiny_tok")
    corpus = [t for r in raw_rows()[:5] for t in r["generations"]]
    build_tokenizer(out, corpus=corpus)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
