"""Seconds per training step: LUFFY vs plain GRPO on the tiny CPU setup, measured in one run.

Runs ``exp_scripts/train_grpo_tiny_cpu.sh`` (veRL's GRPO) and ``exp_scripts/train_tiny_cpu.sh``
(LUFFY, no checkpoint, no validation, no resume) back to back with the same model, data, batch, group
size and lengths, reads veRL's ``timing_s/step`` from each console log and prints a table. The first
step (worker start-up, lazy actor creation) is reported apart; the ratio uses warm steps.

    python benchmarks/bench_step.py [--steps 6] [--batch 4] [--n 4] [--response_len 128]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEP_TIME = re.compile(r"timing_s/step:([0-9.]+)")


def run(script: str, env: dict[str, str], log: Path) -> list[float]:
    """Run one tiny training script; returns its per-step seconds."""
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(
            ["bash", str(REPO / "exp_scripts" / script)], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    if proc.returncode != 0:
        raise SystemExit(f"{script} failed (exit {proc.returncode}); see {log}")
    times = [float(t) for t in STEP_TIME.findall(log.read_text())]
    if not times:
        raise SystemExit(f"{script} logged no timing_s/step; see {log}")
    print(f"{script}: {len(times)} steps in {time.monotonic() - start:.0f} s wall", flush=True)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="training steps per run (first one is warm-up)")
    parser.add_argument("--batch", type=int, default=4, help="prompts per step")
    parser.add_argument("--n", type=int, default=4, help="samples per prompt")
    parser.add_argument("--n_prefix", type=int, default=1, help="LUFFY's off-policy samples per prompt")
    parser.add_argument("--response_len", type=int, default=128)
    parser.add_argument("--work_dir", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be >= 2 (the first step is warm-up)")

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="luffy_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    common = dict(
        os.environ,
        PYTHON=sys.executable,
        STEPS=str(args.steps),
        BATCH=str(args.batch),
        N=str(args.n),
        RESPONSE_LEN=str(args.response_len),
        MODEL_DIR=str(work / "tiny_model"),
        DATA_DIR=str(work / "data"),
    )
    grpo = run("train_grpo_tiny_cpu.sh", dict(common, OUT_DIR=str(work / "grpo")), work / "grpo.log")
    luffy = run(
        "train_tiny_cpu.sh",
        dict(
            common,
            OUT_DIR=str(work / "luffy"),
            N_PREFIX=str(args.n_prefix),
            RESUME="0",
            SAVE_FREQ="-1",
            TEST_FREQ="-1",
            DUMP_ROLLOUTS="0",
            FIGURE=str(work / "luffy.png"),
        ),
        work / "luffy.log",
    )

    rows = []
    for name, times in (("GRPO (veRL)", grpo), (f"LUFFY (n_prefix={args.n_prefix})", luffy)):
        warm = times[1:]
        rows.append((name, times[0], statistics.mean(warm), statistics.median(warm), min(warm)))
    ratio = rows[1][2] / rows[0][2]
    print(
        f"\ntiny CPU setup: {args.batch} prompts x n={args.n}, response <= {args.response_len} tokens, "
        f"{args.steps} steps (first = warm-up)"
    )
    print(f"{'trainer':<24} {'first s':>8} {'warm mean s':>12} {'warm median s':>14} {'warm min s':>11}")
    for name, first, mean, median, low in rows:
        print(f"{name:<24} {first:>8.2f} {mean:>12.2f} {median:>14.2f} {low:>11.2f}")
    print(f"\nLUFFY / GRPO seconds per warm step: {ratio:.2f}x (target <= 1.15x)")


if __name__ == "__main__":
    sys.exit(main())
