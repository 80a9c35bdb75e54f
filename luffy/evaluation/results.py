"""Resumable jsonl results: one line per finished problem, appended and flushed as it completes."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class ResultsFileError(ValueError):
    """A results file that cannot be read (the message names the line)."""


def read_results(path: str | Path, repair_torn_tail: bool = False) -> list[dict[str, Any]]:
    """Read the finished records of a results file.

    A torn last line (a killed writer) is ignored; with ``repair_torn_tail`` it is also cut off the
    file so that appending continues on a clean line. A bad line anywhere else raises
    :class:`ResultsFileError` naming its line number.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    records: list[dict[str, Any]] = []
    good_end = 0
    pos = 0
    lineno = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl + 1
        raw = data[pos:end]
        lineno += 1
        is_last = end >= len(data)
        if raw.strip():
            try:
                record = json.loads(raw)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                if is_last:
                    logger.warning("%s: ignoring torn last line %d; it will be redone", path, lineno)
                    break
                raise ResultsFileError(f"{path}: line {lineno} is not a valid JSON object ({exc})") from exc
            if nl < 0:  # complete JSON but no newline: keep it, terminate it on repair
                records.append(record)
                if repair_torn_tail:
                    with path.open("ab") as fh:
                        fh.write(b"\n")
                good_end = end + 1
                break
            records.append(record)
        good_end = end
        pos = end
    if repair_torn_tail and good_end < len(data):
        with path.open("r+b") as fh:
            fh.truncate(good_end)
    return records


class ResultWriter:
    """Appends one JSON line per record, flushed and synced so a killed run loses nothing."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line."""
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Close the file."""
        self._fh.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
