"""Resumable jsonl results: one line per finished problem, appended and flushed as it completes.

Each line records what it depends on: ``problem_hash`` (the problem's source, question and answer)
and ``settings`` (model, template, sampling, scoring protocol). A rerun on the same file resumes only when both agree
(:func:`resume_plan`); otherwise it refuses, saying what differs, instead of mixing two runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from luffy.data.errors import LuffyDataError

logger = logging.getLogger(__name__)

#: Generation and scoring settings a result depends on; a resumed run must match all of them.
SETTING_KEYS = (
    "model_path",
    "template",
    "remove_system",
    "n",
    "temperature",
    "top_p",
    "max_tokens",
    "seed",
    "max_model_len",
    "protocol",
    "add_think_before_answer",
    "no_split_think",
    "add_oat_evaluate",
    "any_true",
    "skip_scoring",
)


class ResultsFileError(LuffyDataError):
    """A results file that cannot be read, or cannot be resumed (the message names the line)."""


def problem_hash(data_source: str, question: str, answer: str) -> str:
    """Short stable hash of what identifies a problem (source, question text, reference answer)."""
    blob = json.dumps([data_source, question, answer], ensure_ascii=False).encode("utf-8", "surrogatepass")
    return hashlib.sha256(blob).hexdigest()[:16]


def resume_plan(
    path: str | Path, records: list[dict[str, Any]], settings: dict[str, Any], problems: dict[str, str]
) -> set[str]:
    """The problem ids already finished in ``records`` (read from ``path``) for this run.

    Args:
        settings: this run's generation settings; every key in it or in a record must agree.
        problems: this run's problem id -> :func:`problem_hash`.

    Raises:
        ResultsFileError: when a record was made with other settings, or holds another problem
            under one of this run's ids; the message says what differs and how to proceed.
    """
    fix = f"write to a new --output_file, or pass --overwrite to discard the results in {path}"
    done: set[str] = set()
    for lineno, record in enumerate(records, start=1):
        old = record.get("settings")
        if not isinstance(old, dict):
            raise ResultsFileError(f"{path}: record {lineno} does not say which settings made it; {fix}")
        keys = list(settings) + [k for k in old if k not in settings]
        diff = [f"{k}={old.get(k)!r} (now {settings.get(k)!r})" for k in keys if old.get(k) != settings.get(k)]
        if diff:
            raise ResultsFileError(f"{path} holds results made with other settings: {', '.join(diff)}; {fix}")
        uid = record.get("id")
        if uid in problems:
            if record.get("problem_hash") != problems[uid]:
                raise ResultsFileError(
                    f"{path}: record {lineno} holds another problem under id {uid!r} (the input file differs "
                    f"from the one that made these results); {fix}"
                )
            done.add(uid)
    return done


def read_results(path: str | Path, repair_torn_tail: bool = False, line_numbers: bool = False) -> list[Any]:
    """Read the finished records of a results file (with ``line_numbers``: ``(line, record)`` pairs).

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
                records.append((lineno, record) if line_numbers else record)
                if repair_torn_tail:
                    with path.open("ab") as fh:
                        fh.write(b"\n")
                good_end = end + 1
                break
            records.append((lineno, record) if line_numbers else record)
        good_end = end
        pos = end
    if repair_torn_tail and good_end < len(data):
        with path.open("r+b") as fh:
            fh.truncate(good_end)
    return records


class ResultWriter:
    """Appends one JSON line per record, flushed and synced so a killed run loses nothing.

    With ``replace`` the first record goes to a new file that then takes the place of ``path`` in
    one rename: the old results stay whole until a new one exists.
    """

    def __init__(self, path: str | Path, replace: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = None if replace else self.path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line."""
        line = json.dumps(record, ensure_ascii=False) + "\n"
        if self._fh is None:
            tmp = self.path.with_name(f".{self.path.name}.new")
            fh = tmp.open("w", encoding="utf-8")
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
            os.replace(tmp, self.path)  # the open handle now writes to ``path``
            self._fh = fh
            return
        self._fh.write(line)
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Close the file."""
        if self._fh is not None:
            self._fh.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
