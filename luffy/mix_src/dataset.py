"""``LuffyRLHFDataset``: veRL's ``RLHFDataset`` plus a validated ``target`` column.

veRL 0.9.1's ``RLHFDataset.__getitem__`` returns every parquet column of the row, and the V1
trainer hands every such column to the agent loop as a keyword argument, so ``target`` already
travels to the rollout without help. What stock veRL does not do is check it: a prepared file
with a missing or empty target would only fail deep inside a rollout. This subclass

- checks the ``target`` column once, when the files are loaded (before veRL's prompt-length
  filter, so row numbers are positions in the concatenated input files), with arrow compute
  rather than a python loop over the rows;
- on a bad row raises ``LuffyDataError`` naming the row index, the field and the fix
  (``data.target_validation=error``, the default), or drops the bad rows and logs how many and
  which (``data.target_validation=skip``);
- normalises each item's ``target`` to ``list[dict]`` = ``[{"content": str, "role": "assistant"}, ...]``
  (``datasets`` yields a list-of-struct column as a python list of dicts; the normalisation also
  accepts numpy object arrays, tuples, a bare string or a single dict, as other loaders produce);
- loads an evaluation file as the *validation* set without any ``target`` column: veRL builds the
  validation set with the same class (``create_rl_dataset(..., is_train=False)`` does not pass
  ``is_train`` on), so the set is recognised by its files being ``data.val_files`` and not
  ``data.train_files``; its rows carry no ``target`` (validation never injects one);
- otherwise defers to veRL: prompt key, ``max_prompt_length``, ``filter_overlong_prompts``,
  ``truncation``, chat-template kwargs all behave as in ``RLHFDataset``.

Use it with::

    data.custom_cls.path=pkg://luffy.mix_src.dataset
    data.custom_cls.name=LuffyRLHFDataset
    +data.target_key=target              # optional, default "target"
    +data.target_validation=error        # optional: error | skip

After veRL's ``collate_fn`` a batch's ``target`` is a numpy object array of shape ``(batch,)`` whose
items are those lists of dicts; ``luffy.tokens.pick_target`` reads any of these.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from verl.utils.dataset.rl_dataset import RLHFDataset

from luffy.data.errors import LuffyDataError
from luffy.data.schema import normalize_target

logger = logging.getLogger(__name__)


def _file_list(files: Any) -> list[str]:
    if files is None:
        return []
    return [str(files)] if isinstance(files, str) else [str(f) for f in files]


def is_validation_files(data_files: Any, config: Any) -> bool:
    """True when ``data_files`` are ``config.val_files`` and not also ``config.train_files``.

    veRL 0.9.1 builds both sets with ``dataset_cls(data_files=..., config=config.data)``, the
    validation one from ``data.val_files``; a run that validates on its training file is a training
    set here (its targets are checked).
    """
    files = _file_list(data_files)
    return bool(files) and files == _file_list(config.get("val_files")) and files != _file_list(
        config.get("train_files")
    )


def _as_list_column(column: pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def find_bad_targets(table: pa.Table, key: str = "target") -> list[tuple[int, str]]:
    """(row index, reason) for each row whose ``key`` column is not a usable target.

    Accepted column types: ``list<struct<content: string, ...>>`` (prepared files),
    ``list<string>`` and ``string``. A row is bad when the value is null, the list is empty, or
    any trace content is null or blank.
    """
    if key not in table.column_names:
        raise LuffyDataError(
            f"the data files have no '{key}' column (columns: {', '.join(table.column_names)}); "
            "prepare them with data/prepare_train.py or set data.target_key"
        )
    column = _as_list_column(table.column(key))
    kind = column.type
    bad: dict[int, str] = {}
    for i in pc.indices_nonzero(pc.is_null(column)).to_pylist():
        bad[i] = f"'{key}' is null"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(column), ""), False)
        for i in pc.indices_nonzero(blank).to_pylist():
            bad.setdefault(i, f"'{key}' is an empty string")
        return sorted(bad.items())
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        raise LuffyDataError(f"column '{key}' has type {kind}; expected a list of {{role, content}} messages")
    lengths = pc.fill_null(pc.list_value_length(column), 1)
    for i in pc.indices_nonzero(pc.equal(lengths, 0)).to_pylist():
        bad.setdefault(i, f"'{key}' is an empty list")
    values = column.flatten()
    if pa.types.is_struct(values.type):
        if values.type.get_field_index("content") < 0:
            raise LuffyDataError(f"column '{key}' items have no 'content' field ({values.type})")
        values = pc.struct_field(values, "content")
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise LuffyDataError(f"column '{key}' contents have type {values.type}; expected strings")
    blank = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(values), ""), True)
    if pc.any(blank).as_py():
        parents = pc.list_parent_indices(column)
        for j in pc.indices_nonzero(blank).to_pylist():
            bad.setdefault(int(parents[j].as_py()), f"'{key}' has a null or blank trace")
    return sorted(bad.items())


def bad_targets_message(files: str, bad: list[tuple[int, str]]) -> str:
    """The one-line error for training files with unusable targets (``bad`` from :func:`find_bad_targets`)."""
    row, reason = bad[0]
    return (
        f"row {row} of {files}: {reason} ({len(bad)} bad row(s) in all); every training row needs at least "
        "one off-policy trace: re-run data/prepare_train.py, or set data.target_validation=skip to drop such rows"
    )


class LuffyRLHFDataset(RLHFDataset):
    """``RLHFDataset`` that validates and normalises the off-policy ``target`` column.

    Config keys (besides veRL's ``data.*``): ``target_key`` (default ``"target"``) and
    ``target_validation`` (``"error"``, default, or ``"skip"``). ``__getitem__`` returns veRL's
    row dict with ``row[target_key]`` as ``list[{"content": str, "role": "assistant"}]``; a
    validation set (:func:`is_validation_files`) returns rows without ``target_key``.
    """

    def __init__(self, data_files: Any, tokenizer: Any, config: Any, processor: Any = None, max_samples: int = -1):
        self.target_key = config.get("target_key", "target")
        self.target_validation = config.get("target_validation", "error")
        if self.target_validation not in ("error", "skip"):
            raise LuffyDataError(
                f"data.target_validation must be 'error' or 'skip', got {self.target_validation!r}"
            )
        self.skipped_target_rows: list[tuple[int, str]] = []
        self.is_validation = is_validation_files(data_files, config)
        super().__init__(data_files, tokenizer, config, processor=processor, max_samples=max_samples)

    def maybe_filter_out_long_prompts(self, dataframe: Any = None) -> Any:
        """Check ``target`` first (row numbers as loaded), then veRL's prompt-length filter."""
        dataframe = self._validate_targets(dataframe)
        return super().maybe_filter_out_long_prompts(dataframe)

    def _validate_targets(self, dataframe: Any) -> Any:
        if self.is_validation:
            logger.info("validation set %s: targets not checked and not passed on", self.data_files)
            return dataframe
        bad = find_bad_targets(dataframe.data.table, self.target_key)
        if not bad:
            return dataframe
        files = ", ".join(str(f) for f in self.data_files)
        if self.target_validation == "error":
            raise LuffyDataError(bad_targets_message(files, bad))
        self.skipped_target_rows = bad
        shown = ", ".join(f"{row} ({reason})" for row, reason in bad[:10])
        logger.warning("dropping %d row(s) with unusable '%s' from %s: %s", len(bad), self.target_key, files, shown)
        drop = {row for row, _ in bad}
        return dataframe.select([i for i in range(len(dataframe)) if i not in drop])

    def __getitem__(self, item: int) -> dict:
        row = super().__getitem__(item)
        if self.is_validation:
            row.pop(self.target_key, None)
            return row
        try:
            row[self.target_key] = normalize_target(row.get(self.target_key))
        except LuffyDataError as err:
            raise LuffyDataError(f"dataset item {item}: {err}") from None
        return row
