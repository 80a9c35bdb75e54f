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


def read_step_metrics(paths: list[Path]) -> dict[int, dict[str, float]]:
    """veRL's file-logger lines ``{"step": k, "data": {...}}`` as numeric metrics by step.

    Later files override earlier ones (a resumed run's file after the first); a bad line raises
    ``LuffyDataError`` naming the file and line.
    """
    from luffy.data.errors import LuffyDataError

    by_step: dict[int, dict[str, float]] = {}
    for path in paths:
        for line_no, record, problem in iter_jsonl(path):
            if problem is not None:
                raise LuffyDataError(f"{path}:{line_no}: {problem}")
            values = {k: v for k, v in record.get("data", {}).items() if isinstance(v, int | float)}
            by_step.setdefault(int(record["step"]), {}).update(values)
    return by_step
