"""Per-data-source metrics over scored results, as a table, JSON and CSV.

Two averages follow the sources: ``all`` pools the problems (a 500-problem set outweighs a 30-problem
one) and ``macro`` is the plain mean of the per-source values, as LUFFY's "Avg." column is.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from luffy.data.errors import LuffyDataError
from luffy.scoring.metrics import majority_vote, pass_at_k

ALL = "all"
MACRO = "macro"
LABELS = {ALL: "all (pooled problems)", MACRO: "macro (mean of sources)"}
"""How the two averages are labelled in the printed table (JSON and CSV keep the keys)."""
_RATE_PREFIXES = ("avg@", "pass@", "maj@")


class BadRecordError(LuffyDataError):
    """A scored record whose verdicts cannot be summarised (the message names its file and line)."""


def _is_verdict(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1))


def scored_record(record: Any, where: str) -> dict[str, Any]:
    """``record`` with ``correct`` and ``extracted`` as equal-length lists, or :class:`BadRecordError`
    naming ``where`` (``file:line``).

    A single verdict (``"correct": true``) counts as one response; ``extracted`` may be missing
    (no answers recorded). A record with no ``correct`` is kept as is (it has no responses yet).
    """
    if not isinstance(record, dict):
        raise BadRecordError(f"{where}: expected a JSON object, got {type(record).__name__}")
    correct = record.get("correct")
    if correct is None:
        return record
    if _is_verdict(correct):
        correct = [correct]
    if not isinstance(correct, list) or not all(_is_verdict(c) for c in correct):
        raise BadRecordError(f"{where}: 'correct' must be true/false or a list of them, got {str(correct)[:60]}")
    extracted = record.get("extracted", [None] * len(correct))
    if extracted is None or isinstance(extracted, str):
        extracted = [extracted]
    if not isinstance(extracted, list) or len(extracted) != len(correct):
        raise BadRecordError(f"{where}: 'extracted' must be a list as long as 'correct' ({len(correct)})")
    if not isinstance(record.get("data_source"), str):
        raise BadRecordError(f"{where}: 'data_source' must be a string, got {record.get('data_source')!r}")
    return record | {"correct": [bool(c) for c in correct], "extracted": extracted}


def _ks(n: int) -> list[int]:
    """pass@k values reported for ``n`` samples: 1, 2, 4, ... up to n, plus n itself."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if n >= 1 and ks[-1] != n:
        ks.append(n)
    return ks


def summarize_group(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Metrics for one group of scored records (each with ``correct`` and ``extracted`` lists)."""
    n_min = min(len(r["correct"]) for r in records)
    n_max = max(len(r["correct"]) for r in records)
    flat = [bool(c) for r in records for c in r["correct"]]
    out: dict[str, Any] = {
        "n_problems": len(records),
        "n": n_min if n_min == n_max else f"{n_min}-{n_max}",
        "n_responses": len(flat),
        "avg@n": sum(flat) / len(flat) if flat else 0.0,
    }
    for k in _ks(n_min):
        out[f"pass@{k}"] = sum(pass_at_k(len(r["correct"]), sum(map(bool, r["correct"])), k) for r in records) / len(
            records
        )
    out["maj@n"] = sum(majority_vote(r["extracted"], r["correct"]) for r in records) / len(records)
    out["answered"] = sum(p is not None for r in records for p in r["extracted"]) / max(len(flat), 1)
    chars = [len(x) for r in records for x in r.get("responses", [])]
    out["mean_response_chars"] = sum(chars) / len(chars) if chars else 0.0
    tokens = [t for r in records for t in (r.get("response_lengths") or [])]
    if tokens:
        out["mean_response_tokens"] = sum(tokens) / len(tokens)
    return out


def macro_average(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over per-source summary rows of each rate (avg@n, pass@k, maj@n, answered) they all have."""
    keys = [k for k in rows[0] if (k.startswith(_RATE_PREFIXES) or k == "answered") and all(k in r for r in rows)]
    out: dict[str, Any] = {"n_sources": len(rows)}
    out.update({k: sum(float(r[k]) for r in rows) / len(rows) for k in keys})
    return out


def summarize(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Summary per ``data_source`` (sorted), over all problems pooled (key ``"all"``) and the mean of
    the per-source rates (key ``"macro"``).

    Records with no responses (or not scored) are ignored.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("correct"):
            groups.setdefault(str(r["data_source"]), []).append(r)
    summary = {ds: summarize_group(groups[ds]) for ds in sorted(groups)}
    pooled = [r for ds in sorted(groups) for r in groups[ds]]
    if pooled:
        summary[ALL] = summarize_group(pooled)
        summary[MACRO] = macro_average([summary[ds] for ds in sorted(groups)])
    return summary


def _columns(summary: dict[str, dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for row in summary.values():
        for key in row:
            if key not in cols:
                cols.append(key)
    return cols


def format_table(summary: dict[str, dict[str, Any]]) -> str:
    """Fixed-width text table; rates shown as percentages."""
    cols = _columns(summary)
    header = ["data_source", *cols]
    rows = []
    for ds, metrics in summary.items():
        cells = [LABELS.get(ds, ds)]
        for c in cols:
            v = metrics.get(c, "")
            if isinstance(v, float) and (c.startswith(_RATE_PREFIXES) or c == "answered"):
                cells.append(f"{100 * v:.1f}")
            elif isinstance(v, float):
                cells.append(f"{v:.1f}")
            else:
                cells.append(str(v))
        rows.append(cells)
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def write_summary(summary: dict[str, dict[str, Any]], json_path: str | Path, csv_path: str | Path | None) -> None:
    """Write the summary as JSON (``{data_source: metrics}``) and, if asked, as CSV (one row each)."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if csv_path is not None:
        cols = _columns(summary)
        with Path(csv_path).open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["data_source", *cols])
            for ds, metrics in summary.items():
                writer.writerow([ds, *(metrics.get(c, "") for c in cols)])
