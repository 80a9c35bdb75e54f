"""Build an evaluation parquet (``valid.all.parquet`` style) from local jsonl / json / parquet files.

Each input row is one problem: ``data_source`` (aime24, aime25, amc, math500, minerva,
olympiad_bench; multiple choice: arc_c, gpqa_diamond, mmlu_pro), ``problem``, ``answer`` and, for
multiple choice, ``choices`` (list of strings; the answer is the letter, a 0-based index or the
choice text). Rows already in the RL schema (``prompt``, ``reward_model``) pass through. The
prompt is LUFFY's system prompt plus the problem (choices rendered as the benchmark files do).

``--copies`` repeats problems for avg@k: ``--copies 32`` for every source, or
``--copies aime24=32,aime25=32,amc=32`` per source (copies are adjacent and share their index).
``--benchmark_names`` renames aime24 -> aime, math500 -> math, gpqa_diamond -> gpqa, the names the
shared benchmark parquets use.

Example::

    python data/prepare_eval.py --input eval.jsonl --output data/eval/valid.all.parquet \\
        --copies aime24=32,aime25=32,amc=32
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path

from luffy.atomic_outputs import RunOutputs
from luffy.cli import add_debug_flag, user_errors_exit
from luffy.data.duplicates import warn_duplicates
from luffy.data.errors import LuffyDataError
from luffy.data.eval_rows import BENCHMARK_NAMES, EVAL_SCHEMA, eval_problem, eval_rows
from luffy.data.readers import UnreadableRow, open_rows
from luffy.data.schema import TEMPLATES, rows_to_table

logger = logging.getLogger("prepare_eval")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prepare_eval.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", nargs="+", required=True, help="jsonl / json / parquet files or folders")
    parser.add_argument("--output", default="data/eval/valid.all.parquet", help="parquet file to write")
    parser.add_argument("--data_source", help="data_source for rows that lack one")
    parser.add_argument("--copies", default="1", help="N, or SOURCE=N[,SOURCE=N...] (default 1)")
    parser.add_argument("--benchmark_names", action="store_true",
                        help="rename aime24/math500/gpqa_diamond to aime/math/gpqa as in the shared parquets")
    parser.add_argument("--template", choices=TEMPLATES, default="own", help="prompt template (default own)")
    return add_debug_flag(parser)


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    problems, skipped, labels = [], 0, []
    out = Path(args.output)
    if out.is_dir():
        raise LuffyDataError(f"--output {out} is a folder; give the parquet file to write")
    for source in args.input:
        rows = open_rows(source)
        row_no = -1
        for row_no, row in enumerate(rows.rows):
            try:
                if isinstance(row, UnreadableRow):
                    raise LuffyDataError(row.reason)
                problems.append(eval_problem(row_no, row, args.data_source, args.template))
                labels.append(f"{source} row {row_no}")
            except LuffyDataError as err:
                skipped += 1
                logger.warning("skipped row %d of %s: %s", row_no, source, err)
        if row_no < 0:
            raise LuffyDataError(f"{source} holds no rows (an empty file?)")
    warn_duplicates(
        ", ".join(args.input), ((n, (p.data_source, p.prompt[-1]["content"]), None) for n, p in zip(labels, problems))
    )
    rows_out = eval_rows(problems, args.copies, BENCHMARK_NAMES if args.benchmark_names else None)
    if not rows_out:
        raise LuffyDataError(f"no usable evaluation rows in {', '.join(args.input)} ({skipped} skipped, see above)")
    run = RunOutputs("prepare_eval.py", args.input, {k: v for k, v in sorted(vars(args).items()) if k != "debug"})
    run.table(out, rows_to_table(rows_out, EVAL_SCHEMA), "--output")
    run.commit()
    per_source = Counter(r["data_source"] for r in rows_out)
    print(f"problems: {len(problems)}  rows: {len(rows_out)}  skipped: {skipped}")
    for name, count in per_source.items():
        print(f"  {name:<16}{count}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
