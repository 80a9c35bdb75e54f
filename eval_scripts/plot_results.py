"""Bar chart comparing several evaluation runs per data source.

Each input is a summary JSON (from ``generate_vllm.py``/``score.py``) or a results jsonl with
``correct``/``extracted`` lists (summarised on the fly, without re-scoring).

Example::

    python eval_scripts/plot_results.py base.summary.json luffy.summary.json \
        --labels Base LUFFY --metric avg@n --out figures/compare.png
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import _bootstrap  # noqa: F401

from luffy.evaluation.results import read_results
from luffy.evaluation.summary import ALL, MACRO, summarize

logger = logging.getLogger("plot_results")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="summary .json or results .jsonl files")
    p.add_argument("--labels", nargs="+", default=None, help="one label per input (default: file stems)")
    p.add_argument("--metric", default="avg@n", help="metric to plot (avg@n, pass@1, maj@n, pass@K, ...)")
    p.add_argument("--out", default="figures/results.png", help="output PNG path")
    p.add_argument("--title", default=None)
    return p.parse_args(argv)


def load_summary(path: Path) -> dict[str, dict[str, Any]]:
    """A summary dict from a summary JSON or a scored results jsonl."""
    if path.suffix == ".jsonl":
        return summarize(read_results(path))
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: expected a summary JSON mapping data_source -> metrics")
    return data


def plot(
    summaries: list[dict[str, dict[str, Any]]], labels: list[str], metric: str, out: Path, title: str | None
) -> Path:
    """Draw grouped bars (one group per data source, one bar per run) and save a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources: list[str] = []
    for s in summaries:
        sources += [ds for ds in s if ds not in (ALL, MACRO) and ds not in sources]
    sources += [avg for avg in (ALL, MACRO) if any(avg in s for s in summaries)]
    width = 0.8 / max(len(summaries), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(sources) + 2), 4.5))
    for i, (summary, label) in enumerate(zip(summaries, labels)):
        values = [100 * float(summary.get(ds, {}).get(metric, 0.0) or 0.0) for ds in sources]
        xs = [j + (i - (len(summaries) - 1) / 2) * width for j in range(len(sources))]
        bars = ax.bar(xs, values, width, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(sources)))
    ax.set_xticklabels(sources, rotation=30, ha="right")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(title or f"{metric} per benchmark")
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    paths = [Path(x) for x in args.inputs]
    labels = args.labels or [p.name.split(".")[0] for p in paths]
    if len(labels) != len(paths):
        logger.error("got %d labels for %d inputs", len(labels), len(paths))
        return 2
    try:
        summaries = []
        for p in paths:
            if not p.is_file():
                raise FileNotFoundError(f"input not found: {p}")
            summaries.append(load_summary(p))
    except (ValueError, OSError) as exc:
        logger.error("%s", exc)
        return 2
    if not any(args.metric in m for s in summaries for m in s.values()):
        logger.error("metric %r is in none of the inputs", args.metric)
        return 2
    out = plot(summaries, labels, args.metric, Path(args.out), args.title)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
