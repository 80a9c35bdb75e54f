"""Evaluation rows: one problem per row (times ``copies``) in the benchmark parquets' schema.

Multiple-choice problems render their choices into the user turn exactly as the shared benchmark
files do:

- GPQA (``gpqa``, ``gpqa_diamond``)::

      {GPQA_INSTRUCTION}\\n\\n{question}\\n\\nA) {c0}\\nB) {c1}\\nC) {c2}\\nD) {c3}

- every other multiple-choice set (``arc_c``, ``mmlu_pro``, ...)::

      {question}\\n\\nA) {c0}\\nB) {c1}\\n...\\n      (each choice line ends with a newline)

The ground truth of a multiple-choice row is the letter. ``extra_info`` is ``{index, split}`` with
``index`` counting problems within each data source (copies share it) and ``split = "default"``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from luffy.data.errors import LuffyDataError
from luffy.data.schema import MESSAGES_TYPE, REWARD_MODEL_TYPE, build_prompt, is_sequence, normalize_messages
from luffy.scoring.ground_truth import BadGroundTruth, ground_truth_text

GPQA_INSTRUCTION = (
    "Answer the following multiple choice question. The last line of your response should be of the "
    "following format: 'ANSWER: $LETTER' (without quotes) where LETTER is one of {letters}. Think step "
    "by step before answering."
)
GPQA_SOURCES = ("gpqa", "gpqa_diamond")
MATH_SOURCES = ("aime24", "aime25", "amc", "math500", "minerva", "olympiad_bench")
CHOICE_SOURCES = ("arc_c", "gpqa_diamond", "mmlu_pro")
#: Names the shared benchmark parquets use for the same sets (``--benchmark_names``).
BENCHMARK_NAMES = {"aime24": "aime", "math500": "math", "gpqa_diamond": "gpqa"}

EVAL_EXTRA_TYPE = pa.struct([("index", pa.int64()), ("split", pa.string())])
EVAL_SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", MESSAGES_TYPE),
        ("ability", pa.string()),
        ("reward_model", REWARD_MODEL_TYPE),
        ("extra_info", EVAL_EXTRA_TYPE),
    ]
)


def render_choices(data_source: str, question: str, choices: list[str]) -> str:
    """The user turn of a multiple-choice problem (formats in the module docstring)."""
    if not 2 <= len(choices) <= 26:
        raise LuffyDataError(f"a multiple-choice problem needs 2-26 choices, got {len(choices)}")
    letters = string.ascii_uppercase[: len(choices)]
    lines = [f"{letter}) {choice}" for letter, choice in zip(letters, choices)]
    if data_source in GPQA_SOURCES:
        return GPQA_INSTRUCTION.format(letters=letters) + "\n\n" + question + "\n\n" + "\n".join(lines)
    return question + "\n\n" + "".join(line + "\n" for line in lines)


def _letter(answer: Any, choices: list[str]) -> str:
    """The answer as a choice letter (accepts a letter, a 0-based index, or the choice text)."""
    letters = string.ascii_uppercase[: len(choices)]
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
        return letters[answer]
    if isinstance(answer, str):
        text = answer.strip()
        if len(text) == 1 and text.upper() in letters:
            return text.upper()
        if text in choices:
            return letters[choices.index(text)]
    raise LuffyDataError(f"answer {answer!r} is not one of the choice letters {letters}")


@dataclass
class EvalProblem:
    """One evaluation problem before copies: source, chat prompt and ground truth."""

    row: int
    data_source: str
    prompt: list[dict[str, str]]
    ground_truth: str


def _truth(value: Any, field: str) -> str:
    """The reference answer as text; NaN, infinities, containers and blanks raise ``LuffyDataError``."""
    try:
        return ground_truth_text(value)
    except BadGroundTruth as err:
        raise LuffyDataError(f"{field}: {err}") from None


def eval_problem(row_no: int, row: dict[str, Any], default_source: str | None, template: str) -> EvalProblem:
    """Build one problem from an input row; raise ``LuffyDataError`` (with the field) when unusable."""
    source = row.get("data_source") or default_source
    if not isinstance(source, str) or not source:
        raise LuffyDataError("no 'data_source' (give it per row or with --data_source)")
    if row.get("prompt") is not None and "problem" not in row:
        reward = row.get("reward_model") or {}
        truth = reward.get("ground_truth") if isinstance(reward, dict) else None
        truth = _truth(truth, "reward_model.ground_truth")
        return EvalProblem(row_no, source, normalize_messages(row["prompt"]), truth)
    problem = row.get("problem", row.get("question"))
    if not isinstance(problem, str) or not problem.strip():
        raise LuffyDataError("'problem' is missing, null or empty")
    answer = row.get("answer")
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        raise LuffyDataError("'answer' is missing or empty")
    choices = row.get("choices")
    if choices is not None:
        if not is_sequence(choices) or not all(isinstance(c, str) for c in choices):
            raise LuffyDataError("'choices' must be a list of strings")
        choices = list(choices)
        return EvalProblem(row_no, source, build_prompt(render_choices(source, problem, choices), template),
                           _letter(answer, choices))
    if source in CHOICE_SOURCES:
        raise LuffyDataError(f"'{source}' is multiple choice but the row has no 'choices'")
    return EvalProblem(row_no, source, build_prompt(problem, template), _truth(answer, "'answer'"))


def parse_copies(spec: str) -> tuple[int, dict[str, int]]:
    """``"32"`` -> (32, {}); ``"aime24=32,amc=32"`` -> (1, {...}); ``"4,aime24=32"`` mixes both."""
    default, per_source = 1, {}
    for part in filter(None, (p.strip() for p in str(spec).split(","))):
        name, _, value = part.rpartition("=")
        try:
            count = int(value)
        except ValueError:
            raise LuffyDataError(f"--copies: {part!r} is not N or SOURCE=N") from None
        if count < 1:
            raise LuffyDataError(f"--copies: {part!r} must be >= 1")
        if name:
            per_source[name] = count
        else:
            default = count
    return default, per_source


def eval_rows(problems: list[EvalProblem], copies: str = "1", rename: dict[str, str] | None = None) -> list[dict]:
    """Rows grouped by data source (first-seen order), each problem repeated ``copies`` times."""
    default, per_source = parse_copies(copies)
    rename = rename or {}
    order: dict[str, list[EvalProblem]] = {}
    for problem in problems:
        order.setdefault(problem.data_source, []).append(problem)
    rows = []
    for source, items in order.items():
        name = rename.get(source, source)
        count = per_source.get(source, per_source.get(name, default))
        for index, problem in enumerate(items):
            row = {
                "data_source": name,
                "prompt": problem.prompt,
                "ability": "math",
                "reward_model": {"ground_truth": problem.ground_truth, "style": "rule"},
                "extra_info": {"index": index, "split": "default"},
            }
            rows.extend([row] * count)
    return rows
