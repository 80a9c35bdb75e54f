"""Steps of ``exp_scripts/toy_reproduction.sh`` that are not training runs.

``prepare``: the task's train / held-out parquets and the format-pre-trained base model in ``--out``.
``report``: evaluate every saved policy on the held-out problems with plain transformers, print and
write the table (``table.md``, ``results.json``) and draw the figure; with ``--check_luffy_over_grpo``
exit 1 unless the held-out traces' mean log-probability is higher under LUFFY's final policy than under
GRPO's.

    python exp_scripts/toy_reproduction.py prepare --out /tmp/luffy_toy
    python exp_scripts/toy_reproduction.py report --out /tmp/luffy_toy --runs luffy grpo sft --figure fig.png
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from luffy.cli import add_debug_flag, user_errors_exit


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="data and base model")
    rep = sub.add_parser("report", help="held-out evaluation, table and figure")
    for p in (prep, rep):
        p.add_argument("--out", required=True, help="the toy's output folder")
        p.add_argument("--seed", type=int, default=0, help="seed of the split, the pre-training and the sampling")
        p.add_argument("--n_train", type=int, default=400, help="training problems (default 400)")
        p.add_argument("--n_val", type=int, default=100, help="held-out problems (default 100)")
        p.add_argument("--no_progress", action="store_true", help="no progress bars")
        add_debug_flag(p)
    prep.add_argument("--pretrain_steps", type=int, default=300, help="format pre-training steps (default 300)")
    prep.add_argument("--hidden_size", type=int, default=64, help="model hidden size (default 64)")
    rep.add_argument("--runs", nargs="+", required=True, choices=["luffy", "luffy_split", "grpo", "sft"],
                     help="runs to report")
    rep.add_argument("--figure", required=True, help="PNG to write")
    rep.add_argument("--check_luffy_over_grpo", action="store_true",
                     help="exit 1 unless LUFFY's (luffy_split's) final held-out trace log-prob is above GRPO's")
    return parser


def prepare(args: argparse.Namespace) -> int:
    from luffy.atomic_outputs import RunOutputs
    from luffy.toy.base_model import build_base_model
    from luffy.toy.task import format_pool, problems_table, split_problems

    out = Path(args.out)
    if (out / "base_model" / "model.safetensors").exists() and (out / "data" / "val.parquet").exists():
        print(f"data and base model already in {out}: kept (delete them to rebuild)")
        return 0
    train, val = split_problems(args.n_train, args.n_val, args.seed)
    run = RunOutputs("toy_reproduction.py", options={"n_train": args.n_train, "n_val": args.n_val, "seed": args.seed})
    run.table(out / "data" / "train.parquet", problems_table(train, "train"), "train split")
    run.table(out / "data" / "val.parquet", problems_table(val, "test"), "held-out split")
    run.commit()  # both or neither
    started = time.time()
    losses = build_base_model(out / "base_model", format_pool(exclude=val), hidden_size=args.hidden_size,
                              steps=args.pretrain_steps, seed=args.seed, progress=not args.no_progress)
    print(f"{len(train)} train / {len(val)} held-out problems in {out / 'data'}; base model in {out / 'base_model'} "
          f"(format pre-training: {args.pretrain_steps} steps, loss {losses['first_loss']:.2f} -> "
          f"{losses['last_loss']:.2f}, {time.time() - started:.0f} s)")
    return 0


def report(args: argparse.Namespace) -> int:
    from luffy.toy.report import evaluate_runs, plot, read_metrics, table, write_results
    from luffy.toy.task import split_problems

    out = Path(args.out)
    _, val = split_problems(args.n_train, args.n_val, args.seed)
    results = evaluate_runs(out, args.runs, val, args.seed, progress=not args.no_progress)
    metrics = {run: read_metrics(out / run / "metrics.jsonl") for run in args.runs}
    text = table(results, metrics)
    (out / "table.md").write_text(text + "\n")
    write_results(results, out / "results.json")
    plot(results, metrics, Path(args.figure),
         f"Toy task (carry-free addition), {len(val)} held-out problems, seed {args.seed}")
    print(text)
    print(f"table: {out / 'table.md'}  results: {out / 'results.json'}  figure: {args.figure}")
    if args.check_luffy_over_grpo:
        final = {run: results[run][max(results[run])] for run in ("luffy_split", "grpo")}
        luffy, grpo = final["luffy_split"].trace_logprob, final["grpo"].trace_logprob
        verdict = "higher" if luffy > grpo else "NOT higher"
        print(f"held-out trace log-prob: LUFFY {luffy:.3f} is {verdict} than GRPO {grpo:.3f}")
        if luffy <= grpo:
            return 1
    return 0


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "report" and args.check_luffy_over_grpo and not {"luffy_split", "grpo"} <= set(args.runs):
        raise SystemExit("--check_luffy_over_grpo needs --runs to include luffy_split and grpo")
    return prepare(args) if args.command == "prepare" else report(args)


if __name__ == "__main__":
    sys.exit(main())
