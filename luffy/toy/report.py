"""After the toy runs: evaluate every saved policy, write the table and draw the figure.

Each run folder (``OUT/<run>/``) holds veRL's ``metrics.jsonl`` and HF weights saved at
``checkpoints/global_step_<k>/actor/huggingface``; step 0 is the shared base model.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

from luffy.toy.evaluate import PolicyEval, evaluate_policy
from luffy.toy.task import DATA_SOURCE, Problem

LABELS = {
    "luffy": "LUFFY, recipe (grpo advantages)",
    "luffy_split": "LUFFY, grpo_split advantages",
    "grpo": "on-policy GRPO (n_prefix=0)",
    "sft": "SFT (n_prefix=n, SFT loss)",
}
COLORS = {"luffy": "tab:red", "luffy_split": "tab:orange", "grpo": "tab:blue", "sft": "tab:green"}
VAL_KEY = f"val-core/{DATA_SOURCE}/acc/mean@1"  # veRL's greedy validation accuracy


def saved_policies(run_dir: Path) -> dict[int, Path]:
    """HF weights saved by a run, by training step."""
    found = {}
    for path in (run_dir / "checkpoints").glob("global_step_*/actor/huggingface"):
        step = int(re.search(r"global_step_(\d+)", str(path)).group(1))
        found[step] = path
    return dict(sorted(found.items()))


def read_metrics(path: Path) -> dict[int, dict[str, float]]:
    """A run's numeric metrics by step (``luffy.jsonl.read_step_metrics``); none when the run wrote none."""
    from luffy.jsonl import read_step_metrics

    return read_step_metrics([path]) if path.exists() else {}


def evaluate_runs(out_dir: Path, runs: list[str], problems: list[Problem], seed: int,
                  progress: bool = True) -> dict[str, dict[int, PolicyEval]]:
    """Held-out evaluation of the base model (step 0 of every run) and of each saved policy."""
    from tqdm import tqdm

    base = out_dir / "base_model"
    jobs = [(run, step, path) for run in runs for step, path in saved_policies(out_dir / run).items()]
    results: dict[str, dict[int, PolicyEval]] = {run: {} for run in runs}
    base_eval = evaluate_policy(base, problems, seed=seed)
    for run in runs:
        results[run][0] = base_eval
    for run, step, path in tqdm(jobs, desc="held-out evaluation", disable=not progress):
        results[run][step] = evaluate_policy(path, problems, tokenizer_path=base, seed=seed)
    return results


def table(results: dict[str, dict[int, PolicyEval]], metrics: dict[str, dict[int, dict[str, float]]]) -> str:
    """Markdown table of the base model and each run's final policy."""
    lines = [
        "| policy | step | greedy acc. | sampled acc. (T=1) | held-out trace log-prob | entropy of own samples "
        "| veRL greedy val. acc. |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    first = next(iter(results.values()))
    rows = [("base model (start of every run)", 0, first[0], None)]
    for run, by_step in results.items():
        last = max(by_step)
        val = metrics.get(run, {}).get(last, {}).get(VAL_KEY)
        rows.append((LABELS.get(run, run), last, by_step[last], val))
    for name, step, ev, val in rows:
        val_text = "-" if val is None else f"{val:.3f}"
        lines.append(f"| {name} | {step} | {ev.greedy_acc:.3f} | {ev.sampled_acc:.3f} | {ev.trace_logprob:.2f} "
                     f"| {ev.sample_entropy:.3f} | {val_text} |")
    return "\n".join(lines)


def plot(results: dict[str, dict[int, PolicyEval]], metrics: dict[str, dict[int, dict[str, float]]],
         out: Path, title: str) -> None:
    """Four panels: held-out greedy and sampled accuracy, veRL's actor/entropy, entropy of own samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    panels = [
        (axes[0, 0], "held-out accuracy, greedy", lambda ev: ev.greedy_acc),
        (axes[0, 1], "held-out accuracy, sampled (T=1, 4 per problem)", lambda ev: ev.sampled_acc),
        (axes[1, 1], "entropy of own samples on held-out prompts (nats/token)", lambda ev: ev.sample_entropy),
    ]
    for ax, name, get in panels:
        for run, by_step in results.items():
            steps = sorted(by_step)
            ax.plot(steps, [get(by_step[s]) for s in steps], "o-", color=COLORS.get(run), label=LABELS.get(run, run))
        ax.set_title(name, fontsize=10)
    for run, by_step in metrics.items():  # veRL's own validation (greedy, hf_cpu server) as dashed lines
        steps = [s for s in sorted(by_step) if VAL_KEY in by_step[s]]
        if steps:
            axes[0, 0].plot(steps, [by_step[s][VAL_KEY] for s in steps], "x--", color=COLORS.get(run), alpha=0.6,
                            label=f"{run}: veRL validation")
        steps = [s for s in sorted(by_step) if "actor/entropy" in by_step[s]]
        axes[1, 0].plot(steps, [by_step[s]["actor/entropy"] for s in steps], "-", color=COLORS.get(run),
                        label=LABELS.get(run, run))
    axes[1, 0].set_title("actor/entropy on the training batch (veRL)", fontsize=10)
    for ax in axes.flat:
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def write_results(results: dict[str, dict[int, PolicyEval]], path: Path) -> None:
    """Every evaluation as JSON: ``{run: {step: {greedy_acc, sampled_acc, sample_entropy, trace_logprob}}}``."""
    data = {run: {str(step): asdict(ev) for step, ev in by_step.items()} for run, by_step in results.items()}
    path.write_text(json.dumps(data, indent=1) + "\n")
