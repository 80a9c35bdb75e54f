"""Loading evaluation problems from veRL-schema parquet or simple jsonl files."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from luffy.data.duplicates import warn_duplicates
from luffy.data.errors import LuffyDataError
from luffy.jsonl import iter_jsonl
from luffy.scoring.choice import LETTERS, is_multiple_choice
from luffy.scoring.ground_truth import BadGroundTruth, ground_truth_text

logger = logging.getLogger(__name__)


class EvalDataError(LuffyDataError):
    """An input row or file that cannot be turned into an evaluation problem."""


@dataclass
class EvalProblem:
    """One problem to evaluate.

    ``uid`` is stable across runs (data source + row position in the input file), so a rerun can
    skip what is already written. ``source_messages`` is the parquet's own prompt when there is one.
    """

    uid: str
    index: int
    data_source: str
    question: str
    answer: str
    multiple_choice: bool
    choices: list[str] | None = None
    source_messages: list[dict[str, str]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def format_choices(question: str, choices: Sequence[str]) -> str:
    """Question followed by its options, laid out as in the evaluation parquet ("A) ..." lines)."""
    if len(choices) > len(LETTERS):
        raise EvalDataError(f"at most {len(LETTERS)} choices are supported, got {len(choices)}")
    lines = "".join(f"{LETTERS[i]}) {c}\n" for i, c in enumerate(choices))
    return f"{question}\n\n{lines}"


def _plain(value: Any) -> Any:
    """numpy arrays / pandas objects from parquet into plain Python containers."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _answer(value: Any, where: str) -> str:
    """The reference answer as text, or an ``EvalDataError`` naming the row (NaN, containers, blanks)."""
    try:
        return ground_truth_text(value)
    except BadGroundTruth as err:
        raise EvalDataError(f"{where}: {err}") from None


def _user_turn(messages: list[dict[str, str]], where: str) -> str:
    users = [m.get("content", "") for m in messages if m.get("role") == "user"]
    if not users:
        raise EvalDataError(f"{where}: the prompt has no user turn")
    return users[-1]


def _from_parquet(path: Path) -> list[EvalProblem]:
    import pandas as pd

    try:
        df = pd.read_parquet(path)
    except Exception as err:  # pyarrow's errors for empty/truncated files: one line naming the file
        size = path.stat().st_size
        what = "an empty file (0 bytes)" if size == 0 else f"not a readable parquet file ({type(err).__name__}: {err})"
        raise EvalDataError(f"{path} is {what}") from None
    missing = {"data_source", "prompt", "reward_model"} - set(df.columns)
    if missing:
        raise EvalDataError(f"{path}: missing columns {sorted(missing)} (expected veRL's RL schema)")
    problems = []
    for i, row in enumerate(df.to_dict("records")):
        where = f"{path} row {i}"
        messages = _plain(row["prompt"])
        reward_model = _plain(row["reward_model"]) or {}
        if "ground_truth" not in reward_model:
            raise EvalDataError(f"{where}: reward_model has no ground_truth")
        extra = _plain(row.get("extra_info")) or {}
        ds = row["data_source"]
        if not isinstance(ds, str) or not ds.strip():
            raise EvalDataError(f"{where}: 'data_source' must be a non-empty string, got {ds!r}")
        problems.append(
            EvalProblem(
                uid=f"{ds}-{i}",
                index=i,
                data_source=ds,
                question=_user_turn(messages, where),
                answer=_answer(reward_model["ground_truth"], where),
                multiple_choice=is_multiple_choice(ds, extra if isinstance(extra, dict) else None),
                source_messages=[{"role": m["role"], "content": m["content"]} for m in messages],
                extra=extra if isinstance(extra, dict) else {},
            )
        )
    warn_duplicates(
        str(path), ((f"row {p.index}", (p.data_source, p.question), p.extra.get("index")) for p in problems)
    )
    return problems


def _from_jsonl(path: Path) -> list[EvalProblem]:
    problems, lines = [], []
    for lineno, row, problem in iter_jsonl(path):
        where = f"{path} line {lineno}"
        if problem is not None:
            raise EvalDataError(f"{where}: {problem}")
        question = row.get("problem", row.get("question"))
        answer = row.get("answer", row.get("ground_truth"))
        if not isinstance(question, str) or not question.strip():
            raise EvalDataError(f"{where}: needs a non-empty 'problem' (or 'question') string")
        if answer is None:
            raise EvalDataError(f"{where}: needs an 'answer' (or 'ground_truth')")
        answer = _answer(answer, where)
        ds = row.get("data_source", path.stem)  # documented default: the file's name
        if not isinstance(ds, str) or not ds.strip():
            raise EvalDataError(f"{where}: 'data_source' must be a non-empty string (or absent), got {ds!r}")
        choices = row.get("choices")
        if choices is not None and not isinstance(choices, list):
            raise EvalDataError(f"{where}: 'choices' must be a list")
        mc = bool(row.get("multiple_choice", choices is not None)) or is_multiple_choice(ds)
        if choices:
            question = format_choices(question, [str(c) for c in choices])
        index = len(problems)
        problems.append(
            EvalProblem(
                uid=f"{ds}-{index}",
                index=index,
                data_source=ds,
                question=question,
                answer=answer,
                multiple_choice=mc,
                choices=[str(c) for c in choices] if choices else None,
            )
        )
        lines.append(lineno)
    warn_duplicates(str(path), ((f"line {n}", (p.data_source, p.question), None) for n, p in zip(lines, problems)))
    return problems


def load_problems(
    path: str | Path,
    data_sources: Sequence[str] | None = None,
    limit: int | None = None,
    limit_per_source: int | None = None,
) -> list[EvalProblem]:
    """Read ``path`` (``.parquet`` in veRL's schema, or ``.jsonl``) and apply the filters.

    Args:
        data_sources: keep only these ``data_source`` values (None keeps all).
        limit: keep at most this many problems in total (after filtering).
        limit_per_source: keep at most this many problems per data source.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    if path.suffix == ".parquet":
        problems = _from_parquet(path)
    elif path.suffix in (".jsonl", ".json"):
        problems = _from_jsonl(path)
    else:
        raise EvalDataError(f"{path}: unsupported input format (use .parquet or .jsonl)")
    if not problems:
        raise EvalDataError(f"{path} holds no problems (an empty file?)")
    if data_sources:
        wanted = set(data_sources)
        available = sorted({p.data_source for p in problems})
        problems = [p for p in problems if p.data_source in wanted]
        if not problems:
            raise EvalDataError(f"{path}: no rows for data sources {sorted(wanted)}; available: {available}")
    if limit_per_source is not None:
        seen: dict[str, int] = {}
        kept = []
        for p in problems:
            seen[p.data_source] = seen.get(p.data_source, 0) + 1
            if seen[p.data_source] <= limit_per_source:
                kept.append(p)
        problems = kept
    if limit is not None:
        problems = problems[:limit]
    logger.info("loaded %d problems from %s", len(problems), path)
    return problems
