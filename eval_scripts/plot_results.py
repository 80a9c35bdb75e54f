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

from luffy.cli import add_debug_flag, user_errors_exit
from luffy.data.errors import LuffyDataError
from luffy.evaluation.result_store import unique_records
from luffy.evaluation.results import read_results
from luffy.evaluation.summary import ALL, MACRO, scored_record, summarize

logger = logging.getLogger("plot_results")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="summary .json or results .jsonl files")
    p.add_argument("--labels", nargs="+", default=None, help="one label per input (default: file stems)")
    p.add_argument("--metric", default="avg@n", help="metric to plot (avg@n, pass@1, maj@n, pass@K, ...)")
    p.add_argument("--out", default="figures/results.png", help="output PNG path")
    p.add_argument("--title", default=None)
    add_debug_flag(p)
    return p.parse_args(argv)


def load_summary(path: Path) -> dict[str, dict[str, Any]]:
    """A summary dict from a summary JSON or a scored results jsonl (each problem counted once).

    Raises:
        LuffyDataError: a damaged file, naming it (and the line of a bad results record).
    """
    if not path.is_file():
        raise LuffyDataError(f"input not found: {path}")
    if path.suffix == ".jsonl":
        records = [scored_record(r, f"{path}:{n}") for n, r in read_results(path, line_numbers=True)]
        return summarize(unique_records(records, path))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise LuffyDataError(f"{path} is not a readable summary JSON ({err})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise LuffyDataError(f"{path}: expected a summary JSON mapping data_source -> metrics")
    return data


def check_metric(summaries: list[dict[str, dict[str, Any]]], paths: list[Path], metric: str) -> None:
    """The metric must be in some input, and a number wherever it is."""
    if not any(metric in m for s in summaries for m in s.values()):
        raise LuffyDataError(f"metric {metric!r} is in none of the inputs")
    for summary, path in zip(summaries, paths):
        for ds, metrics in summary.items():
            value = metrics.get(metric)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise LuffyDataError(f"{path}: {ds}.{metric} is {value!r}, not a number")


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


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    paths = [Path(x) for x in args.inputs]
    labels = args.labels or [p.name.split(".")[0] for p in paths]
    if len(labels) != len(paths):
        raise LuffyDataError(f"got {len(labels)} labels for {len(paths)} inputs")
    summaries = [load_summary(p) for p in paths]
    check_metric(summaries, paths, args.metric)
    out = plot(summaries, labels, args.metric, Path(args.out), args.title)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
