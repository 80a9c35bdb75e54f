"""Re-score result files and summarise them per data source.

Accepts the generator's output and any jsonl whose lines carry at least ``data_source``, ``answer``
(or ``ground_truth``) and ``responses`` (a list of strings, or one string). Answers are extracted and
verified again under ``--protocol``: ``luffy`` (the default, LUFFY's own scoring: the think format is
decided from each line's ``prompt``, as LUFFY does, or forced with ``--add_think_before_answer True``;
``--add_oat_evaluate True``, ``--any_true True``, ``--no_split_think True`` as in LUFFY's script) or
``trainer`` (the trainer's reward: math-verify on the last boxed answer, option letters for multiple choice).

Examples::

    python eval_scripts/score.py results/model.jsonl --add_oat_evaluate True
    python eval_scripts/score.py --protocol trainer results/model.jsonl --summary_out results/model.summary.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import _bootstrap  # noqa: F401
from tqdm import tqdm

from luffy.cli import add_debug_flag, user_errors_exit
from luffy.data.errors import LuffyDataError
from luffy.evaluation.luffy_args import add_protocol_args, luffy_options, resolve_protocol_args
from luffy.evaluation.result_store import unique_records
from luffy.evaluation.summary import format_table, summarize, write_summary
from luffy.jsonl import iter_jsonl
from luffy.scoring import get_verifier
from luffy.scoring.ground_truth import BadGroundTruth, ground_truth_text
from luffy.scoring.protocols import LuffyOptions, score_with_protocol

logger = logging.getLogger("score")


class BadLineError(LuffyDataError):
    """A results line that cannot be scored."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="results jsonl file(s); their problems are pooled")
    p.add_argument("--summary_out", default=None, help="summary JSON (default: FIRST.summary.json; CSV beside it)")
    p.add_argument("--rescored_out", default=None, help="also write the re-scored lines to this jsonl")
    p.add_argument("--skip_bad", action="store_true", help="skip (and count) bad lines instead of failing")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    add_protocol_args(p, generate=False)
    add_debug_flag(p)
    return resolve_protocol_args(p.parse_args(argv), generate=False)


def normalize_line(row: Any, where: str) -> dict[str, Any]:
    """Check one input line and return the fields scoring needs."""
    if not isinstance(row, dict):
        raise BadLineError(f"{where}: expected a JSON object")
    source = row.get("data_source")
    if not isinstance(source, str) or not source.strip():
        raise BadLineError(f"{where}: 'data_source' must be a non-empty string, got {source!r}")
    answer = row.get("answer", row.get("ground_truth"))
    if answer is None and isinstance(row.get("reward_model"), dict):
        answer = row["reward_model"].get("ground_truth")
    if answer is None:
        raise BadLineError(f"{where}: missing 'answer' (or 'ground_truth')")
    try:
        answer = ground_truth_text(answer)
    except BadGroundTruth as err:
        raise BadLineError(f"{where}: {err}") from None
    responses = row.get("responses", row.get("response"))
    if isinstance(responses, str):
        responses = [responses]
    if not isinstance(responses, list) or not responses or not all(isinstance(r, str) for r in responses):
        raise BadLineError(f"{where}: 'responses' must be a non-empty list of strings")
    out = dict(row)
    out.update(data_source=source, answer=answer, responses=responses)
    return out


def score_line(row: dict[str, Any], protocol: str = "trainer", opts: LuffyOptions | None = None) -> dict[str, Any]:
    """Add ``extracted`` and ``correct`` to a normalised line, scored under ``protocol``.

    Under ``luffy`` the line's ``prompt`` (empty when absent) decides the think format.

    An answer whose check ran past the verifier's deadline (or whose ground truth already had) counts
    as wrong; the line's location (``_where``) is logged and ``timeouts`` records how many of its
    answers it was.
    """
    extra = {key: row[key] for key in ("multiple_choice", "n_choices", "choices") if row.get(key) is not None}
    stats = get_verifier().stats
    before = stats["deadline_misses"]
    prompt = row.get("prompt") if isinstance(row.get("prompt"), str) else ""
    scores = score_with_protocol(
        protocol, row["data_source"], prompt, row["responses"], row["answer"], extra or None, opts
    )
    row["timeouts"] = stats["deadline_misses"] - before
    if row["timeouts"]:
        logger.warning("%s: %d answer(s) past the verification deadline, counted wrong", row.get("_where"),
                       row["timeouts"])
    row["extracted"] = [s.pred for s in scores]
    row["correct"] = [s.correct for s in scores]
    return row


def read_lines(path: Path, skip_bad: bool) -> tuple[list[dict[str, Any]], int]:
    """Normalised lines of ``path`` and the number of bad lines skipped."""
    rows, bad = [], 0
    for lineno, row, problem in iter_jsonl(path):
        where = f"{path}:{lineno}"
        try:
            if problem is not None:
                raise BadLineError(f"{where}: {problem}")
            rows.append(normalize_line(row, where) | {"_where": where})
        except BadLineError as exc:
            if not skip_bad:
                raise
            bad += 1
            logger.warning("skipping %s", exc)
    return rows, bad


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    rows: list[dict[str, Any]] = []
    bad = 0
    try:
        for name in args.results:
            path = Path(name)
            if not path.is_file():
                raise BadLineError(f"results file not found: {path}")
            file_rows, file_bad = read_lines(path, args.skip_bad)
            rows += unique_records(file_rows, path)  # a problem id twice in one file counts once
            bad += file_bad
    except BadLineError as exc:
        raise BadLineError(f"{exc} (use --skip_bad to skip bad lines)") from None
    if bad:
        logger.warning("skipped %d bad line(s)", bad)
    if not rows:
        raise BadLineError(f"no scorable lines in {', '.join(args.results)}")
    opts = luffy_options(args)
    bar = tqdm(rows, desc="scoring", disable=args.no_progress, file=sys.stderr)
    scored = [score_line(r, args.protocol, opts) for r in bar]
    timeouts = sum(r.pop("timeouts") for r in scored)
    for r in scored:
        r.pop("_where", None)
    if args.rescored_out:
        with open(args.rescored_out, "w", encoding="utf-8") as fh:
            for r in scored:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    summary = summarize(scored)
    json_path = Path(args.summary_out) if args.summary_out else Path(args.results[0]).with_suffix(".summary.json")
    csv_path = json_path.with_suffix(".csv")
    write_summary(summary, json_path, csv_path)
    print(f"protocol: {args.protocol}")
    print(format_table(summary))
    print(f"\nlines scored: {len(scored)}; bad lines skipped: {bad}; "
          f"answers past the verification deadline: {timeouts}")
    print(f"summary: {json_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
