"""Seconds per training step, by phase: LUFFY vs plain GRPO on the CPU, at two scales, in one run.

For each scale it runs veRL's plain GRPO trainer (``exp_scripts/train_grpo_tiny_cpu.sh``) and LUFFY's
(``exp_scripts/train_tiny_cpu.sh``: no checkpoint, no validation, no resume) twice: once with the same
``n`` as GRPO (``n - n_prefix`` generated samples per prompt) and once with as many *generated* samples
as GRPO (``n + n_prefix``). Model, data, batch, lengths, learning rate, entropy bonus and advantage
normalisation are the same in every run; only LUFFY's own machinery differs.

Every run logs veRL's per-phase timers (``timing_s/gen``, ``old_log_prob``, ``adv``, ``update_actor``,
``update_weights``, ``step``) and LUFFY's own ``timing_s/adv_luffy`` (its work inside ``adv``: the
off-policy mask, the on-policy diagnostics, LUFFY's metrics); ``other`` is the rest of the step
(dataloader, batch balancing). The first step (worker start-up) is left out; tables give warm medians.

    python benchmarks/bench_step.py                       # both scales: 6 runs (37 min on a loaded 2-core machine)
    python benchmarks/bench_step.py --scales tiny --tiny_steps 8
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
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METRIC = re.compile(r"([A-Za-z_]+/[\w/]+):(-?[0-9.]+(?:e-?[0-9]+)?)")
PHASES = ("gen", "reward", "old_log_prob", "ref", "values", "adv", "update_critic", "update_actor", "update_weights")
NESTED = {"adv_luffy": "adv"}  # own timers inside a veRL phase
LR = "1e-3"
ENTROPY_COEFF = "0.001"
TARGET = 1.0  # LUFFY (same n) / GRPO, warm median seconds per step


@dataclass(frozen=True)
class Scale:
    name: str
    batch: int
    n: int
    response_len: int
    steps: int

    def describe(self) -> str:
        return f"{self.batch} prompts x n={self.n}, responses <= {self.response_len} tokens"


def parse_steps(log: Path) -> list[dict[str, float]]:
    """Metrics of each logged training step (console lines holding ``timing_s/step``)."""
    steps = []
    for line in log.read_text(errors="replace").splitlines():
        if "timing_s/step:" in line:
            steps.append({k: float(v) for k, v in METRIC.findall(line)})
    return steps


def run(label: str, script: str, env: dict[str, str], args: list[str], log: Path) -> list[dict[str, float]]:
    """Run one training script to completion; returns the per-step metrics of its console log."""
    start = time.monotonic()
    print(f"  {label:<34} ...", end="", flush=True)
    with log.open("w") as out:
        proc = subprocess.run(
            ["bash", str(REPO / "exp_scripts" / script), *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    if proc.returncode != 0:
        raise SystemExit(f"\n{script} failed (exit {proc.returncode}); see {log}")
    steps = parse_steps(log)
    if len(steps) < 2:
        raise SystemExit(f"\n{script} logged {len(steps)} steps with timing_s/step; see {log}")
    print(f" {len(steps)} steps, {time.monotonic() - start:.0f} s wall", flush=True)
    return steps


def phase_rows(steps: list[dict[str, float]]) -> dict[str, float]:
    """Warm medians (seconds) of each phase, ``other`` (step minus phases) and per-step sizes."""
    warm = steps[1:]
    rows: dict[str, float] = {}
    keys = [p for p in PHASES if any(f"timing_s/{p}" in s for s in warm)]
    for phase in keys:
        rows[phase] = statistics.median(s.get(f"timing_s/{phase}", 0.0) for s in warm)
        for nested, parent in NESTED.items():
            if parent == phase and any(f"timing_s/{nested}" in s for s in warm):
                rows[f"  {nested}"] = statistics.median(s.get(f"timing_s/{nested}", 0.0) for s in warm)
    rows["other"] = statistics.median(
        s["timing_s/step"] - sum(s.get(f"timing_s/{p}", 0.0) for p in PHASES) for s in warm
    )
    rows["step"] = statistics.median(s["timing_s/step"] for s in warm)
    rows["step (mean)"] = statistics.mean(s["timing_s/step"] for s in warm)
    rows["response length (mean)"] = statistics.mean(s.get("response_length/mean", float("nan")) for s in warm)
    rows["tokens per step"] = statistics.mean(s.get("perf/total_num_tokens", float("nan")) for s in warm)
    return rows


def print_profile(scale: Scale, runs: dict[str, list[dict[str, float]]]) -> None:
    """One table per scale: phases down, trainers across, plus LUFFY (same n) minus GRPO."""
    profiles = {name: phase_rows(steps) for name, steps in runs.items()}
    names = list(profiles)
    present = {k for p in profiles.values() for k in p}
    order = []  # veRL's phase order, each own timer under the phase it runs in, then the totals
    for phase in PHASES:
        order += [phase] if phase in present else []
        order += [f"  {n}" for n, parent in NESTED.items() if parent == phase and f"  {n}" in present]
    order += [k for p in profiles.values() for k in p if k not in order]
    order = list(dict.fromkeys(order))
    warm = min(len(s) for s in runs.values()) - 1
    print(f"\n[{scale.name}] {scale.describe()}; warm medians over {warm} steps, seconds")
    print(f"{'phase':<24}" + "".join(f"{n:>22}" for n in names) + f"{'LUFFY(same n)-GRPO':>20}")
    for key in order:
        values = [profiles[n].get(key, float("nan")) for n in names]
        fmt = "{:>22.0f}" if key in ("tokens per step", "response length (mean)") else "{:>22.3f}"
        delta = values[1] - values[0]
        shown = f"{delta:>+20.3f}" if delta == delta else f"{'':>20}"  # NaN: a timer GRPO lacks
        print(f"{key:<24}" + "".join(fmt.format(v) for v in values).replace("nan", "  -") + shown)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", nargs="+", default=["tiny", "gen"], choices=["tiny", "gen"])
    parser.add_argument("--n_prefix", type=int, default=1, help="LUFFY's off-policy samples per prompt")
    parser.add_argument("--tiny_batch", type=int, default=4, help="prompts per step, tiny scale")
    parser.add_argument("--tiny_n", type=int, default=4, help="GRPO's samples per prompt, tiny scale")
    parser.add_argument("--tiny_response_len", type=int, default=128)
    parser.add_argument("--tiny_steps", type=int, default=6, help="steps per run, the first one is warm-up")
    parser.add_argument("--gen_batch", type=int, default=8, help="prompts per step, generation-heavy scale")
    parser.add_argument("--gen_n", type=int, default=4, help="GRPO's samples per prompt, generation-heavy scale")
    parser.add_argument("--gen_response_len", type=int, default=512)
    parser.add_argument("--gen_steps", type=int, default=4, help="steps per run, the first one is warm-up")
    parser.add_argument("--work_dir", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args(argv)
    scales = {
        "tiny": Scale("tiny", args.tiny_batch, args.tiny_n, args.tiny_response_len, args.tiny_steps),
        "gen": Scale("gen", args.gen_batch, args.gen_n, args.gen_response_len, args.gen_steps),
    }
    for name in args.scales:
        if scales[name].steps < 2:
            parser.error(f"--{name}_steps must be >= 2 (the first step is warm-up)")
        if not 0 < args.n_prefix < scales[name].n:
            parser.error(f"--n_prefix must be in [1, --{name}_n - 1]")

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="luffy_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"logs in {work}")
    summary = []
    for name in args.scales:
        scale = scales[name]
        print(f"[{name}] {scale.describe()}, {scale.steps} steps per run")
        common = dict(
            os.environ,
            PYTHON=sys.executable,
            STEPS=str(scale.steps),
            BATCH=str(scale.batch),
            RESPONSE_LEN=str(scale.response_len),
            MODEL_DIR=str(work / "tiny_model"),
            DATA_DIR=str(work / "data"),
        )
        luffy_env = dict(
            common,
            N_PREFIX=str(args.n_prefix),
            LR=LR,
            RESUME="0",
            SAVE_FREQ="-1",
            TEST_FREQ="-1",
            DUMP_ROLLOUTS="0",
        )
        same_n, same_gen = scale.n, scale.n + args.n_prefix
        runs = {
            "GRPO": run(
                f"GRPO n={scale.n}",
                "train_grpo_tiny_cpu.sh",
                dict(common, N=str(scale.n), OUT_DIR=str(work / f"{name}_grpo")),
                [
                    f"actor_rollout_ref.actor.optim.lr={LR}",
                    f"actor_rollout_ref.actor.entropy_coeff={ENTROPY_COEFF}",
                    "algorithm.norm_adv_by_std_in_grpo=false",
                ],
                work / f"{name}_grpo.log",
            ),
            f"LUFFY n={same_n}": run(
                f"LUFFY n={same_n} ({same_n - args.n_prefix} generated)",
                "train_tiny_cpu.sh",
                dict(luffy_env, N=str(same_n), OUT_DIR=str(work / f"{name}_luffy"), FIGURE=str(work / "a.png")),
                [],
                work / f"{name}_luffy.log",
            ),
            f"LUFFY n={same_gen}": run(
                f"LUFFY n={same_gen} ({scale.n} generated)",
                "train_tiny_cpu.sh",
                dict(luffy_env, N=str(same_gen), OUT_DIR=str(work / f"{name}_luffy_gen"), FIGURE=str(work / "b.png")),
                [],
                work / f"{name}_luffy_gen.log",
            ),
        }
        print_profile(scale, runs)
        print()
        medians = [phase_rows(steps)["step"] for steps in runs.values()]
        summary.append((scale, medians))

    print(
        f"\nLUFFY (n_prefix={args.n_prefix}) / GRPO, seconds per warm step (median); target <= {TARGET:.1f}x at equal n"
    )
    print(
        f"{'scale':<6} {'setup':<44} {'GRPO s':>7} {'LUFFY same n':>13} {'ratio':>6} {'target':>7}"
        f" {'LUFFY same gen':>15} {'ratio':>6}"
    )
    for scale, (grpo, luffy, luffy_gen) in summary:
        ratio, ratio_gen = luffy / grpo, luffy_gen / grpo
        verdict = "met" if ratio <= TARGET else "MISSED"
        print(
            f"{scale.name:<6} {scale.describe():<44} {grpo:>7.2f} {luffy:>13.2f} {ratio:>5.2f}x"
            f" {verdict:>7} {luffy_gen:>15.2f} {ratio_gen:>5.2f}x"
        )


if __name__ == "__main__":
    sys.exit(main())
