"""The toy task: carry-free addition of a repdigit, ``What is 472 + 222?``, with a digit-by-digit trace.

Every problem adds ``b = k * 111`` (``k`` in 1..3) to a 3-digit ``a`` whose digits ``d`` all satisfy
``d + k <= 9``, so no digit carries and the working is one fact ``k+d=s`` per digit of ``a``::

    <think>
    2+4=6
    2+7=9
    2+2=4
    </think>

    The answer is $\\boxed{694}$.

The held-out split holds problems whose ``(a, k)`` never appears in training; every single-digit fact
``d+k`` of a held-out problem does. :func:`format_trace` with ``digits`` replaced by random ones gives
the *format-only* traces the base model is pre-trained on (right layout and copied operands, wrong sums).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA_SOURCE = "toy_addition"
MAX_K = 3


@dataclass(frozen=True)
class Problem:
    """One problem ``a + k*111`` (``a`` three digits, no carry)."""

    a: int
    k: int

    @property
    def b(self) -> int:
        return 111 * self.k

    @property
    def answer(self) -> int:
        return self.a + self.b

    @property
    def question(self) -> str:
        return f"What is {self.a} + {self.b}?"


def all_problems() -> list[Problem]:
    """Every carry-free problem, in a fixed order (k, then a)."""
    out = []
    for k in range(1, MAX_K + 1):
        for a in range(100, 1000):
            if all(int(d) + k <= 9 for d in str(a)):
                out.append(Problem(a, k))
    return out


def split_problems(n_train: int, n_val: int, seed: int) -> tuple[list[Problem], list[Problem]]:
    """Disjoint train and held-out problems drawn without replacement with ``seed``.

    Raises:
        ValueError: when ``n_train + n_val`` exceeds the number of distinct problems.
    """
    pool = all_problems()
    if n_train < 1 or n_val < 1 or n_train + n_val > len(pool):
        raise ValueError(f"n_train={n_train}, n_val={n_val}: need both >= 1 and n_train + n_val <= {len(pool)}")
    chosen = random.Random(seed).sample(pool, n_train + n_val)
    return chosen[:n_train], chosen[n_train:]


def format_pool(exclude: list[Problem]) -> list[Problem]:
    """Problems for the format-only pre-training: every 3-digit ``a`` with every ``k``, carries allowed
    (their sums are random anyway), minus ``exclude`` (the held-out problems: never seen, even unsolved).

    A pool this wide (2700 operands) makes the model learn to copy the operands' digits into the
    working instead of memorising a few hundred prompts.
    """
    held_out = set(exclude)
    return [Problem(a, k) for k in range(1, MAX_K + 1) for a in range(100, 1000) if Problem(a, k) not in held_out]


def format_trace(problem: Problem, digits: list[int] | None = None) -> str:
    """The worked trace of ``problem``; ``digits`` (one per digit of ``a``) replaces the true digit sums."""
    a_digits = [int(d) for d in str(problem.a)]
    sums = digits if digits is not None else [d + problem.k for d in a_digits]
    if len(sums) != len(a_digits):
        raise ValueError(f"digits={digits!r}: need {len(a_digits)} digits")
    lines = [f"{problem.k}+{d}={s}" for d, s in zip(a_digits, sums)]
    answer = "".join(str(s) for s in sums)
    return "<think>\n" + "\n".join(lines) + "\n</think>\n\nThe answer is $\\boxed{" + answer + "}$."


def format_only_trace(problem: Problem, rng: random.Random) -> str:
    """A trace with the task's layout whose digit sums (and so the boxed answer) are random digits."""
    return format_trace(problem, [rng.randrange(10) for _ in str(problem.a)])


def prompt_messages(problem: Problem) -> list[dict[str, str]]:
    """The chat prompt: the question as the only (user) turn (``prepare_train.py --template no_system``)."""
    from luffy.data.schema import build_prompt

    return build_prompt(problem.question, template="no_system")


def problems_table(problems: list[Problem], split: str) -> Any:
    """Rows in the training schema (prompt, ground truth, the trace as ``target``) as a pyarrow table."""
    from luffy.data.schema import make_row, rows_to_table

    rows = [
        make_row(
            data_source=DATA_SOURCE,
            prompt=prompt_messages(p),
            ground_truth=str(p.answer),
            traces=[format_trace(p)],
            extra_info={"index": i, "split": split, "row": i, "uuid": f"{p.a}+{p.b}", "source": DATA_SOURCE,
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
