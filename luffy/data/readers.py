"""Read training/evaluation input into numbered rows, whatever its container.

Supported inputs:

- a ``.parquet`` file, or a folder of ``*.parquet`` files (read in name order; a cell that is not UTF-8
  makes its row an ``UnreadableRow`` naming the file, the row and the column; a truncated file, or one
  whose sibling outputs come from another run, is one ``LuffyDataError`` naming it);
- a ``.jsonl`` file (one JSON object per line; a line that is not UTF-8, not a JSON object or holds
  a lone surrogate becomes an ``UnreadableRow`` carrying the reason, so one bad line does not lose
  the file);
- a ``.json`` file holding a list of objects, a ``{column: [values]}`` mapping, or JSON lines;
- a folder written by ``datasets.Dataset.save_to_disk`` (or a ``DatasetDict``: its ``train`` split);
- a hub dataset name (``owner/name``), loaded with ``datasets.load_dataset(name, split="train")``.
  Without network this fails with one ``LuffyDataError`` line saying what to do instead.

Rows are numbered from 0 in input order; that number is what reports and skip logs cite. Columnar
containers (parquet, saved datasets) cannot tell an absent key from a null value: both read as
``None``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from luffy.atomic_outputs import check_run_outputs
from luffy.data.errors import LuffyDataError
from luffy.jsonl import iter_jsonl, unencodable_text

logger = logging.getLogger(__name__)

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

#: Columns the normalisation reads; columnar inputs load only these (raw OpenR1 files also carry
#: large columns such as ``solution`` or ``messages`` that preparation never looks at).
USED_COLUMNS = frozenset(
    {
        "problem",
        "question",
        "answer",
        "choices",
        "generations",
        "correctness_math_verify",
        "uuid",
        "source",
        "data_source",
        "prompt",
        "target",
        "ability",
        "reward_model",
        "extra_info",
    }
)


def _used(names: list[str]) -> list[str]:
    """The input's columns that preparation reads, in file order (all of them if none match)."""
    used = [n for n in names if n in USED_COLUMNS]
    return used or names


@dataclass(frozen=True)
class UnreadableRow:
    """Stands in for a row that could not be parsed; ``reason`` says why."""

    reason: str


@dataclass
class RowSource:
    """Rows of one input. ``rows`` yields dicts (or ``UnreadableRow``) in input order."""

    description: str
    num_rows: int | None
    rows: Iterator[dict[str, Any] | UnreadableRow]


def _batch_rows(batch: Any, where: str, first_row: int) -> list[dict[str, Any] | UnreadableRow]:
    """A record batch's rows as dicts; a row with a cell that is not UTF-8 becomes an ``UnreadableRow``
    naming ``where`` (the file), its row there and the column (the batch's other rows are kept)."""
    try:
        return batch.to_pylist()
    except UnicodeDecodeError:
        pass
    rows: list[dict[str, Any] | UnreadableRow] = []
    for i in range(batch.num_rows):
        one = batch.slice(i, 1)
        try:
            rows.append(one.to_pylist()[0])
        except UnicodeDecodeError as err:
            column = next((name for name, col in zip(one.schema.names, one.columns) if not _decodes(col)), "?")
            rows.append(UnreadableRow(
                f"row {first_row + i} of {where}: column {column!r} is not valid UTF-8 ({err.reason}, "
                f"byte 0x{err.object[err.start]:02x})"
            ))
    return rows


def _decodes(column: Any) -> bool:
    try:
        column.to_pylist()
    except UnicodeDecodeError:
        return False
    return True


def _arrow_rows(table: Any, where: str, batch_size: int = 2048) -> Iterator[dict[str, Any] | UnreadableRow]:
    """Rows of a pyarrow table, converted to python objects one batch at a time."""
    first = 0
    for batch in table.to_batches(max_chunksize=batch_size):
        yield from _batch_rows(batch, where, first)
        first += batch.num_rows


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any] | UnreadableRow]:
    for line_no, row, problem in iter_jsonl(path):
        yield row if problem is None else UnreadableRow(f"line {line_no} is {problem}")


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def _json_rows(path: Path) -> RowSource:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        # Not one JSON document: read it as JSON lines, where a bad line is a counted skip.
        return RowSource(f"JSON lines file {path}", _count_lines(path), _jsonl_rows(path))
    bad_text = unencodable_text(data)
    if bad_text:
        raise LuffyDataError(f"{path}: {bad_text}; fix the text or store the rows as JSON lines")
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        lengths = {len(v) for v in data.values()}
        if len(lengths) != 1:
            raise LuffyDataError(f"{path}: columns have different lengths {sorted(lengths)}")
        n = lengths.pop()
        rows = [{k: data[k][i] for k in data} for i in range(n)]
    elif isinstance(data, list):
        rows = [
            r if isinstance(r, dict) else UnreadableRow(f"item {i} is not a JSON object") for i, r in enumerate(data)
        ]
    else:
        raise LuffyDataError(f"{path}: expected a list of objects or a {{column: [values]}} mapping")
    return RowSource(f"JSON file {path}", len(rows), iter(rows))


def open_parquet(path: str | Path) -> Any:
    """``pq.ParquetFile(path)`` of a whole file from one run, or one ``LuffyDataError`` line naming it.

    Refused: a missing, empty, truncated or non-parquet file, and a file whose sibling outputs from the
    same run now come from another run (:func:`luffy.atomic_outputs.check_run_outputs`).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise LuffyDataError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        handle = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        size = path.stat().st_size
        what = "an empty file (0 bytes)" if size == 0 else f"not a readable parquet file ({size} bytes; {err})"
        if "magic bytes" in str(err) and size:
            what = f"truncated or not a parquet file ({size} bytes, no parquet footer at its end)"
        raise LuffyDataError(f"{path} is {what}") from None
    check_run_outputs(path, handle.schema_arrow)
    return handle


def _parquet_source(paths: list[Path], description: str) -> RowSource:
    files = [open_parquet(p) for p in paths]
    total = sum(f.metadata.num_rows for f in files)

    def rows() -> Iterator[dict[str, Any] | UnreadableRow]:
        for path, f in zip(paths, files):
            columns, first = _used(f.schema_arrow.names), 0
            for batch in f.iter_batches(batch_size=2048, columns=columns):
                yield from _batch_rows(batch, str(path), first)
                first += batch.num_rows

    return RowSource(description, total, rows())


def _dataset_source(dataset: Any, description: str) -> RowSource:
    """A ``datasets.Dataset`` (or the ``train`` split of a ``DatasetDict``) as rows."""
    if hasattr(dataset, "keys") and not hasattr(dataset, "features"):
        if "train" not in dataset:
            raise LuffyDataError(f"{description}: no 'train' split (found {', '.join(dataset.keys())})")
        dataset = dataset["train"]
    table = dataset.with_format("arrow")[:]
    table = table.select(_used(table.column_names))
    return RowSource(description, len(dataset), _arrow_rows(table, description))


def _hub_source(name: str) -> RowSource:
    try:
        import datasets

        dataset = datasets.load_dataset(name, split="train")
    except Exception as err:  # network, offline mode, missing repo: one clear line for the CLI
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LuffyDataError(
            f"could not load hub dataset {name!r} ({type(err).__name__}: {first}); "
            "without network, download it elsewhere and pass the local file or folder with --input"
        ) from None
    return _dataset_source(dataset, f"hub dataset {name}")


def open_rows(source: str | Path) -> RowSource:
    """Open any supported input (see the module docstring) as numbered rows."""
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "state.json").exists() or (
            path / "dataset_dict.json"
        ).exists():
            import datasets

            return _dataset_source(datasets.load_from_disk(str(path)), f"saved dataset {path}")
        parquet = sorted(path.glob("*.parquet"))
        if parquet:
            return _parquet_source(parquet, f"{len(parquet)} parquet file(s) in {path}")
        raise LuffyDataError(f"{path} holds neither a saved dataset nor parquet files")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            return _parquet_source([path], f"parquet file {path}")
        if suffix == ".jsonl":
            return RowSource(f"JSON lines file {path}", _count_lines(path), _jsonl_rows(path))
        if suffix == ".json":
            return _json_rows(path)
        raise LuffyDataError(f"{path}: unsupported file type {suffix!r} (use .parquet, .jsonl or .json)")
    if _HUB_NAME.match(str(source)):
        return _hub_source(str(source))
    raise LuffyDataError(f"input {str(source)!r} is neither an existing file/folder nor a hub dataset name")
