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

Finer rows come from ``luffy.profiling``'s spans (``LUFFY_PROFILE_DIR``, set for every run): inside
``gen`` the agent loops, the rollout server's batched decode and reward scoring; inside the actor phases
the worker's TransferQueue transfers, the engine's forward/backward and optimizer step; the trainer's
own TransferQueue calls; and the time between two steps that veRL's ``step`` timer leaves out (metrics,
logging, clearing TransferQueue). Each row shows its share of the step period (one step start to the next).

The floor (``benchmarks/step_floor.py``) does each run's work in plain transformers, in this process:
the same prompts, samples per prompt, response budget, one log-prob pass and one update; the last table
gives each trainer's step over its floor.

    python benchmarks/bench_step.py                       # both scales: 6 runs
    python benchmarks/bench_step.py --scales tiny --tiny_steps 8
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from luffy.profiling import ENV as PROFILE_ENV
from luffy.profiling import covered, read_spans

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_floor import FloorWork, measure_floor  # noqa: E402  (benchmarks/ is not a package)

REPO = Path(__file__).resolve().parents[1]
METRIC = re.compile(r"([A-Za-z_]+/[\w/]+):(-?[0-9.]+(?:e-?[0-9]+)?)")
PHASES = ("gen", "reward", "old_log_prob", "ref", "values", "adv", "update_critic", "update_actor", "update_weights")
NESTED = {"adv_luffy": "adv"}  # own timers inside a veRL phase
LR = "1e-3"
ENTROPY_COEFF = "0.001"
TARGET = 1.0  # LUFFY (same n) / GRPO, warm median seconds per step
FLOOR_TARGET = 2.5  # LUFFY (same n) tiny step / its plain-transformers floor

# finer rows: (label, the veRL phase it sits in, span name, only the parts inside this span, or None)
DETAIL = (
    ("agent loops (any running)", "gen", "rollout/agent_loop (per sample)", None),
    ("rollout server decode", "gen", "rollout/decode (batch)", None),
    ("reward scoring", "gen", "rollout/reward", None),
    ("actor: TransferQueue get/put", "old_log_prob", "actor/tq_", "actor/compute_log_prob (call)"),
    ("actor: forward", "old_log_prob", "actor/forward_backward", "actor/compute_log_prob (call)"),
    ("actor: TransferQueue get/put", "update_actor", "actor/tq_", "actor/update_actor (call)"),
    ("actor: forward+backward", "update_actor", "actor/forward_backward", "actor/update_actor (call)"),
    ("actor: optimizer step", "update_actor", "actor/optimizer_step", "actor/update_actor (call)"),
)


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
    """Run one training script to completion; returns the per-step metrics of its console log.

    The run's spans (``luffy.profiling``) go to ``<log>.spans/``; :func:`span_rows` reads them.
    """
    start = time.monotonic()
    print(f"  {label:<34} ...", end="", flush=True)
    spans = log.with_suffix(".spans")
    shutil.rmtree(spans, ignore_errors=True)
    with log.open("w") as out:
        proc = subprocess.run(
            ["bash", str(REPO / "exp_scripts" / script), *args],
            cwd=REPO,
            env={**env, PROFILE_ENV: str(spans)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if proc.returncode != 0:
        raise SystemExit(f"\n{script} failed (exit {proc.returncode}); see {log}")
    steps = parse_steps(log)
    if len(steps) < 2:
        raise SystemExit(f"\n{script} logged {len(steps)} steps with timing_s/step; see {log}")
    print(f" {len(steps)} steps, {time.monotonic() - start:.0f} s wall", flush=True)
    return steps


def span_rows(spans_dir: Path) -> dict[str, float]:
    """Warm medians (seconds per step) of the :data:`DETAIL` rows, the step period and the time outside
    ``step()``, from a run's spans; empty when the run wrote none. Each warm step runs from one call of
    the trainer's ``step()`` to the next; overlapping spans (concurrent samples) count once."""
    spans = read_spans(spans_dir) if spans_dir.is_dir() else []
    starts = [sp for sp in spans if sp["name"] == "trainer/step (phases)"]
    per_step: dict[str, list[float]] = {}
    for this, nxt in zip(starts[1:], starts[2:]):  # the first step (start-up) is left out
        lo, hi = this["start"], nxt["start"]
        inside = [sp for sp in spans if sp["end"] > lo and sp["start"] < hi]
        per_step.setdefault("period", []).append(hi - lo)
        per_step.setdefault("outside step()", []).append(hi - this["end"])
        for label, phase, prefix, within in DETAIL:
            parts = [(sp["start"], sp["end"]) for sp in inside if sp["name"].startswith(prefix)]
            if within is not None:
                windows = [(sp["start"], sp["end"]) for sp in inside if sp["name"] == within]
                parts = [(max(a, c), min(b, d)) for a, b in parts for c, d in windows if b > c and a < d]
            per_step.setdefault(f"{phase}:{label}", []).append(covered(parts, lo, hi))
        trainer_tq = [(sp["start"], sp["end"]) for sp in inside if sp["name"].startswith("trainer/tq_")]
        per_step.setdefault("trainer: TransferQueue calls", []).append(covered(trainer_tq, lo, hi))
    return {k: statistics.median(v) for k, v in per_step.items()}


def phase_rows(steps: list[dict[str, float]], spans_dir: Path | None = None) -> dict[str, float]:
    """Warm medians (seconds) of each phase (with its :data:`DETAIL` rows when ``spans_dir`` has spans),
    ``other`` (step minus phases), the step, the period between steps, and per-step sizes."""
    warm = steps[1:]
    rows: dict[str, float] = {}
    detail = span_rows(spans_dir) if spans_dir is not None else {}
    keys = [p for p in PHASES if any(f"timing_s/{p}" in s for s in warm)]
    for phase in keys:
        rows[phase] = statistics.median(s.get(f"timing_s/{phase}", 0.0) for s in warm)
        for nested, parent in NESTED.items():
            if parent == phase and any(f"timing_s/{nested}" in s for s in warm):
                rows[f"  {nested}"] = statistics.median(s.get(f"timing_s/{nested}", 0.0) for s in warm)
        for key, value in detail.items():
            if key.startswith(f"{phase}:"):
                rows[f"  {key.split(':', 1)[1]}"] = value
    rows["other"] = statistics.median(
        s["timing_s/step"] - sum(s.get(f"timing_s/{p}", 0.0) for p in PHASES) for s in warm
    )
    if "trainer: TransferQueue calls" in detail:
        rows["trainer: TransferQueue calls"] = detail["trainer: TransferQueue calls"]
    rows["step"] = statistics.median(s["timing_s/step"] for s in warm)
    if "period" in detail:
        rows["outside step() (metrics, log)"] = detail["outside step()"]
        rows["period (step to step)"] = detail["period"]
    rows["step (mean)"] = statistics.mean(s["timing_s/step"] for s in warm)
    rows["response length (mean)"] = statistics.mean(s.get("response_length/mean", float("nan")) for s in warm)
    rows["tokens per step"] = statistics.mean(s.get("perf/total_num_tokens", float("nan")) for s in warm)
    return rows


def print_profile(scale: Scale, runs: dict[str, tuple[list[dict[str, float]], Path]]) -> dict[str, dict]:
    """One table per scale: phases down (finer rows indented under theirs), trainers across, each cell
    seconds and share of the step period, plus LUFFY (same n) minus GRPO. Returns the profiles."""
    profiles = {name: phase_rows(steps, spans) for name, (steps, spans) in runs.items()}
    names = list(profiles)
    order = list(dict.fromkeys(k for p in profiles.values() for k in p))  # phase_rows keeps veRL's order
    warm = min(len(steps) for steps, _ in runs.values()) - 1
    print(f"\n[{scale.name}] {scale.describe()}; warm medians over {warm} steps, seconds (share of the period)")
    print(f"{'phase':<34}" + "".join(f"{n:>20}" for n in names) + f"{'LUFFY(same n)-GRPO':>20}")
    for key in order:
        values = [profiles[n].get(key, float("nan")) for n in names]
        cells = []
        for name, v in zip(names, values):
            period = profiles[name].get("period (step to step)", profiles[name]["step"])
            if key in ("tokens per step", "response length (mean)"):
                cells.append(f"{v:>20.0f}")
            elif v != v:  # NaN: a timer this trainer lacks
                cells.append(f"{'-':>20}")
            else:
                cells.append(f"{v:>12.3f} ({100 * v / period:>3.0f}%)")
        delta = values[1] - values[0]
        shown = f"{delta:>+20.3f}" if delta == delta else f"{'':>20}"
        print(f"{key:<34}" + "".join(cells) + shown)
    return profiles


def print_floor(
    scale: Scale, floors: dict[str, dict[str, float]], profiles: dict[str, dict], threads: int
) -> list[float]:
    """Each trainer's step period beside its plain-transformers floor; returns the ratios."""
    print(
        f"\n[{scale.name}] plain-transformers floor of the same work (benchmarks/step_floor.py, {threads} "
        f"thread{'s' if threads > 1 else ''}), seconds"
    )
    cols = ("gen", "reward", "old_log_prob", "update_actor", "step")
    print(f"{'run':<14}" + "".join(f"{c:>13}" for c in cols) + f"{'trainer':>10}{'ratio':>8}")
    ratios = []
    for name, floor in floors.items():
        trainer = profiles[name].get("period (step to step)", profiles[name]["step"])
        ratios.append(trainer / floor["step"])
        print(f"{name:<14}" + "".join(f"{floor[c]:>13.3f}" for c in cols) + f"{trainer:>10.3f}{ratios[-1]:>7.2f}x")
    return ratios


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
    parser.add_argument(
        "--floor_threads",
        type=int,
        default=1,
        help="torch threads of the floor (default 1: each process of the CPU run has one, OMP_NUM_THREADS=1)",
    )
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
        logs = {"GRPO": work / f"{name}_grpo.log", f"LUFFY n={same_n}": work / f"{name}_luffy.log",
                f"LUFFY n={same_gen}": work / f"{name}_luffy_gen.log"}
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
        profiles = print_profile(scale, {k: (steps, logs[k].with_suffix(".spans")) for k, steps in runs.items()})
        data = work / "data" / "train.parquet"
        works = {  # (sequences per prompt, of which sampled)
            "GRPO": (scale.n, scale.n),
            f"LUFFY n={same_n}": (same_n, same_n - args.n_prefix),
            f"LUFFY n={same_gen}": (same_gen, scale.n),
        }
        floors = {
            k: measure_floor(
                work / "tiny_model",
                data,
                FloorWork(scale.batch, n, gen, scale.response_len),
                threads=args.floor_threads,
            )
            for k, (n, gen) in works.items()
        }
        ratios = print_floor(scale, floors, profiles, args.floor_threads)
        print()
        medians = [phase_rows(steps)["step"] for steps in runs.values()]
        summary.append((scale, medians, ratios))

    print(
        f"\nLUFFY (n_prefix={args.n_prefix}) / GRPO, seconds per warm step (median); target <= {TARGET:.1f}x at equal n"
    )
    print(
        f"{'scale':<6} {'setup':<44} {'GRPO s':>7} {'LUFFY same n':>13} {'ratio':>6} {'target':>7}"
        f" {'LUFFY same gen':>15} {'ratio':>6}"
    )
    for scale, (grpo, luffy, luffy_gen), _ in summary:
        ratio, ratio_gen = luffy / grpo, luffy_gen / grpo
        verdict = "met" if ratio <= TARGET else "MISSED"
        print(
            f"{scale.name:<6} {scale.describe():<44} {grpo:>7.2f} {luffy:>13.2f} {ratio:>5.2f}x"
            f" {verdict:>7} {luffy_gen:>15.2f} {ratio_gen:>5.2f}x"
        )
    print(f"\nstep period / plain-transformers floor; target <= {FLOOR_TARGET:.1f}x, LUFFY (same n), tiny scale")
    print(f"{'scale':<6} {'GRPO':>8} {'LUFFY same n':>13} {'LUFFY same gen':>15} {'target':>7}")
    for scale, _, (grpo, luffy, luffy_gen) in summary:
        verdict = ("met" if luffy <= FLOOR_TARGET else "MISSED") if scale.name == "tiny" else ""
        print(f"{scale.name:<6} {grpo:>7.2f}x {luffy:>12.2f}x {luffy_gen:>14.2f}x {verdict:>7}")


if __name__ == "__main__":
    sys.exit(main())
