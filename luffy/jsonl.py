"""Line-numbered reading of JSONL files, shared by every reader that reports bad lines.

Each line is decoded on its own, so one line that is not UTF-8, not JSON, or that holds a character
no UTF-8 writer can store (a lone surrogate such as ``"\\ud800"``) is reported as that line's problem
and the other lines are still read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# A ``\\uD800``-``\\uDFFF`` escape: the only way a decoded UTF-8 line can yield a surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def unencodable_text(value: Any) -> str | None:
    """A short description of the first string in ``value`` (nested) that UTF-8 cannot encode."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            return f"character {value[err.start]!r} at position {err.start} cannot be written as UTF-8"
        return None
    if isinstance(value, dict):
        items = list(value.keys()) + list(value.values())
    elif isinstance(value, list):
        items = value
    else:
        return None
    for item in items:
        found = unencodable_text(item)
        if found:
            return found
    return None


def decode_line(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """``(row, None)`` for a line holding a JSON object, else ``(None, reason)``."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return None, f"not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        return None, f"not valid JSON ({err.msg})"
    if not isinstance(row, dict):
        return None, "not a JSON object"
    if _SURROGATE_ESCAPE.search(raw):
        bad = unencodable_text(row)
        if bad:
            return None, f"not valid Unicode text ({bad})"
    return row, None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Yield ``(line_no, row, problem)`` for each non-blank line of ``path`` (1-based line numbers).

    ``row`` is the decoded JSON object and ``problem`` is ``None``; for a line that is not UTF-8, not
    valid JSON, not a JSON object or holds a lone surrogate, ``row`` is ``None`` and ``problem`` says
    why (``"not valid UTF-8 (...)"``, ``"not valid JSON (...)"``, ``"not a JSON object"``, ``"not
    valid Unicode text (...)"``). Callers decide whether a bad line is an error or a counted skip.
    """
    with Path(path).open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            row, problem = decode_line(raw)
            yield line_no, row, problem


def metrics_step(record: dict[str, Any]) -> tuple[int | None, str | None]:
    """``(step, None)`` for a file-logger record ``{"step": k, "data": {...}}`` with an integer step and an
    object ``data``, else ``(None, reason)``. An integral float (``3.0``) is step 3; ``2.5``, ``true``,
    ``"3"`` or no step at all is a reason, never another step."""
    step = record.get("step")
    if isinstance(step, float) and step.is_integer():
        step = int(step)
    if "step" not in record:
        return None, "no 'step'"
    if not isinstance(step, int) or isinstance(step, bool):
        return None, f"'step' is {step!r}, not an integer"
    if not isinstance(record.get("data"), dict):
        return None, f"'data' is a {type(record.get('data')).__name__}, not an object of metrics"
    return step, None


def read_step_metrics(paths: list[Path], skip_bad: bool = False) -> dict[int, dict[str, float]]:
    """veRL's file-logger lines ``{"step": k, "data": {...}}`` as numeric metrics by step.

    Later files override earlier ones (a resumed run's file after the first). A bad line (not JSON, no
    integer ``step``, ``data`` not an object) raises ``LuffyDataError`` naming the file and line; with
    ``skip_bad`` it is logged with its file and line and skipped (the count is logged at the end).
    """
    import logging

    from luffy.data.errors import LuffyDataError

    by_step: dict[int, dict[str, float]] = {}
    skipped = 0
    for path in paths:
        for line_no, record, problem in iter_jsonl(path):
            step = None
            if problem is None:
                step, problem = metrics_step(record)
            if problem is not None:
                if not skip_bad:
                    raise LuffyDataError(f"{path}:{line_no}: {problem} (--skip_bad skips such lines)")
                skipped += 1
                logging.getLogger(__name__).warning("skipped %s:%d: %s", path, line_no, problem)
                continue
            values = {k: v for k, v in record["data"].items() if isinstance(v, int | float) and not isinstance(v, bool)}
            by_step.setdefault(step, {}).update(values)
    if skipped:
        logging.getLogger(__name__).warning("skipped %d bad metrics line(s)", skipped)
    return by_step
