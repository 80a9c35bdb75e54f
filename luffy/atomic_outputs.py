"""Write the outputs of one run together: they replace the previous run's outputs all at once or not at all.

:class:`RunOutputs` collects a run's outputs (parquet tables, text files, stale files to remove) and
writes nothing until :meth:`RunOutputs.commit`. An output that must hold rows and holds none is refused
when it is added, so an old good file is never replaced by an empty one. ``commit`` writes every output
to a temporary file beside its final path (same folder, same file system), and only when all of them are
written renames them into place one after another and removes the stale files. A failure while writing
(a full disk, an interrupt) removes the temporary files and leaves every old output as it was.

The renames take microseconds, but a kill between two of them would still leave a new file beside an
old one. So every parquet output carries the run's *manifest* in its footer metadata (key
``luffy.run``): the run id (a hash of all the run's outputs), the script, and the names of all the
files written together.
:func:`check_run_outputs` (cheap: it reads parquet footers only) refuses a parquet file whose siblings
from the same manifest exist but carry another run id; readers and the trainer's pre-flight call it.
The manifest also records the run's inputs (path, size, sha256) and options, so a script can tell
whether its outputs are current (:func:`outputs_are_current`).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from luffy.data.errors import LuffyDataError

RUN_KEY = b"luffy.run"


def _tmp_path(path: Path, run_id: str) -> Path:
    return path.with_name(f".{path.name}.{run_id[:12]}.tmp")


def input_fingerprint(source: str | Path) -> dict[str, Any]:
    """What identifies an input: its absolute path and, for local files, size and sha256 of the bytes.

    A folder is fingerprinted by the names, sizes and sha256 of every file under it; anything else (a hub
    dataset name) by its name only.
    """
    path = Path(source).expanduser()
    if path.is_file():
        return {"path": str(path.resolve()), "size": path.stat().st_size, "sha256": _sha256(path)}
    if path.is_dir():
        digest = hashlib.sha256()
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{item.relative_to(path)}\0{item.stat().st_size}\0{_sha256(item)}\n".encode())
        return {"path": str(path.resolve()), "sha256": digest.hexdigest()}
    return {"name": str(source)}


class _HashSink:
    """A write-only file object that only hashes what is written to it."""

    def __init__(self, digest: Any):
        self.digest, self.closed = digest, False

    def write(self, data: Any) -> int:
        self.digest.update(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class RunOutputs:
    """The outputs of one run, written together by :meth:`commit`.

    Args:
        script: name of the program writing them (recorded in the manifest).
        inputs: the run's input files or names (fingerprinted into the manifest).
        options: the run's settings (recorded as given; must be JSON-serialisable).
    """

    def __init__(
        self, script: str | None = None, inputs: Sequence[str | Path] = (), options: dict[str, Any] | None = None
    ):
        self.script = script or Path(sys.argv[0]).name
        self.inputs = [input_fingerprint(s) for s in inputs]
        self.options = options or {}
        self._outputs: dict[Path, tuple[str, Any]] = {}
        self._stale: list[Path] = []

    def _claim(self, path: str | Path, what: str) -> Path:
        path = Path(path)
        if path.is_dir():
            raise LuffyDataError(f"{what} {path} is a folder; give a file name")
        if path in self._outputs:
            raise LuffyDataError(f"{path} is given twice as an output of one run")
        return path

    def table(self, path: str | Path, table: Any, what: str = "output", allow_empty: bool = False) -> Path:
        """Add a pyarrow table to write as parquet at ``path``.

        Raises:
            LuffyDataError: ``table`` has no rows (unless ``allow_empty``), or ``path`` is a folder.
        """
        path = self._claim(path, what)
        if table.num_rows == 0 and not allow_empty:
            kept = " (the old file is kept)" if path.exists() else ""
            raise LuffyDataError(f"{what} {path} would hold no rows; nothing was written{kept}")
        self._outputs[path] = ("parquet", table)
        return path

    def text(self, path: str | Path, text: str, what: str = "output") -> Path:
        """Add a UTF-8 text file to write at ``path``."""
        path = self._claim(path, what)
        self._outputs[path] = ("text", text)
        return path

    def remove(self, path: str | Path) -> None:
        """Remove ``path`` (an earlier run's output this run does not write) when the run commits."""
        self._stale.append(Path(path))

    def _run_id(self) -> str:
        """sha256 of every output's content, name, inputs and options: two runs that would write the same
        bytes share it (mixing their files is harmless), any other two differ. Outputs stay a function of
        the inputs and options only."""
        import pyarrow as pa

        digest = hashlib.sha256(json.dumps([self.script, self.inputs, self.options], sort_keys=True).encode())
        for path in sorted(self._outputs):
            kind, payload = self._outputs[path]
            digest.update(f"\0{path.name}\0{kind}\0".encode())
            if kind == "parquet":
                with pa.ipc.new_stream(pa.PythonFile(_HashSink(digest), mode="w"), payload.schema) as writer:
                    writer.write_table(payload)
            else:
                digest.update(payload.encode("utf-8"))
        return digest.hexdigest()[:32]

    def manifest(self, path: Path) -> dict[str, Any]:
        """The manifest as stored in ``path``'s footer: file names relative to ``path``'s folder."""
        files = sorted(os.path.relpath(p.absolute(), path.absolute().parent) for p in self._outputs)
        return {
            "run": self.run_id,
            "script": self.script,
            "files": files,
            "inputs": self.inputs,
            "options": self.options,
        }

    def commit(self) -> list[Path]:
        """Write every output to a temporary file, then move them all into place; returns the paths.

        Raises:
            OSError: a write failed; no output was replaced and no temporary file is left.
        """
        import pyarrow.parquet as pq

        self.run_id = self._run_id()
        for path in self._outputs:  # temporary files left by a run killed while writing
            for left in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
                left.unlink(missing_ok=True)
        written: list[tuple[Path, Path]] = []
        try:
            for path, (kind, payload) in self._outputs.items():
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = _tmp_path(path, self.run_id)
                written.append((tmp, path))
                if kind == "parquet":
                    meta = dict(payload.schema.metadata or {})
                    meta[RUN_KEY] = json.dumps(self.manifest(path)).encode()
                    pq.write_table(payload.replace_schema_metadata(meta), tmp)
                else:
                    tmp.write_text(payload, encoding="utf-8")
                with tmp.open("rb") as fh:
                    os.fsync(fh.fileno())
        except BaseException:
            for tmp, _ in written:
                tmp.unlink(missing_ok=True)
            raise
        for tmp, path in written:
            os.replace(tmp, path)
        for path in self._stale:
            if path not in self._outputs:
                path.unlink(missing_ok=True)
        return [path for _, path in written]


def read_manifest(path: str | Path, schema: Any = None) -> dict[str, Any] | None:
    """The run manifest in a parquet file's footer, or None for a file not written by :class:`RunOutputs`."""
    if schema is None:
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
    raw = (schema.metadata or {}).get(RUN_KEY)
    if raw is None:
        return None
    with contextlib.suppress(ValueError):
        manifest = json.loads(raw)
        if isinstance(manifest, dict) and isinstance(manifest.get("run"), str):
            return manifest
    return None


def check_run_outputs(path: str | Path, schema: Any = None) -> None:
    """Refuse ``path`` when a parquet sibling written by the same run now comes from another run.

    Raises:
        LuffyDataError: naming both files, both runs and the fix (rerun the script that wrote them).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    manifest = read_manifest(path, schema)
    if manifest is None:
        return
    for name in manifest.get("files", []):
        if not isinstance(name, str) or not name.endswith(".parquet"):
            continue
        sibling = path.parent / name
        if not sibling.is_file() or sibling.resolve() == path.resolve():
            continue  # itself, or removed or moved: nothing to mix up
        try:
            other = read_manifest(sibling, pq.read_schema(sibling))
        except (pa.ArrowException, OSError):
            other = None
        if other is None or other["run"] != manifest["run"]:
            when = f"run {other['run'][:8]}" if other else "not written by this run"
            raise LuffyDataError(
                f"{path} (run {manifest['run'][:8]} of {manifest.get('script')}) "
                f"and {sibling} ({when}) were written as one run's outputs but come from different runs "
                f"(an interrupted write, or a file copied in); rerun {manifest.get('script')} to write them again"
            )


def outputs_are_current(path: str | Path, inputs: Sequence[str | Path], options: dict[str, Any] | None = None) -> bool:
    """Whether the parquet output ``path`` exists, is whole, and was made from ``inputs`` with ``options``.

    ``inputs`` are compared by content (sha256), not by name or time, so another file under the same name
    makes the output stale.
    """
    import pyarrow as pa

    path = Path(path)
    if not path.is_file():
        return False
    try:
        manifest = read_manifest(path)
        check_run_outputs(path)
    except (pa.ArrowException, OSError, LuffyDataError):
        return False
    if manifest is None:
        return False
    return manifest.get("inputs") == [input_fingerprint(s) for s in inputs] and manifest.get("options") == (
        options or {}
    )
