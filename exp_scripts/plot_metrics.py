"""Plot a training run's curves from veRL's metrics JSONL (``trainer.logger`` with ``file``).

Each line of the file is ``{"step": int, "data": {metric: value, ...}}``; any other line stops the
script naming its file and line (``--skip_bad``: skipped, logged and counted). Several files (a run and
its resumes) are merged by step, later files winning. Four panels: reward of on- vs off-policy samples,
the actor's probability of off- vs on-policy tokens, entropy, response length.

    python exp_scripts/plot_metrics.py metrics.jsonl [more.jsonl ...] --out figures/run.png
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from luffy.cli import add_debug_flag, user_errors_exit  # noqa: E402
from luffy.data.errors import LuffyDataError  # noqa: E402
from luffy.jsonl import read_step_metrics as read_metrics  # noqa: E402

PANELS: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "reward",
        [
            ("luffy/reward_on_policy", "on-policy"),
            ("luffy/reward_off_policy", "off-policy"),
            ("critic/score/mean", "all samples"),
        ],
    ),
    (
        "token probability under the actor (before the update)",
        [("luffy/off_policy_prob", "off-policy tokens"), ("luffy/on_policy_prob", "on-policy tokens")],
    ),
    (
        "entropy",
        [
            ("luffy/entropy_on_policy", "on-policy"),
            ("luffy/entropy_off_policy", "off-policy"),
            ("actor/entropy", "all tokens (veRL's metric, rounded to bf16)"),
        ],
    ),
    ("response length", [("response_length/mean", "mean"), ("response_length/max", "max")]),
]


def plot(by_step: dict[int, dict[str, float]], out: Path, title: str) -> dict[str, tuple[list[int], list[float]]]:
    """Draw the panels into ``out``; returns each drawn curve's ``(steps, values)`` by metric key."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    drawn: dict[str, tuple[list[int], list[float]]] = {}
    for ax, (panel, series) in zip(axes.flat, PANELS):
        for key, label in series:
            points = [(s, m[key]) for s, m in sorted(by_step.items()) if key in m and math.isfinite(m[key])]
            if points:
                steps, values = zip(*points)
                (line,) = ax.plot(steps, values, marker="o", label=label)
                drawn[key] = (list(line.get_xdata()), list(line.get_ydata()))  # what the figure shows
        ax.set_title(panel)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return drawn


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", nargs="+", type=Path, help="metrics JSONL file(s) of one run")
    parser.add_argument("--out", type=Path, default=Path("figures/metrics.png"), help="PNG to write")
    parser.add_argument("--title", default="training curves", help="figure title")
    parser.add_argument("--skip_bad", action="store_true",
                        help="skip (and log with file:line, counted) lines without an integer step or a data object")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    missing = [str(p) for p in args.metrics if not p.is_file()]
    if missing:
        raise LuffyDataError(f"metrics file(s) not found: {', '.join(missing)}")
    by_step = read_metrics(args.metrics, skip_bad=args.skip_bad)
    if not by_step:
        raise LuffyDataError("no metrics in the given file(s)")
    drawn = plot(by_step, args.out, args.title)
    print(f"wrote {args.out} ({len(by_step)} steps, {len(drawn)} curves)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
