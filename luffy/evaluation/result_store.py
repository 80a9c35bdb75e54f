"""The results file of one generation run: its settings, its lock, its records counted once.

:class:`ResultStore` is the only way ``generate_vllm.py`` touches its ``--output_file``:

- **settings**: a plain dict (whatever the caller passes: a new setting is simply one more key).
  Numbers must be finite and in range (:func:`check_settings`); every key recorded in a line must
  equal this run's value for the run to resume (:func:`luffy.evaluation.results.resume_plan`).
- **lock**: an exclusive ``fcntl`` lock on ``OUTPUT.lock`` is held from before the file is read
  until the summary is written, so a second run on the same output stops with one line instead of
  writing duplicates. The lock file stays behind (deleting it would let two runs lock two files).
- **overwrite**: old results are replaced only when the new run writes its first result (an atomic
  rename), so a run that fails before that (a mistyped model path) loses nothing.
- **de-duplication**: a problem id that occurs on several lines is counted once (the first line),
  and the number of extra lines is logged (:func:`unique_records`).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from luffy.evaluation.results import ResultsFileError, ResultWriter, read_results, resume_plan

logger = logging.getLogger(__name__)

#: Range checks for settings known to need one (key -> (test, what it must be)); any other number
#: only has to be finite.
_RANGES: dict[str, tuple[Any, str]] = {
    "temperature": (lambda v: v >= 0, ">= 0 (0 is greedy)"),
    "top_p": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "n": (lambda v: v >= 1, ">= 1"),
    "max_tokens": (lambda v: v >= 1, ">= 1"),
    "max_model_len": (lambda v: v >= 1, ">= 1"),
}


class SettingsError(ResultsFileError):
    """A generation setting that is not a usable value (the message names the flag)."""


def check_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` as a dict, or :class:`SettingsError` naming the first bad one.

    Every float must be finite (``nan`` would run greedy in some engines and never equal itself on
    resume); known keys must be in range (``_RANGES``); ``None`` means "engine default" and passes.
    """
    for key, value in settings.items():
        if value is None or isinstance(value, (bool, str)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise SettingsError(f"--{key} must be a finite number, got {value}")
        rule = _RANGES.get(key)
        if rule is not None and isinstance(value, (int, float)) and not rule[0](value):
            raise SettingsError(f"--{key} must be {rule[1]}, got {value}")
    return dict(settings)


def unique_records(records: Iterable[dict[str, Any]], path: str | Path) -> list[dict[str, Any]]:
    """``records`` with each problem ``id`` kept once (its first line); extra lines are logged.

    Lines without an ``id`` (hand-made files) are all kept.
    """
    seen: set[Any] = set()
    out: list[dict[str, Any]] = []
    dropped = 0
    for record in records:
        uid = record.get("id")
        if uid is not None:
            key = (repr(uid), record.get("problem_hash"))
            if key in seen:
                dropped += 1
                continue
            seen.add(key)
        out.append(record)
    if dropped:
        logger.warning("%s: %d duplicated result line(s) (same problem id) counted once", path, dropped)
    return out


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a results file, each problem once (for readers such as ``plot_results.py``)."""
    return unique_records(read_results(path), path)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


class ResultStore:
    """The results file of one run (see the module docstring). Use as a context manager.

    Args:
        path: the results jsonl.
        settings: what the results depend on (checked by :func:`check_settings`, stored per line).
        overwrite: replace the old results once this run writes its first one.
        inputs: files this run reads; none may be ``path``.
        other_outputs: other files this run writes (summaries); none may be ``path``, its lock or an input.

    Raises:
        SettingsError: a bad setting. ResultsFileError: a path clash, or another run holds the lock.
    """

    def __init__(
        self,
        path: str | Path,
        settings: Mapping[str, Any],
        overwrite: bool = False,
        inputs: Iterable[str | Path] = (),
        other_outputs: Iterable[str | Path] = (),
    ) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.settings = check_settings(settings)
        self.overwrite = overwrite
        if self.path.is_dir():
            raise ResultsFileError(f"--output_file {self.path} is a folder; give the results file to write")
        inputs = [Path(p) for p in inputs]
        for other in inputs:
            if _same_file(other, self.path):
                raise ResultsFileError(f"the input {other} is also the results file; choose another --output_file")
        for other in map(Path, other_outputs):
            if _same_file(other, self.path) or _same_file(other, self.lock_path):
                raise ResultsFileError(
                    f"{other} would be written over the results file {self.path}; choose another --summary_out"
                )
            if any(_same_file(other, source) for source in inputs):
                raise ResultsFileError(f"{other} would be written over the input; choose another --summary_out")
        self._lock_fd: int | None = None
        self._writer: ResultWriter | None = None
        self._written = 0

    # ------------------------------------------------------------------------------------- lock
    def __enter__(self) -> ResultStore:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise ResultsFileError(
                f"{self.path} is being written by another run (pid {holder or '?'} holds {self.lock_path}); "
                "wait for it to finish, or use another --output_file"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the results file and release the lock."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError("ResultStore used outside its 'with' block")

    # ------------------------------------------------------------------------------------- records
    def resume(self, problems: dict[str, str]) -> set[str]:
        """Ids of ``problems`` (id -> problem hash) already finished with these settings.

        With ``overwrite`` nothing counts as finished and the old file is left as it is until the
        first new result replaces it. Otherwise a torn last line is cut off, and other settings or
        another problem under one of these ids raise :class:`ResultsFileError`.
        """
        self._require_lock()
        if self.overwrite:
            if self.path.exists():
                logger.info("--overwrite: %s is replaced when the first new result is written", self.path)
            return set()
        records = unique_records(read_results(self.path, repair_torn_tail=True), self.path)
        return resume_plan(self.path, records, self.settings, problems)

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` (its ``settings`` set to this run's); the first write of an overwriting
        run replaces the old file."""
        self._require_lock()
        if self._writer is None:
            self._writer = ResultWriter(self.path, replace=self.overwrite and not self._written)
        self._writer.write(record | {"settings": self.settings})
        self._written += 1

    @contextmanager
    def writing(self) -> Iterator[ResultStore]:
        """``with store.writing() as writer: writer.write(record)``; the file is closed at the end
        of the block (the lock stays until the store's own block ends)."""
        self._require_lock()
        try:
            yield self
        finally:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def records(self, problems: dict[str, str]) -> list[dict[str, Any]]:
        """This run's finished records: ids of ``problems`` with a matching hash, each once."""
        self._require_lock()
        if self.overwrite and not self._written:
            return []  # nothing new written: the old file is not this run's
        records = unique_records(read_results(self.path), self.path)
        return [r for r in records if problems.get(r.get("id")) == r.get("problem_hash")]
