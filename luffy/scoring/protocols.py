"""Evaluation protocols: which text of a response is graded, and by what.

* ``trainer``: the trainer's reward (:func:`luffy.scoring.score_responses`): the last ``\\boxed{}``
  anywhere in the response (else "The answer is ..."), math-verify on that answer, option letters
  for multiple-choice sets.
* ``luffy``: LUFFY's own evaluation script (``eval_scripts/generate_vllm.py`` of ElliottYan/LUFFY):

  - *think format* when the prompt ends in ``<think>\\n`` or with ``add_think_before_answer``
    (unless ``no_split_think``): only the text after the first ``</think>`` (up to a second one) is
    graded, and a response without ``</think>`` is wrong for math-verify;
  - math-verify parses that whole text with its default extraction, against ``$ground_truth$``,
    for every set (multiple-choice letters included);
  - ``add_oat_evaluate``: the verdict is the OAT-style boxed grader's (:mod:`luffy.scoring.oat_grader`)
    instead, or either grader's with ``any_true``. As in LUFFY, the OAT grader sees the text the split
    left: the whole response when it has no ``</think>``, so a box inside an unfinished think block
    counts there.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from luffy.scoring import ScoreResult, score_responses
from luffy.scoring.math_verify_bounded import get_verifier
from luffy.scoring.oat_grader import oat_boxed_answer, oat_boxed_correct

PROTOCOLS = ("luffy", "trainer")
"""Named evaluation protocols (see the module docstring)."""

DEFAULT_PROTOCOL = "luffy"
"""The evaluation scripts exist to compare with LUFFY's published table, and LUFFY's README command
must give LUFFY's numbers as written; ``trainer`` matches the validation the trainer runs."""

THINK_START, THINK_END = "<think>", "</think>"


@dataclass(frozen=True)
class LuffyOptions:
    """LUFFY's scoring switches (its script's keyword arguments of the same names)."""

    add_think_before_answer: bool = False
    no_split_think: bool = False
    add_oat_evaluate: bool = False
    any_true: bool = False


def luffy_graded_text(prompt: str, response: str, opts: LuffyOptions) -> tuple[str, bool]:
    """The text LUFFY grades, and False when the think split failed (no ``</think>``: math-verify says wrong).

    With the think format, ``<think>\\n`` is put before the response and the text between the first
    and the second ``</think>`` is kept; without it the (prefixed) response is graded whole.
    """
    text = response
    think = prompt.endswith(THINK_START + "\n") or opts.add_think_before_answer
    if think:
        text = THINK_START + "\n" + response
    if not think or opts.no_split_think:
        return text, True
    parts = text.split(THINK_END)
    if len(parts) < 2:
        return text, False
    return parts[1], True


def luffy_score(prompt: str, response: str, ground_truth: str, opts: LuffyOptions) -> ScoreResult:
    """LUFFY's verdict on one response. ``pred`` is the last box of the graded text (for maj@n), if any."""
    text, split_ok = luffy_graded_text(prompt, response, opts)
    correct = split_ok and get_verifier().verify_text(ground_truth, text, "luffy")
    if opts.add_oat_evaluate:
        oat = oat_boxed_correct(text, ground_truth)
        correct = (correct or oat) if opts.any_true else oat
    pred = oat_boxed_answer(text)
    return ScoreResult(pred.strip() if pred is not None else None, bool(correct))


def score_with_protocol(
    protocol: str,
    data_source: str,
    prompt: str,
    responses: list[str],
    ground_truth: str,
    extra_info: Mapping[str, Any] | None = None,
    opts: LuffyOptions | None = None,
) -> list[ScoreResult]:
    """Score the responses to one problem under ``protocol`` (``prompt``: the rendered prompt text)."""
    if protocol == "trainer":
        return score_responses(data_source, responses, ground_truth, extra_info)
    if protocol != "luffy":
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    opts = opts or LuffyOptions()
    workers = get_verifier().num_workers
    if len(responses) <= 1 or workers == 1:
        return [luffy_score(prompt, r, ground_truth, opts) for r in responses]
    with ThreadPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(lambda r: luffy_score(prompt, r, ground_truth, opts), responses))
