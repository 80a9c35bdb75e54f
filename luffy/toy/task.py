"""The toy task: column addition with the carry written out, plus two out-of-distribution splits.

A problem is ``What is 478 + 356?``; its trace works column by column from the units, writing the
carry that enters each column, and ends in the boxed answer::

    <think>
    8+6+0=14
    7+5+1=13
    4+3+1=8
    </think>

    The answer is $\\boxed{834}$.

A trace with a *dropped* carry (:func:`format_trace`'s ``dropped``) writes ``+0`` where a carry enters,
so its sums and answer are wrong; the base model is pre-trained on correct
traces of carry-free problems and on carry problems whose every carry is written only with
probability ``q`` (:func:`pretraining_trace`). Three evaluation splits:

* ``id``: 3-digit + 3-digit additions (the training distribution);
* ``retention``: 3-digit borrow-free subtractions ``875 - 352``, lines ``5-2=3``: learned in
  pre-training, never trained on afterwards;
* ``transfer``: 4-digit + 4-digit additions with at least one carry: pre-training shows only carry-free
  4-digit ones (the 4-line format), so solving these needs the carry learned on 3 digits.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA_SOURCE = "toy_addition"
SPLITS = ("id", "retention", "transfer")


@dataclass(frozen=True)
class Problem:
    """``a + b`` or ``a - b`` (``op``) of two ``len(str(a))``-digit numbers."""

    a: int
    b: int
    op: str = "+"

    @property
    def answer(self) -> int:
        return self.a + self.b if self.op == "+" else self.a - self.b

    @property
    def question(self) -> str:
        return f"What is {self.a} {self.op} {self.b}?"


def columns(p: Problem) -> list[tuple[int, int]]:
    """The digit pairs of each column, units first."""
    return [(int(x), int(y)) for x, y in zip(reversed(str(p.a)), reversed(str(p.b)))]


def carries(p: Problem) -> int:
    """How many columns of an addition produce a carry."""
    count, c = 0, 0
    for x, y in columns(p):
        c = int(x + y + c >= 10)
        count += c
    return count


def borrow_free(p: Problem) -> bool:
    """Every digit of ``a`` is at least the digit of ``b`` below it."""
    return all(x >= y for x, y in columns(p))


def format_trace(p: Problem, dropped: Collection[int] = ()) -> str:
    """The worked trace of ``p``; the carry out of each column in ``dropped`` (0 = units) is lost: written
    as 0 in the next column, or left out of the answer after the last column."""
    lines, digits, c = [], [], 0
    if p.op == "-":
        if not borrow_free(p):
            raise ValueError(f"{p.question}: only borrow-free subtractions have a trace")
        for x, y in columns(p):
            lines.append(f"{x}-{y}={x - y}")
            digits.append(x - y)
        answer = str(int("".join(str(d) for d in reversed(digits))))
    else:
        for i, (x, y) in enumerate(columns(p)):
            s = x + y + c
            lines.append(f"{x}+{y}+{c}={s}")
            digits.append(s % 10)
            c = 0 if i in dropped else int(s >= 10)
        lead = "1" if c else ""  # the carry out of the last column (dropped with it)
        answer = lead + "".join(str(d) for d in reversed(digits))
    return "<think>\n" + "\n".join(lines) + "\n</think>\n\nThe answer is $\\boxed{" + answer + "}$."


def random_problem(rng: random.Random, kind: str) -> Problem:
    """One problem of ``kind``: ``add3`` (3+3 digits), ``sub3`` (3-digit borrow-free subtraction),
    ``add4`` (4+4 digits, any), ``add4_free`` (4+4 digits, carry-free) or ``add4_carry`` (4+4, >= 1 carry)."""
    if kind == "add3":
        return Problem(rng.randrange(100, 1000), rng.randrange(100, 1000))
    if kind == "sub3":
        while True:
            p = Problem(rng.randrange(100, 1000), rng.randrange(100, 1000), "-")
            if borrow_free(p):
                return p
    if kind in ("add4", "add4_free", "add4_carry"):
        while True:
            p = Problem(rng.randrange(1000, 10000), rng.randrange(1000, 10000))
            if kind == "add4" or (carries(p) == 0) == (kind == "add4_free"):
                return p
    raise ValueError(f"unknown problem kind {kind!r}")


SPLIT_KINDS = {"id": "add3", "retention": "sub3", "transfer": "add4_carry"}


def draw(rng: random.Random, kind: str, n: int, exclude: set[Problem]) -> list[Problem]:
    """``n`` distinct problems of ``kind``, none in ``exclude`` (which grows by them)."""
    out = []
    while len(out) < n:
        p = random_problem(rng, kind)
        if p not in exclude:
            exclude.add(p)
            out.append(p)
    return out


@dataclass(frozen=True)
class ToyData:
    """Training prompts and the held-out evaluation splits (disjoint from each other)."""

    train: list[Problem]
    held_out: dict[str, list[Problem]]

    def excluded(self) -> set[Problem]:
        """Problems pre-training must never show: every held-out one."""
        return {p for ps in self.held_out.values() for p in ps}


def make_data(n_train: int, n_eval: int, seed: int) -> ToyData:
    """``n_train`` 3-digit training additions and ``n_eval`` problems of each split, all distinct.

    Raises:
        ValueError: for sizes below 1.
    """
    if n_train < 1 or n_eval < 1:
        raise ValueError(f"n_train={n_train}, n_eval={n_eval}: both must be >= 1")
    rng = random.Random(f"toy-data-{seed}")
    seen: set[Problem] = set()
    held_out = {split: draw(rng, SPLIT_KINDS[split], n_eval, seen) for split in SPLITS}
    return ToyData(draw(rng, "add3", n_train, seen), held_out)


#: pre-training mixture: (kind, weight); 3-digit additions carry a noisy carry, the rest are correct
PRETRAIN_MIX = (("add3", 0.6), ("sub3", 0.25), ("add4_free", 0.15))


def pretraining_trace(p: Problem, q: float, rng: random.Random) -> str:
    """A pre-training trace: correct, except that each carry of an addition is written only with
    probability ``q``, independently (else dropped: :func:`format_trace`'s ``dropped``)."""
    if p.op != "+":
        return format_trace(p)
    return format_trace(p, dropped={i for i in range(len(str(p.a))) if rng.random() >= q})


def pretraining_example(rng: random.Random, q: float, exclude: set[Problem],
                        format_only: bool = False) -> tuple[Problem, str]:
    """One (problem, trace) of the pre-training mixture, never a problem in ``exclude``.

    ``format_only``: every trace's digits after each ``=`` are random (the layout of a base model that
    solves nothing: the regime of the collapse measurement).
    """
    kinds, weights = zip(*PRETRAIN_MIX)
    while True:
        p = random_problem(rng, rng.choices(kinds, weights)[0])
        if p not in exclude:
            break
    trace = pretraining_trace(p, q, rng)
    if format_only:
        trace = scramble_results(trace, rng)
    return p, trace


def scramble_results(trace: str, rng: random.Random) -> str:
    """``trace`` with every digit right of an ``=`` and in the box replaced by a random digit."""
    head, _, tail = trace.partition("</think>")
    lines = []
    for line in head.split("\n"):
        if "=" in line:
            left, right = line.split("=")
            line = left + "=" + "".join(str(rng.randrange(10)) for _ in right)
        lines.append(line)
    box_start = tail.index("{") + 1
    box_end = tail.index("}", box_start)
    box = "".join(str(rng.randrange(10)) for _ in tail[box_start:box_end])
    return "\n".join(lines) + "</think>" + tail[:box_start] + box + tail[box_end:]


def prompt_messages(problem: Problem) -> list[dict[str, str]]:
    """The chat prompt: the question as the only (user) turn (``prepare_train.py --template no_system``)."""
    from luffy.data.schema import build_prompt

    return build_prompt(problem.question, template="no_system")


def problems_table(problems: list[Problem], split: str) -> Any:
    """Rows in the training schema (prompt, ground truth, the correct trace as ``target``) as a pyarrow table."""
    from luffy.data.schema import make_row, rows_to_table

    rows = [
        make_row(
            data_source=DATA_SOURCE,
            prompt=prompt_messages(p),
            ground_truth=str(p.answer),
            traces=[format_trace(p)],
            extra_info={"index": i, "split": split, "row": i, "uuid": f"{p.a}{p.op}{p.b}", "source": DATA_SOURCE,
                        "target_truncated": False},
        )
        for i, p in enumerate(problems)
    ]
    return rows_to_table(rows)


def write_parquet(problems: list[Problem], path: str | Path, split: str) -> Path:
    """:func:`problems_table` written at ``path`` (through a temporary file)."""
    from luffy.data.pipeline import write_parquet as _write

    _write(problems_table(problems, split), path)
    return Path(path)
