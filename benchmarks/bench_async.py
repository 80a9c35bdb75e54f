"""LUFFY in veRL's three V1 modes on the CPU: sync vs colocate_async vs separate_async, in one run.

Each mode trains LUFFY with ``exp_scripts/train_tiny_cpu.sh`` (``TRAINER_MODE``; no checkpoint, no
validation, no resume) at bench_step.py's generation-heavy scale by default: 8 prompts x n = 4 (1 whole
target, 3 generated), responses <= 512 tokens. Model, data, batch, lengths and learning rate are the
same in every run. ``separate_async`` adds one standalone rollout replica (``ROLLOUT_RANKS=1``, a logical
GPU of its own); on a CPU machine it still shares the same cores with training.

Reported per mode, over warm steps (the first step, worker start-up, is left out): seconds per step
(median and mean), trained samples per second (samples per step / mean step), the time the trainer
waited for samples (``timing_s/gen``), and how many weight versions the generated samples lagged
(``luffy/on_policy_staleness/mean``; the worst case of partial rollouts in ``_worst/max``), and the mean
response length (generation time depends on it).

    python benchmarks/bench_async.py                        # 3 runs
    python benchmarks/bench_async.py --batch 4 --response_len 128 --steps 6
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import LR, run  # noqa: E402  (the same runner and console-log parser)

MODES = ("sync", "colocate_async", "separate_async")


def summarise(steps: list[dict[str, float]], samples_per_step: int) -> dict[str, float]:
    """Warm-step figures of one run (the first step is left out)."""
    warm = steps[1:]

    def mean(key: str) -> float:
        values = [s[key] for s in warm if key in s]
        return statistics.mean(values) if values else float("nan")

    step_mean = mean("timing_s/step")
    return {
        "s/step (median)": statistics.median(s["timing_s/step"] for s in warm),
        "s/step (mean)": step_mean,
        "samples/s": samples_per_step / step_mean,
        "wait for samples (gen) s": mean("timing_s/gen"),
        "update_weights s": mean("timing_s/update_weights"),
        "response length (mean)": mean("response_length/mean"),
        "staleness (mean)": mean("luffy/on_policy_staleness/mean"),
        "staleness worst (max)": max((s.get("luffy/on_policy_staleness_worst/max", 0.0) for s in warm), default=0.0),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--batch", type=int, default=8, help="prompts per step")
    parser.add_argument("--n", type=int, default=4, help="samples per prompt, targets included")
    parser.add_argument("--n_prefix", type=int, default=1, help="off-policy targets per prompt")
    parser.add_argument("--response_len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5, help="steps per run, the first one is warm-up")
    parser.add_argument("--work_dir", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be >= 2 (the first step is warm-up)")
    if not 0 < args.n_prefix < args.n:
        parser.error("--n_prefix must be in [1, --n - 1]")

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="luffy_bench_async_"))
    work.mkdir(parents=True, exist_ok=True)
    setup = f"{args.batch} prompts x n={args.n} ({args.n_prefix} target), responses <= {args.response_len} tokens"
    print(f"logs in {work}\n{setup}, {args.steps} steps per run")
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        STEPS=str(args.steps),
        BATCH=str(args.batch),
        N=str(args.n),
        N_PREFIX=str(args.n_prefix),
        RESPONSE_LEN=str(args.response_len),
        LR=LR,
        MODEL_DIR=str(work / "tiny_model"),
        DATA_DIR=str(work / "data"),
        RESUME="0",
        SAVE_FREQ="-1",
        TEST_FREQ="-1",
        DUMP_ROLLOUTS="0",
        FIGURE="none",
    )
    results = {}
    for mode in args.modes:
        mode_env = dict(env, TRAINER_MODE=mode, OUT_DIR=str(work / mode))
        steps = run(mode, "train_tiny_cpu.sh", mode_env, [], work / f"{mode}.log")
        results[mode] = summarise(steps, args.batch * args.n)

    base = results.get("sync")
    print(f"\n{setup}; warm steps: {args.steps - 1} per run")
    print(f"{'':<26}" + "".join(f"{mode:>16}" for mode in results))
    for key in next(iter(results.values())):
        print(f"{key:<26}" + "".join(f"{r[key]:>16.3f}" for r in results.values()))
    if base is not None:
        ratios = [r["samples/s"] / base["samples/s"] for r in results.values()]
        print(f"{'samples/s vs sync':<26}" + "".join(f"{ratio:>15.2f}x" for ratio in ratios))


if __name__ == "__main__":
    sys.exit(main())
