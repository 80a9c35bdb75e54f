"""Write an SFT parquet (prompt messages + target trace) for veRL 0.9.1's SFT trainer.

Reads anything ``prepare_train.py`` reads (usually its ``train.parquet``; raw inputs go through
the same normalisation and filters) and writes one row per (prompt, trace) pair::

    messages      list[{content, role}]   system + user turns of the prompt, then the assistant trace
    data_source   str
    extra_info    {index, split, row, uuid, source, target_truncated}

This is the multi-turn format of ``verl.utils.dataset.multiturn_sft_dataset.MultiTurnSFTDataset``
(loss on assistant turns only). Train with::

    python -m verl.trainer.sft_trainer data.train_files=data/openr1/sft_train.parquet \\
        data.val_files=data/openr1/sft_val.parquet data.messages_key=messages data.max_length=16384 ...

Example::

    python data/prepare_sft.py --input data/openr1/train.parquet --output data/openr1/sft_train.parquet
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pyarrow as pa

from luffy.atomic_outputs import RunOutputs
from luffy.cli import add_debug_flag, user_errors_exit
from luffy.data.errors import LuffyDataError
from luffy.data.pipeline import PrepareOptions, format_summary, no_rows_message, prepare
from luffy.data.schema import EXTRA_INFO_TYPE, MESSAGES_TYPE, rows_to_table

SFT_SCHEMA = pa.schema([("messages", MESSAGES_TYPE), ("data_source", pa.string()), ("extra_info", EXTRA_INFO_TYPE)])


def sft_rows(rows: list[dict]) -> list[dict]:
    """One SFT row per (prompt, trace): ``messages = prompt + [trace]``."""
    out = []
    for row in rows:
        for trace in row["target"]:
            out.append(
                {
                    "messages": [*row["prompt"], {"content": trace["content"], "role": "assistant"}],
                    "data_source": row["data_source"],
                    "extra_info": row["extra_info"],
                }
            )
    return out


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="prepare_sft.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", default="data/openr1/train.parquet", help="prepared parquet or any train input")
    parser.add_argument("--output", default="data/openr1/sft_train.parquet", help="SFT parquet to write")
    parser.add_argument("--val_output", help="where to write the held-out rows (with --val_size)")
    parser.add_argument("--val_size", type=int, default=0, help="rows held out into --val_output")
    parser.add_argument("--max_targets", type=int, default=1, help="traces per prompt, one row each (default 1)")
    parser.add_argument("--tokenizer", help="tokenizer for a token budget (with --max_target_tokens)")
    parser.add_argument("--max_target_tokens", type=int, help="token budget of one trace, EOS included")
    parser.add_argument("--seed", type=int, default=42, help="seed of the shuffle and the split")
    parser.add_argument("--num-proc", "--num_proc", dest="num_proc", type=int, default=1, help="worker processes")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.val_size and not args.val_output:
        parser.error("--val_size needs --val_output")
    options = PrepareOptions(
        max_targets=args.max_targets,
        tokenizer=args.tokenizer,
        max_target_tokens=args.max_target_tokens,
        val_size=args.val_size,
        seed=args.seed,
        num_proc=args.num_proc,
    )
    outputs = [(Path(args.output), "train")]
    if args.val_output:
        outputs.append((Path(args.val_output), "val"))
    for path, _ in outputs:
        if path.is_dir():
            raise LuffyDataError(f"{path} is a folder; give the parquet file to write")
    result = prepare(args.input, options)
    print(format_summary(result))
    if not result.train:
        raise LuffyDataError(f"{no_rows_message(result)}; nothing was written")
    # the SFT split(s) replace an earlier run's together, or not at all
    run = RunOutputs("prepare_sft.py", [args.input], {k: v for k, v in sorted(vars(args).items()) if k != "debug"})
    counts = {}
    for path, split in outputs:
        table = sft_rows(result.train if split == "train" else result.val)
        run.table(path, rows_to_table(table, SFT_SCHEMA), f"SFT {split} split")
        counts[path] = len(table)
    for path in run.commit():
        print(f"wrote {counts[path]} SFT rows: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
