"""Steps of ``exp_scripts/toy_reproduction.sh`` other than the real trainer's runs.

``prepare``   the task's data (training parquet in seed 0's data order) and the pre-trained base model
``sweep``     every arm x seed through the in-process loop (``luffy.toy.lab``), results merged into
              sweep.json (a rerun arm/seed replaces its entry; entries of other settings are dropped)
``stepsize``  arms at several step sizes (lr x updates per step), from the base model (the pilot
              that picks the sweep's lr) or from a format-only base that solves nothing (the old
              regime, where the recipe arm collapsed)
``report``    evaluates the real trainer's saved weights, prints the claims table, the trainer check
              and the step-size tables, writes them (report.md, results.json) and draws the figure

    python exp_scripts/toy_reproduction.py prepare --out /tmp/luffy_toy
    python exp_scripts/toy_reproduction.py sweep --out /tmp/luffy_toy --seeds 0 1 2
    python exp_scripts/toy_reproduction.py report --out /tmp/luffy_toy --figure fig.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from luffy.cli import add_debug_flag, user_errors_exit

ARM_NAMES = ("luffy", "luffy_split", "grpo", "sft", "rl_sft_loss", "sft_rl", "hpt", "bread", "chord", "hint_anneal")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="data and base model")
    sweep = sub.add_parser("sweep", help="every arm and seed in the in-process loop")
    coll = sub.add_parser("stepsize", help="arms at several step sizes (the lr pilot, the old regime's collapse)")
    rep = sub.add_parser("report", help="trainer check, claims table, figure")
    for p in (prep, sweep, coll, rep):
        p.add_argument("--out", required=True, help="the toy's output folder")
        p.add_argument("--n_train", type=int, default=2000, help="training problems (default 2000)")
        p.add_argument("--n_eval", type=int, default=100, help="problems per held-out split (default 100)")
        add_debug_flag(p)
    for p in (prep, coll):
        p.add_argument("--pretrain_steps", type=int, default=1000, help="pre-training steps (default 1000)")
    prep.add_argument("--sft_rl_offset", type=int, default=0,
                      help="also write data/train_after_sft.parquet: seed 0's order from this prompt on (sft_rl's "
                           "trainer run)")
    prep.add_argument("--q", type=float, default=0.35,
                      help="probability that pre-training writes a carry (default 0.35)")
    for p in (sweep, coll):
        p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds (default 0-4)")
        p.add_argument("--steps", type=int, default=40, help="training steps (default 40)")
        p.add_argument("--batch", type=int, default=8, help="prompts per step (default 8)")
        p.add_argument("--n", type=int, default=8, help="samples per prompt (default 8)")
        p.add_argument("--eval_every", type=int, default=5, help="held-out evaluation every this many steps")
    sweep.add_argument("--arms", nargs="+", choices=ARM_NAMES, default=list(ARM_NAMES), help="arms (default all)")
    sweep.add_argument("--lr", type=float, default=1e-4, help="learning rate (default 1e-4)")
    sweep.add_argument("--mini_batch", type=int, default=None, help="prompts per update (default --batch: 1 update)")
    sweep.add_argument("--save_switch", action="store_true",
                       help="save seed 0's sft_rl weights where it switches to RL (the trainer check starts there)")
    coll.add_argument("--settings", nargs="+", required=True, help="arm:lr:updates per step, e.g. luffy:2e-3:4")
    coll.add_argument("--format_only", action="store_true",
                      help="from a base pre-trained on the format only (random digits after each '='): the old "
                           "regime, where no sample earns a reward")
    coll.add_argument("--name", required=True, help="results go to OUT/<name>.json")
    rep.add_argument("--figure", required=True, help="PNG to write")
    rep.add_argument("--trainer_arms", nargs="*", default=[], choices=ARM_NAMES,
                     help="arms run through the real trainer (OUT/trainer/<arm>)")
    rep.add_argument("--sft_rl_switch", type=int, default=0, help="step at which sft_rl's trainer run starts")
    rep.add_argument("--check_regime", action="store_true",
                     help="exit 1 unless the regime holds (the --quick check): see toy_reproduction.sh --help")
    return parser


def _data(args):
    from luffy.toy.task import make_data

    return make_data(args.n_train, args.n_eval, seed=0)


def prepare(args: argparse.Namespace) -> int:
    from luffy.atomic_outputs import RunOutputs
    from luffy.toy.base_model import build_base_model
    from luffy.toy.lab import data_order
    from luffy.toy.task import problems_table

    out = Path(args.out)
    data = _data(args)
    order = data_order(data.train, 0)
    options = {"n_train": args.n_train, "n_eval": args.n_eval, "sft_rl_offset": args.sft_rl_offset}
    run = RunOutputs("toy_reproduction.py", options=options)  # the data files replace the last run's together
    run.table(out / "data" / "train.parquet", problems_table(order, "train"), "train split")
    run.table(out / "data" / "val.parquet", problems_table(data.held_out["id"], "test"), "held-out split")
    if args.sft_rl_offset:
        k = args.sft_rl_offset % len(order)
        after_sft = problems_table(order[k:] + order[:k], "train")
        run.table(out / "data" / "train_after_sft.parquet", after_sft, "train split after SFT")
    run.commit()
    settings = {"q": args.q, "pretrain_steps": args.pretrain_steps, "n_train": args.n_train, "n_eval": args.n_eval}
    if _built_with(out / "base_model", settings):
        print(f"base model already in {out / 'base_model'} with these settings: kept")
        return 0
    started = time.time()
    losses = build_base_model(out / "base_model", data.excluded(), q=args.q, steps=args.pretrain_steps,
                              progress=False)
    _record(out / "base_model", settings)
    print(f"{len(data.train)} train problems, {args.n_eval} per held-out split; base model in {out / 'base_model'} "
          f"(q={args.q}, {args.pretrain_steps} steps, loss {losses['first_loss']:.2f} -> {losses['last_loss']:.3f}, "
          f"{time.time() - started:.0f} s)")
    return 0


SETTINGS_FILE = "toy_settings.json"


def _built_with(model_dir: Path, settings: dict) -> bool:
    """Whether ``model_dir`` holds a model built with exactly ``settings`` (else it is rebuilt)."""
    path = model_dir / SETTINGS_FILE
    return (model_dir / "model.safetensors").exists() and path.exists() and json.loads(path.read_text()) == settings


def _record(model_dir: Path, settings: dict) -> None:
    (model_dir / SETTINGS_FILE).write_text(json.dumps(settings) + "\n")


def _fmt(metrics: dict[str, float]) -> str:
    return (f"ID greedy {metrics['id_greedy']:.2f} pass@8 {metrics['id_pass8']:.2f} | retention "
            f"{metrics['retention_greedy']:.2f} transfer {metrics['transfer_greedy']:.2f} | entropy "
            f"{metrics['entropy']:.3f} trace log-prob {metrics['trace_logprob']:.2f}")


def sweep(args: argparse.Namespace) -> int:
    import torch

    from luffy.toy.evaluate import Prompts, evaluate, load_policy
    from luffy.toy.lab import LabConfig, eval_seed, run_arm

    torch.set_num_threads(1)
    out = Path(args.out)
    data = _data(args)
    cfg = LabConfig(steps=args.steps, batch=args.batch, mini_batch=args.mini_batch or args.batch, n=args.n,
                    lr=args.lr, eval_every=args.eval_every)
    path = out / "sweep.json"
    base_model, tokenizer = load_policy(out / "base_model")
    prompts = Prompts(tokenizer)
    started = time.time()
    base_evals = {seed: evaluate(base_model, prompts, data.held_out, seed=eval_seed(seed, 0)) for seed in args.seeds}
    results = _kept_results(path, asdict(cfg), base_evals)
    for seed in args.seeds:
        base_eval = base_evals[seed]
        print(f"seed {seed} base: {_fmt(base_eval)}", flush=True)
        for arm in args.arms:
            t0 = time.time()
            save_at = None
            if arm == "sft_rl" and seed == 0 and args.save_switch:
                save_at = {args.steps // 2: out / "sweep_sft_rl_switch"}
            run = run_arm(arm, out / "base_model", data, seed, cfg, base_eval=base_eval, save_at=save_at)
            results.setdefault(arm, {})[str(seed)] = run
            last = run["eval"][max(run["eval"])]
            print(f"  {arm:12s} seed {seed}: step {cfg.steps}: {_fmt(last)}  ({time.time() - t0:.0f} s)", flush=True)
            path.write_text(json.dumps(results))
    print(f"sweep: {len(args.seeds)} seeds x {len(args.arms)} arms in {time.time() - started:.0f} s -> {path}")
    return 0


def _kept_results(path: Path, config: dict, base_evals: dict[int, dict]) -> dict:
    """The runs of an earlier sweep in ``path`` that this sweep extends: same loop settings, and for the
    seeds evaluated now the same base model (step-0 metrics). Others are dropped, never mixed in."""
    if not path.exists():
        return {}
    kept: dict = {}
    dropped = 0
    for arm, by_seed in json.loads(path.read_text()).items():
        for seed, run in by_seed.items():
            base = base_evals.get(int(seed))
            if run.get("config") == config and (base is None or run["eval"].get("0") == base):
                kept.setdefault(arm, {})[seed] = run
            else:
                dropped += 1
    print(f"sweep.json: {sum(map(len, kept.values()))} earlier runs kept, {dropped} of other settings dropped")
    return kept


def stepsize(args: argparse.Namespace) -> int:
    import torch

    from luffy.toy.base_model import build_base_model
    from luffy.toy.lab import LabConfig, run_arm

    torch.set_num_threads(1)
    out = Path(args.out)
    data = _data(args)
    base = out / "base_model"
    if args.format_only:
        base = out / "format_only_base"
        settings = {"format_only": True, "pretrain_steps": args.pretrain_steps, "n_train": args.n_train,
                    "n_eval": args.n_eval}
        if not _built_with(base, settings):
            t0 = time.time()
            build_base_model(base, data.excluded(), q=1.0, steps=args.pretrain_steps, format_only=True,
                             progress=False)
            _record(base, settings)
            print(f"format-only base model in {base} ({time.time() - t0:.0f} s)")
    results = {}
    for setting in args.settings:
        arm, lr, updates = setting.split(":")
        cfg = LabConfig(steps=args.steps, batch=args.batch, mini_batch=args.batch // int(updates), n=args.n,
                        lr=float(lr), eval_every=args.eval_every)
        for seed in args.seeds:
            t0 = time.time()
            run = run_arm(arm, base, data, seed, cfg)
            results.setdefault(setting, {})[str(seed)] = run
            ev = run["eval"]
            curve = ", ".join(f"{ev[s]['trace_logprob']:.1f}" for s in sorted(ev))
            accs = ", ".join(f"{ev[s]['id_greedy']:.2f}" for s in sorted(ev))
            print(f"  {setting} seed {seed}: trace log-prob {curve}; ID greedy {accs} ({time.time() - t0:.0f} s)",
                  flush=True)
    (out / f"{args.name}.json").write_text(json.dumps(results))
    return 0


def report(args: argparse.Namespace) -> int:
    from luffy.toy.report import (
        check_regime,
        claims_table,
        evaluate_trainer,
        final_table,
        load_sweep,
        load_train_stats,
        plot,
        stepsize_table,
        trainer_check_table,
    )

    out = Path(args.out)
    data = _data(args)
    sweep_results = load_sweep(out / "sweep.json")
    trainer = evaluate_trainer(out, args.trainer_arms, data, sft_rl_switch=args.sft_rl_switch)
    parts = ["## Claims at the final step, every seed", claims_table(sweep_results, "final"),
             "## Claims on the mean over the run's evaluations (learning speed), every seed",
             claims_table(sweep_results, "mean"),
             "## Final held-out metrics (mean over seeds, min-max)", final_table(sweep_results)]
    if trainer:
        parts += ["## Real trainer (seed 0) vs the loop's seed spread", trainer_check_table(sweep_results, trainer)]
    for name, title in (("pilot", "Step-size pilot (from the base model)"),
                        ("collapse", "Old regime (a format-only base that solves nothing)")):
        if (out / f"{name}.json").exists():
            parts += [f"## {title}", stepsize_table(json.loads((out / f"{name}.json").read_text()))]
    text = "\n\n".join(parts)
    (out / "report.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"trainer": trainer}, indent=1) + "\n")
    plot(sweep_results, trainer, Path(args.figure))
    print(text)
    print(f"report: {out / 'report.md'}  figure: {args.figure}")
    if args.check_regime:
        problems = check_regime(sweep_results, load_train_stats(out / "sweep.json"))
        for line in problems:
            print(f"regime check failed: {line}")
        return 1 if problems else 0
    return 0


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return {"prepare": prepare, "sweep": sweep, "stepsize": stepsize, "report": report}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
