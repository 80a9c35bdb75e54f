"""Score the same responses under the ``trainer`` and ``luffy`` protocols and count where they disagree.

Each response is scored whole and cut at fractions of its length (``--cuts``, by characters), as a
``max_tokens`` cut-off leaves it. LUFFY's verdicts are taken in four settings: its README command
(``--add_oat_evaluate True``: the OAT-style grader alone) and math-verify alone, each with a prompt that
ends in ``<think>\\n`` (the response's own leading ``<think>`` then belongs to the prompt) and with one
that does not. Each disagreement is put down to what the text looks like at the cut.

Input: jsonl lines with ``generations`` (OpenR1 schema) or ``responses`` (a results file), and ``answer``.

Example::

    python eval_scripts/compare_protocols.py ../shared/data/openr1_sample.jsonl --out protocols.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import _bootstrap  # noqa: F401

from luffy.cli import add_debug_flag, user_errors_exit
from luffy.data.errors import LuffyDataError
from luffy.jsonl import iter_jsonl
from luffy.scoring.ground_truth import BadGroundTruth, ground_truth_text
from luffy.scoring.math_verify_bounded import _juxtaposed_number
from luffy.scoring.oat_grader import oat_boxed_answer
from luffy.scoring.protocols import THINK_END, THINK_START, LuffyOptions, score_with_protocol

PLAIN_PROMPT = "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
THINK_PROMPT = PLAIN_PROMPT + THINK_START + "\n"
SETTINGS = {
    "README (OAT), plain prompt": (PLAIN_PROMPT, LuffyOptions(add_oat_evaluate=True)),
    "README (OAT), <think> prompt": (THINK_PROMPT, LuffyOptions(add_oat_evaluate=True)),
    "math-verify, plain prompt": (PLAIN_PROMPT, LuffyOptions()),
    "math-verify, <think> prompt": (THINK_PROMPT, LuffyOptions()),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="jsonl with generations (or responses) and answer")
    p.add_argument("--cuts", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0], help="fractions of length kept")
    p.add_argument("--out", default=None, help="also write the counts as JSON here")
    add_debug_flag(p)
    args = p.parse_args(argv)
    if any(not 0 < c <= 1 for c in args.cuts):
        p.error("--cuts must lie in (0, 1]")
    return args


def load_pairs(path: Path) -> list[tuple[str, str]]:
    """(response, answer) pairs; a line without an answer or responses stops with its line number."""
    if not path.is_file():
        raise LuffyDataError(f"input file not found: {path}")
    pairs = []
    for lineno, row, problem in iter_jsonl(path):
        where = f"{path}:{lineno}"
        if problem is not None or not isinstance(row, dict):
            raise LuffyDataError(f"{where}: {problem or 'expected a JSON object'}")
        responses = row.get("generations", row.get("responses"))
        if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
            raise LuffyDataError(f"{where}: 'generations' (or 'responses') must be a list of strings")
        try:
            answer = ground_truth_text(row.get("answer"))
        except BadGroundTruth as err:
            raise LuffyDataError(f"{where}: {err}") from None
        pairs += [(r, answer) for r in responses]
    if not pairs:
        raise LuffyDataError(f"{path}: no responses")
    return pairs


def cause(text: str) -> str:
    """What a (cut) response looks like, as far as the two protocols differ on it."""
    if THINK_END not in text:
        return "box inside an unfinished think block" if "\\boxed" in text else "no </think>, no box"
    after = text.split(THINK_END)[1]
    boxes = after.count("\\boxed")
    if boxes == 0:
        return "no box after </think>" if "\\boxed" not in text else "box only inside the think block"
    if boxes > 1:
        return "two or more boxes after </think>"
    box = oat_boxed_answer(after) or ""
    if _juxtaposed_number(box.replace(" ", "")):
        return "a digit stuck to the boxed answer (4\\pi1: math-verify reads it as x1)"
    return "one box after </think>, the graders differ"


def compare(pairs: list[tuple[str, str]], cuts: list[float]) -> dict[str, Any]:
    """Verdicts per cut and setting: accuracy, disagreements with ``trainer`` and their causes."""
    out: dict[str, Any] = {"responses": len(pairs), "cuts": {}}
    for cut in cuts:
        texts = [(r[: int(len(r) * cut)], a) for r, a in pairs]
        trainer = [score_with_protocol("trainer", "math", "", [t], a)[0].correct for t, a in texts]
        row: dict[str, Any] = {"trainer_accuracy": sum(trainer) / len(texts)}
        for name, (prompt, opts) in SETTINGS.items():
            luffy = []
            for t, a in texts:
                response = t.removeprefix(THINK_START + "\n") if prompt == THINK_PROMPT else t
                luffy.append(score_with_protocol("luffy", "math", prompt, [response], a, None, opts)[0].correct)
            differ = [i for i in range(len(texts)) if luffy[i] != trainer[i]]
            causes = Counter(
                f"{cause(texts[i][0])}: {'trainer' if trainer[i] else 'luffy'} says correct" for i in differ
            )
            row[name] = {
                "accuracy": sum(luffy) / len(texts),
                "differ": len(differ),
                "differ_share": len(differ) / len(texts),
                "causes": dict(causes.most_common()),
            }
        out["cuts"][f"{cut:g}"] = row
    return out


def format_report(result: dict[str, Any]) -> str:
    """A text table: one line per cut and setting."""
    lines = [f"{result['responses']} responses; verdicts that differ from --protocol trainer"]
    for cut, row in result["cuts"].items():
        lines.append(f"\ncut {cut}: trainer accuracy {100 * row['trainer_accuracy']:.1f}%")
        for name in SETTINGS:
            r = row[name]
            causes = "; ".join(f"{k} x{v}" for k, v in r["causes"].items()) or "-"
            lines.append(
                f"  {name:30s} accuracy {100 * r['accuracy']:5.1f}%  differ {r['differ']:3d} "
                f"({100 * r['differ_share']:4.1f}%)  {causes}"
            )
    return "\n".join(lines)


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    result = compare(load_pairs(Path(args.input)), args.cuts)
    print(format_report(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
