"""Line-numbered reading of JSONL files, shared by every reader that reports bad lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Yield ``(line_no, row, problem)`` for each non-blank line of ``path`` (1-based line numbers).

    ``row`` is the decoded JSON object and ``problem`` is ``None``; for a line that is not valid JSON,
    or not a JSON object, ``row`` is ``None`` and ``problem`` says why (``"not valid JSON (...)"``,
    ``"not a JSON object"``). Callers decide whether a bad line is an error or a counted skip.
    """
    with Path(path).open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                yield line_no, None, f"not valid JSON ({err.msg})"
                continue
            if isinstance(row, dict):
                yield line_no, row, None
            else:
                yield line_no, None, "not a JSON object"
