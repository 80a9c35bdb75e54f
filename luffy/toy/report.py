"""Tables and the figure of the toy reproduction, from the loop's sweep and the real trainer's weights.

A sweep (``sweep.json``, written by ``exp_scripts/toy_reproduction.py sweep``) maps
``arm -> seed -> {"eval": {step: metrics}, ...}`` with the metrics of
:data:`luffy.toy.evaluate.METRICS`. The real trainer's runs save HF weights at
``OUT/trainer/<arm>/checkpoints/global_step_<k>/actor/huggingface``; they are evaluated here with the
loop's own evaluation (seed 0's sampling seeds), so both sides are measured alike.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from luffy.toy.lab import LABELS, SUCCESSOR_ARMS, eval_seed
from luffy.toy.task import ToyData

Sweep = dict[str, dict[int, dict[int, dict[str, float]]]]
"""arm -> seed -> step -> metrics"""

COLORS = {"luffy": "tab:red", "luffy_split": "tab:orange", "grpo": "tab:blue", "sft": "tab:green",
          "rl_sft_loss": "tab:purple", "sft_rl": "tab:brown", "hpt": "tab:pink", "bread": "tab:olive",
          "chord": "tab:cyan", "hint_anneal": "tab:gray"}
NAMES = {"id_greedy": "ID greedy acc.", "id_pass8": "ID pass@8", "id_sampled": "ID sampled acc.",
         "entropy": "entropy of own samples", "trace_logprob": "held-out trace log-prob",
         "retention_greedy": "OOD retention acc.", "transfer_greedy": "OOD transfer acc."}


def load_sweep(path: Path) -> Sweep:
    """``sweep.json`` with integer seeds and steps."""
    raw = json.loads(Path(path).read_text())
    return {arm: {int(seed): {int(step): m for step, m in run["eval"].items()} for seed, run in by_seed.items()}
            for arm, by_seed in raw.items()}


def saved_policies(run_dir: Path) -> dict[int, Path]:
    """HF weights saved by a trainer run, by training step."""
    found = {}
    for path in (run_dir / "checkpoints").glob("global_step_*/actor/huggingface"):
        found[int(re.search(r"global_step_(\d+)", str(path)).group(1))] = path
    return dict(sorted(found.items()))


def evaluate_trainer(out: Path, arms: list[str], data: ToyData, sft_rl_switch: int = 0
                     ) -> dict[str, dict[int, dict[str, float]]]:
    """Held-out metrics of every saved trainer policy, by arm and step (``sft_rl``: steps counted from
    the sweep's start, its trainer run starting at ``sft_rl_switch``)."""
    from luffy.toy.evaluate import Prompts, evaluate, load_policy

    out_eval: dict[str, dict[int, dict[str, float]]] = {}
    for arm in arms:
        offset = sft_rl_switch if arm == "sft_rl" else 0
        for step, path in saved_policies(out / "trainer" / arm).items():
            model, tokenizer = load_policy(path, out / "base_model")
            total = step + offset
            out_eval.setdefault(arm, {})[total] = evaluate(model, Prompts(tokenizer), data.held_out,
                                                           seed=eval_seed(0, total))
    return out_eval


def final(sweep: Sweep, arm: str) -> dict[int, dict[str, float]]:
    """Each seed's metrics at the arm's last evaluated step."""
    return {seed: by_step[max(by_step)] for seed, by_step in sorted(sweep[arm].items())}


def run_mean(sweep: Sweep, arm: str) -> dict[int, dict[str, float]]:
    """Each seed's metrics averaged over the evaluations after step 0 (the area under the learning curve:
    how fast an arm gets there, which the final step hides once arms saturate)."""
    out = {}
    for seed, by_step in sorted(sweep[arm].items()):
        steps = [s for s in by_step if s > 0]
        out[seed] = {k: statistics.mean(by_step[s][k] for s in steps) for k in by_step[steps[0]]}
    return out


SUMMARIES = {"final": final, "mean": run_mean}


def _ood(m: dict[str, float]) -> float:
    return (m["retention_greedy"] + m["transfer_greedy"]) / 2


CLAIMS = (
    ("(a) LUFFY beats on-policy GRPO in-distribution", "grpo",
     "ID greedy acc.", lambda a, b: (f"{a['id_greedy']:.2f} vs {b['id_greedy']:.2f}",
                                     a["id_greedy"] > b["id_greedy"])),
    ("(b) LUFFY >= SFT in-distribution", "sft",
     "ID greedy acc.", lambda a, b: (f"{a['id_greedy']:.2f} vs {b['id_greedy']:.2f}",
                                     a["id_greedy"] >= b["id_greedy"])),
    ("(b) LUFFY beats SFT out of distribution", "sft",
     "mean of retention and transfer acc.", lambda a, b: (f"{_ood(a):.3f} vs {_ood(b):.3f}", _ood(a) > _ood(b))),
    ("(c) LUFFY keeps more entropy than on-policy GRPO", "grpo",
     "entropy of own samples (nats/token)",
     lambda a, b: (f"{a['entropy']:.3f} vs {b['entropy']:.3f}", a["entropy"] > b["entropy"])),
    ("(c) ... with pass@8 no lower", "grpo",
     "ID pass@8", lambda a, b: (f"{a['id_pass8']:.2f} vs {b['id_pass8']:.2f}", a["id_pass8"] >= b["id_pass8"])),
)


def claim_verdicts(sweep: Sweep, luffy_arm: str = "luffy", summary: str = "final"
                   ) -> list[tuple[str, str, str, list[str], int, int]]:
    """Per claim: (claim, other arm, metric, per-seed cells, seeds where it holds, seeds); each seed's
    metrics at the final step (``summary="final"``) or averaged over the run's evaluations (``"mean"``)."""
    rows = []
    for claim, other, metric, compare in CLAIMS:
        if luffy_arm not in sweep or other not in sweep:
            continue
        mine, theirs = SUMMARIES[summary](sweep, luffy_arm), SUMMARIES[summary](sweep, other)
        seeds = sorted(set(mine) & set(theirs))
        cells, holds = [], 0
        for seed in seeds:
            text, ok = compare(mine[seed], theirs[seed])
            cells.append(f"{text} {'yes' if ok else 'no'}")
            holds += ok
        rows.append((claim, other, metric, cells, holds, len(seeds)))
    return rows


def claims_table(sweep: Sweep, summary: str = "final") -> str:
    """Markdown: one row per claim (LUFFY's recipe, grpo_split, then each successor's arm in the sweep in
    LUFFY's place) with per-seed values and the verdict."""
    seeds = sorted({s for by_seed in sweep.values() for s in by_seed})
    when = "final step" if summary == "final" else "mean over the run's evaluations"
    head = f"| claim | LUFFY arm vs | metric ({when}) | " + " | ".join(f"seed {s}" for s in seeds) + " | verdict |"
    lines = [head, "|" + " --- |" * (4 + len(seeds))]
    for luffy_arm in ("luffy", "luffy_split", *SUCCESSOR_ARMS):
        for claim, other, metric, cells, holds, m in claim_verdicts(sweep, luffy_arm, summary):
            in_place = {"luffy": "LUFFY", "luffy_split": "LUFFY (grpo_split)"}.get(luffy_arm, luffy_arm)
            name = claim.replace("LUFFY", in_place)
            verdict = f"holds in {holds} of {m} seeds"
            lines.append(f"| {name} | {other} | {metric} | " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(lines)


def _spread(values: list[float], digits: int) -> str:
    return f"{statistics.mean(values):.{digits}f} ({min(values):.{digits}f} to {max(values):.{digits}f})"


def final_table(sweep: Sweep) -> str:
    """Markdown: per arm, each metric's mean over seeds at step 0 and the final step, with min-max."""
    shown = ("id_greedy", "id_pass8", "retention_greedy", "transfer_greedy", "entropy", "trace_logprob")
    lines = ["| arm | step | " + " | ".join(NAMES[k] for k in shown) + " |", "|" + " --- |" * (2 + len(shown))]
    first = next(iter(sweep.values()))
    base = [by_step[0] for by_step in first.values()]
    lines.append("| base model | 0 | " + " | ".join(_spread([m[k] for m in base], 3 if k == "entropy" else 2)
                                                    for k in shown) + " |")
    for arm, by_seed in sweep.items():
        ends = list(final(sweep, arm).values())
        step = max(next(iter(by_seed.values())))
        lines.append(f"| {LABELS[arm]} | {step} | " + " | ".join(
            _spread([m[k] for m in ends], 3 if k == "entropy" else 2) for k in shown) + " |")
    return "\n".join(lines)


def per_seed_table(sweep: Sweep, metric: str) -> str:
    """Markdown: each arm's final ``metric`` for every seed, and the mean."""
    seeds = sorted({s for by_seed in sweep.values() for s in by_seed})
    lines = ["| arm | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |", "|" + " --- |" * (2 + len(seeds))]
    for arm in sweep:
        ends = final(sweep, arm)
        values = [ends[s][metric] for s in seeds if s in ends]
        lines.append(f"| {arm} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {statistics.mean(values):.3f} |")
    return "\n".join(lines)


def seed_band(values: list[float]) -> tuple[float, float]:
    """The loop's seed spread of one metric: the wider of min-max and mean +- 2 sd over the seeds (a single
    extra draw lands outside the min-max of 5 draws one time in 3 by chance alone; with up to 5 seeds the
    2-sd band always holds the min-max)."""
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return min(min(values), mean - 2 * sd), max(max(values), mean + 2 * sd)


CHECKED = ("id_greedy", "id_pass8", "retention_greedy", "transfer_greedy", "entropy", "trace_logprob")


def trainer_within_spread(sweep: Sweep, trainer: dict[str, dict[int, dict[str, float]]]):
    """Per (arm, step, metric): the trainer's value, the loop's seed band (:func:`seed_band`) and whether
    the value falls inside it."""
    rows = []
    for arm, by_step in trainer.items():
        for step, metrics in sorted(by_step.items()):
            seeds = [by_s[step] for by_s in sweep.get(arm, {}).values() if step in by_s]
            if not seeds:
                continue
            for key in CHECKED:
                lo, hi = seed_band([m[key] for m in seeds])
                rows.append((arm, step, key, metrics[key], lo, hi, lo - 1e-9 <= metrics[key] <= hi + 1e-9))
    return rows


def trainer_check_table(sweep: Sweep, trainer: dict[str, dict[int, dict[str, float]]]) -> str:
    """Markdown: the trainer's values at its saved steps against the loop's seed band."""
    rows = trainer_within_spread(sweep, trainer)
    lines = ["| arm | step | " + " | ".join(NAMES[k] for k in CHECKED) + " |", "|" + " --- |" * (2 + len(CHECKED))]
    cells: dict[tuple[str, int], dict[str, str]] = {}
    for arm, step, key, value, lo, hi, inside in rows:
        d = 3 if key == "entropy" else 2
        text = f"{value:.{d}f} in [{lo:.{d}f}, {hi:.{d}f}]" + ("" if inside else " OUT")
        cells.setdefault((arm, step), {})[key] = text
    for (arm, step), by_key in cells.items():
        lines.append(f"| {arm} | {step} | " + " | ".join(by_key.get(k, "-") for k in CHECKED) + " |")
    inside = sum(r[-1] for r in rows)
    lines.append(f"\n{inside} of {len(rows)} trainer values fall within the loop's seed band "
                 "(the wider of min-max and mean +- 2 sd over seeds).")
    return "\n".join(lines)


def stepsize_table(results: dict) -> str:
    """Markdown: per setting (arm:lr:updates per step) and seed, the held-out trace log-prob and ID greedy
    accuracy at each evaluated step."""
    lines = ["| setting (arm : lr : updates per step) | seed | trace log-prob by step | ID greedy acc. by step |",
             "| --- | --- | --- | --- |"]
    for setting, by_seed in results.items():
        for seed, run in by_seed.items():
            ev = run["eval"]
            steps = sorted(ev, key=int)
            lp = ", ".join(f"{int(s)}: {ev[s]['trace_logprob']:.1f}" for s in steps)
            acc = ", ".join(f"{ev[s]['id_greedy']:.2f}" for s in steps)
            lines.append(f"| {setting} | {seed} | {lp} | {acc} |")
    return "\n".join(lines)


def plot(sweep: Sweep, trainer: dict[str, dict[int, dict[str, float]]], out: Path) -> None:
    """Six panels (ID greedy, pass@8, retention, transfer, entropy, trace log-prob): per arm the mean
    over seeds (thick), each seed (thin) and the real trainer's seed-0 values (crosses)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("id_greedy", "id_pass8", "retention_greedy", "transfer_greedy", "entropy", "trace_logprob")
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, key in zip(axes.flat, keys):
        for arm, by_seed in sweep.items():
            color = COLORS.get(arm)
            steps = sorted(set.intersection(*(set(s) for s in by_seed.values())))
            for by_step in by_seed.values():
                xs = sorted(by_step)
                ax.plot(xs, [by_step[s][key] for s in xs], "-", color=color, alpha=0.25, lw=0.8)
            ax.plot(steps, [statistics.mean(b[s][key] for b in by_seed.values()) for s in steps], "-", color=color,
                    lw=2.2, label=f"{LABELS[arm]} ({len(by_seed)} seeds)")
            if arm in trainer:
                ts = sorted(trainer[arm])
                ax.plot(ts, [trainer[arm][s][key] for s in ts], "x", color=color, ms=9, mew=2)
        ax.set_title(NAMES[key], fontsize=10)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Toy reproduction: mean over seeds (thick), each seed (thin), real trainer seed 0 (x)", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def load_train_stats(path: Path) -> dict[str, dict[int, dict[int, dict[str, float]]]]:
    """``sweep.json``'s rollout statistics: arm -> seed -> step -> {reward, groups_with_success}."""
    raw = json.loads(Path(path).read_text())
    return {arm: {int(seed): {int(step): st for step, st in run["train"].items()} for seed, run in by_seed.items()}
            for arm, by_seed in raw.items()}


def check_regime(sweep: Sweep, train_stats: dict[str, dict[int, dict[int, dict[str, float]]]]) -> list[str]:
    """The behaviours ``--quick`` asserts; returns what failed (empty when all hold).

    The paper's regime: the base solves some held-out problems but not all and pass@8 is above its
    greedy accuracy; on-policy GRPO's groups hold successes from its first step, and it learns from
    them (its ID greedy accuracy ends above the base's); LUFFY learns from the traces (their held-out
    log-prob ends above the base's)."""
    for arm in ("luffy", "grpo"):
        if arm not in sweep:
            return [f"the sweep has no {arm} arm"]
    failed = []
    base = next(iter(sweep["grpo"].values()))[0]
    if not 0 < base["id_greedy"] < 1:
        failed.append(f"base ID greedy accuracy {base['id_greedy']:.2f} is not strictly between 0 and 1")
    if not base["id_pass8"] > base["id_greedy"]:
        failed.append(f"base pass@8 {base['id_pass8']:.2f} is not above its greedy accuracy {base['id_greedy']:.2f}")
    for seed, end in final(sweep, "grpo").items():
        first = train_stats["grpo"][seed][1]["groups_with_success"]
        if not first > 0:
            failed.append(f"seed {seed}: no GRPO group held a success at step 1")
        if not end["id_greedy"] > base["id_greedy"]:
            failed.append(f"seed {seed}: GRPO's ID greedy accuracy {end['id_greedy']:.2f} did not rise above the "
                          f"base's {base['id_greedy']:.2f}")
    for seed, end in final(sweep, "luffy").items():
        if not end["trace_logprob"] > base["trace_logprob"]:
            failed.append(f"seed {seed}: LUFFY's trace log-prob {end['trace_logprob']:.2f} did not rise above "
                          f"the base's {base['trace_logprob']:.2f}")
    return failed
