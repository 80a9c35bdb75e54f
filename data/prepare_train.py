"""Prepare LUFFY training data: prompts + off-policy target traces in veRL's RL parquet schema.

With no arguments it prepares LUFFY's published set (hub name ``Elliott/Openr1-Math-46k-8192``,
needs network) into ``data/openr1/train.parquet``, the file ``exp_scripts/train.sh`` reads. With
``--complement`` the defaults are LUFFY's SFT-then-RL problem set instead (``Elliott/Openr1-Math-48k-Complement``,
disjoint from the SFT traces) and ``data/openr1_complement``, the folder ``exp_scripts/train_sft_rl.sh`` reads.

Input (``--input``): a hub dataset name, or a local ``.parquet`` / ``.jsonl`` / ``.json`` file, a
folder of parquet files, or a ``datasets`` ``save_to_disk`` folder. Rows may be raw OpenR1-Math
(``problem``, ``answer``, ``generations``, ``correctness_math_verify``: the target is the first
generation marked correct; unmarked generations are used only when ``--verify_targets`` accepts
them) or already prepared (``prompt``, ``target``, ``reward_model``: validated and passed through).

Output (``--output_dir``): ``train.parquet``, ``val.parquet`` (with ``--val_size``) and
``skipped.jsonl`` (one line per left-out row: input row number, reason, detail). They replace an earlier
run's files together or not at all (``luffy/atomic_outputs.py``); a run that keeps no row writes nothing.

Filters, each counted in the summary: unreadable row, missing/null/empty problem, missing answer,
missing trace, no trace marked correct, malformed prepared row, trace over the token budget
(``--tokenizer`` + ``--max_target_tokens``; ``--overlong drop|truncate``), trace answer judged
wrong by math-verify (``--verify_targets``), duplicate problem (first occurrence kept).

Examples::

    python data/prepare_train.py
    python data/prepare_train.py --complement
    python data/prepare_train.py --input raw.jsonl --output_dir data/openr1 \\
        --tokenizer Qwen/Qwen2.5-Math-7B --max_target_tokens 8192 --val_size 500 --num-proc 2
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from luffy.atomic_outputs import outputs_are_current
from luffy.cli import add_debug_flag, user_errors_exit
from luffy.data.pipeline import PrepareOptions, check_output_dir, format_summary, prepare, write_outputs
from luffy.data.schema import TEMPLATES

DEFAULT_INPUT = "Elliott/Openr1-Math-46k-8192"
DEFAULT_OUTPUT_DIR = "data/openr1"
COMPLEMENT_INPUT = "Elliott/Openr1-Math-48k-Complement"
COMPLEMENT_OUTPUT_DIR = "data/openr1_complement"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prepare_train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", help=f"file, folder or hub name (default {DEFAULT_INPUT}, or {COMPLEMENT_INPUT} "
                        "with --complement)")
    parser.add_argument("--output_dir",
                        help=f"default {DEFAULT_OUTPUT_DIR} ({COMPLEMENT_OUTPUT_DIR} with --complement)")
    parser.add_argument("--complement", action="store_true",
                        help="defaults for LUFFY's SFT-then-RL problem set (exp_scripts/train_sft_rl.sh)")
    parser.add_argument("--tokenizer", help="tokenizer folder or name for the token budget and template check")
    parser.add_argument("--max_target_tokens", type=int, help="token budget of one trace, EOS included")
    parser.add_argument("--overlong", choices=["drop", "truncate"], default="drop",
                        help="traces over the budget: drop them (default) or cut them (they lose the answer)")
    parser.add_argument("--verify_targets", action="store_true",
                        help="keep only traces whose final answer math-verify accepts")
    parser.add_argument("--max_targets", type=int, default=1, help="traces kept per prompt (default 1)")
    parser.add_argument("--val_size", type=int, default=0, help="rows held out into val.parquet (default 0)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the shuffle and the split (default 42)")
    parser.add_argument("--no_shuffle", action="store_true", help="keep input order")
    parser.add_argument("--num-proc", "--num_proc", dest="num_proc", type=int, default=1,
                        help="worker processes for tokenisation and verification (output does not change)")
    parser.add_argument("--template", choices=TEMPLATES, default="own",
                        help="own: LUFFY system prompt + problem (default); no_system: problem only")
    parser.add_argument("--data_source", default="openr1", help="data_source of raw rows (default openr1)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    parser.add_argument("--keep_current", action="store_true",
                        help="do nothing when --output_dir already holds this run's outputs: made from the same "
                        "input bytes (sha256; a hub name: the same name) with the same options, all from one run")
    return add_debug_flag(parser)


def run_options(args: argparse.Namespace) -> dict:
    """The options that shape the output, as recorded beside it (``--keep_current`` compares them)."""
    skip = {"input", "output_dir", "num_proc", "no_progress", "debug", "keep_current"}
    return {k: v for k, v in sorted(vars(args).items()) if k not in skip}


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.input is None:
        args.input = COMPLEMENT_INPUT if args.complement else DEFAULT_INPUT
    if args.output_dir is None:
        args.output_dir = COMPLEMENT_OUTPUT_DIR if args.complement else DEFAULT_OUTPUT_DIR
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    options = PrepareOptions(
        template=args.template,
        data_source=args.data_source,
        max_targets=args.max_targets,
        tokenizer=args.tokenizer,
        max_target_tokens=args.max_target_tokens,
        overlong=args.overlong,
        verify_targets=args.verify_targets,
        val_size=args.val_size,
        seed=args.seed,
        shuffle=not args.no_shuffle,
        num_proc=args.num_proc,
        progress=not args.no_progress,
    )
    if args.keep_current and outputs_are_current(
        Path(args.output_dir) / "train.parquet", [args.input], run_options(args)
    ):
        print(f"{args.output_dir}/train.parquet is current (same input and options): kept")
        return 0
    start = time.perf_counter()
    check_output_dir(args.output_dir)  # before the work, not after it
    result = prepare(args.input, options)
    print(format_summary(result))
    # train, val and skipped.jsonl replace an earlier run's together, or (no usable row) not at all
    paths = write_outputs(result, args.output_dir, [args.input], run_options(args))
    print("\n".join(f"wrote {name}: {path}" for name, path in paths.items()))
    print(f"time: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
