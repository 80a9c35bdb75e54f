"""Turn one input row into a ``Candidate`` (a problem with its traces) or a ``Skip`` (with a reason).

Two input shapes are recognised:

- **raw OpenR1-Math** (``problem``, ``answer``, ``generations``, ``correctness_math_verify``):
  candidate traces are the generations marked correct, in order. A generation whose mark is
  missing (no correctness list, or a list shorter than ``generations``) counts as *not marked*: it
  is never taken on trust. With answer verification on, such unmarked generations are kept as
  candidates so that math-verify decides; a generation marked ``False`` is never used. Rows
  with a ``target`` (string or messages) instead of ``generations`` take it as their only trace.
- **prepared** (``prompt`` chat list, ``target``, ``reward_model``): passed through after
  validation; its prompt is kept as is (``--template`` does not apply).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from luffy.data.errors import LuffyDataError
from luffy.data.readers import UnreadableRow
from luffy.data.schema import build_prompt, is_sequence, normalize_messages, target_texts, user_text
from luffy.scoring.ground_truth import BadGroundTruth, ground_truth_text

# Skip reasons (the keys of the summary's counts), in pipeline order.
UNREADABLE = "unreadable_row"
MISSING_PROBLEM = "missing_problem"
NULL_PROBLEM = "null_problem"
EMPTY_PROBLEM = "empty_problem"
MISSING_ANSWER = "missing_answer"
BAD_ANSWER = "unusable_answer"
MISSING_TRACE = "missing_trace"
NO_CORRECT_TRACE = "no_trace_marked_correct"
MALFORMED = "malformed_prepared_row"
OVER_BUDGET = "trace_over_token_budget"
WRONG_ANSWER = "trace_answer_wrong"
DUPLICATE = "duplicate_problem"
REASONS = (
    UNREADABLE,
    MISSING_PROBLEM,
    NULL_PROBLEM,
    EMPTY_PROBLEM,
    MISSING_ANSWER,
    BAD_ANSWER,
    MISSING_TRACE,
    NO_CORRECT_TRACE,
    MALFORMED,
    OVER_BUDGET,
    WRONG_ANSWER,
    DUPLICATE,
)


@dataclass
class Skip:
    """A row left out of the output: its input row number, a reason from ``REASONS`` and details."""

    row: int
    reason: str
    detail: str
    uuid: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "reason": self.reason, "detail": self.detail, "uuid": self.uuid}


@dataclass
class Candidate:
    """A usable problem: prompt, reference answer and candidate traces (best first)."""

    row: int
    problem: str
    answer: str
    traces: list[str]
    prompt: list[dict[str, str]]
    data_source: str
    ability: str = "math"
    uuid: str | None = None
    source: str | None = None
    truncated: list[bool] = field(default_factory=list)


def _answer(value: Any, field: str, row_no: int, uuid: str | None) -> str | Skip:
    """The reference answer, or a ``Skip``: missing/blank -> ``missing_answer``; NaN, infinities,
    booleans, containers and over-long answers -> ``unusable_answer`` (``str()`` would turn them into
    text such as ``"nan"`` that a response could then match)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return Skip(row_no, MISSING_ANSWER, f"{field} is missing or empty", uuid)
    try:
        return ground_truth_text(value)
    except BadGroundTruth as err:
        return Skip(row_no, BAD_ANSWER, f"{field}: {err}", uuid)


def _uuid(row: dict[str, Any]) -> str | None:
    value = row.get("uuid")
    if value is None and isinstance(row.get("extra_info"), dict):
        value = row["extra_info"].get("uuid")
    return None if value is None else str(value)


def _raw_traces(row: dict[str, Any], trust_unmarked: bool) -> tuple[list[str], str | None, str]:
    """Candidate traces of a raw row, or ([], reason, detail)."""
    generations = row.get("generations")
    if generations is None and row.get("target") is not None:
        try:
            return target_texts(row["target"]), None, ""
        except LuffyDataError as err:
            return [], MISSING_TRACE, str(err)
    if generations is None or not is_sequence(generations) or len(generations) == 0:
        return [], MISSING_TRACE, "'generations' is missing or empty"
    marks = row.get("correctness_math_verify")
    marks = list(marks) if marks is not None and is_sequence(marks) else []
    traces, non_empty = [], 0
    for i, trace in enumerate(generations):
        if not isinstance(trace, str) or not trace.strip():
            continue
        non_empty += 1
        mark = marks[i] if i < len(marks) else None
        if mark is True or (mark is None and trust_unmarked):
            traces.append(trace)
    if non_empty == 0:
        return [], MISSING_TRACE, "all generations are empty"
    if not traces:
        return [], NO_CORRECT_TRACE, f"none of {non_empty} generation(s) marked correct"
    return traces, None, ""


def _prepared(row_no: int, row: dict[str, Any], default_source: str) -> Candidate | Skip:
    uuid = _uuid(row)
    try:
        prompt = normalize_messages(row["prompt"], "prompt")
        problem = user_text(prompt)
        reward = row.get("reward_model")
        truth = _answer(reward.get("ground_truth") if isinstance(reward, dict) else None,
                        "reward_model.ground_truth", row_no, uuid)
        if isinstance(truth, Skip):
            return truth
        traces = target_texts(row.get("target"))
    except LuffyDataError as err:
        return Skip(row_no, MALFORMED, str(err), uuid)
    if not problem.strip():
        return Skip(row_no, EMPTY_PROBLEM, "the user turn is empty", uuid)
    # A prepared row without a data_source gets --data_source (default "openr1"), as raw rows do.
    data_source = row.get("data_source") if isinstance(row.get("data_source"), str) else default_source
    ability = row.get("ability") if isinstance(row.get("ability"), str) else "math"
    extra = row.get("extra_info") if isinstance(row.get("extra_info"), dict) else {}
    return Candidate(
        row=row_no,
        problem=problem,
        answer=truth,
        traces=traces,
        prompt=prompt,
        data_source=data_source,
        ability=ability,
        uuid=uuid,
        source=extra.get("source") if isinstance(extra.get("source"), str) else None,
    )


def normalize_row(
    row_no: int,
    row: dict[str, Any] | UnreadableRow,
    *,
    template: str = "own",
    data_source: str = "openr1",
    trust_unmarked: bool = False,
) -> Candidate | Skip:
    """Classify one input row; never raises for bad data (the ``Skip`` says what is wrong)."""
    if isinstance(row, UnreadableRow):
        return Skip(row_no, UNREADABLE, row.reason)
    if "prompt" in row and row.get("prompt") is not None and "problem" not in row:
        return _prepared(row_no, row, data_source)
    uuid = _uuid(row)
    if "problem" not in row:
        return Skip(row_no, MISSING_PROBLEM, "no 'problem' key", uuid)
    if row["problem"] is None:
        return Skip(row_no, NULL_PROBLEM, "'problem' is null", uuid)
    problem = row["problem"]
    if not isinstance(problem, str) or not problem.strip():
        return Skip(row_no, EMPTY_PROBLEM, f"'problem' is empty or not text ({type(problem).__name__})", uuid)
    answer = _answer(row.get("answer"), "'answer'", row_no, uuid)
    if isinstance(answer, Skip):
        return answer
    traces, reason, detail = _raw_traces(row, trust_unmarked)
    if reason is not None:
        return Skip(row_no, reason, detail, uuid)
    source = row.get("source") if isinstance(row.get("source"), str) else None
    return Candidate(
        row=row_no,
        problem=problem,
        answer=answer,
        traces=traces,
        prompt=build_prompt(problem, template),
        data_source=data_source,
        uuid=uuid,
        source=source,
    )
