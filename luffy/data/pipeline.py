"""The whole training-data preparation: read, normalise, filter, shuffle/split, write, report.

``prepare()`` does the work and returns a ``PrepareResult``; ``write_outputs()`` writes
``train.parquet`` (+ ``val.parquet``) and the ``skipped.jsonl`` report; ``format_summary()`` renders
the counts the CLI prints. Output is a function of the input and the options only (``seed`` fixes
the shuffle and the split; ``num_proc`` changes speed, never content).
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from luffy.atomic_outputs import RunOutputs
from luffy.data.errors import LuffyDataError
from luffy.data.filters import dedupe_filter, load_tokenizer, token_budget_filter, verify_filter
from luffy.data.normalize import REASONS, Candidate, Skip, normalize_row
from luffy.data.readers import open_rows
from luffy.data.schema import TEMPLATES, make_row, rows_to_table
from luffy.tokens import check_template

logger = logging.getLogger(__name__)

#: Skipped rows logged one per line; the rest are summarised (skipped.jsonl lists them all).
MAX_LOGGED_SKIPS = 50


@dataclass
class PrepareOptions:
    """Knobs of ``prepare()``; the CLI flags of ``data/prepare_train.py`` map one to one."""

    template: str = "own"
    data_source: str = "openr1"
    max_targets: int = 1
    tokenizer: str | None = None
    max_target_tokens: int | None = None
    overlong: str = "drop"
    verify_targets: bool = False
    val_size: int = 0
    seed: int = 42
    shuffle: bool = True
    num_proc: int = 1
    progress: bool = True
    expects_think: bool = True

    def validate(self) -> None:
        if self.template not in TEMPLATES:
            raise LuffyDataError(f"--template must be one of {', '.join(TEMPLATES)}, got {self.template!r}")
        if self.max_targets < 1:
            raise LuffyDataError(f"--max_targets must be >= 1, got {self.max_targets}")
        if self.overlong not in ("drop", "truncate"):
            raise LuffyDataError(f"--overlong must be 'drop' or 'truncate', got {self.overlong!r}")
        if (self.tokenizer is None) != (self.max_target_tokens is None):
            raise LuffyDataError("--tokenizer and --max_target_tokens go together (give both or neither)")
        if self.val_size < 0 or self.num_proc < 1:
            raise LuffyDataError("--val_size must be >= 0 and --num-proc >= 1")


@dataclass
class PrepareResult:
    """Prepared rows, skipped rows and counts."""

    input_description: str
    num_input: int
    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    skipped: list[Skip]
    truncated: int = 0
    template_problems: list[str] = field(default_factory=list)
    template_notes: list[str] = field(default_factory=list)
    stats: Counter = field(default_factory=Counter)

    @property
    def counts(self) -> Counter:
        return Counter(s.reason for s in self.skipped)


def _read_candidates(source: str, options: PrepareOptions) -> tuple[str, int, list[Candidate], list[Skip]]:
    rows = open_rows(source)
    candidates: list[Candidate] = []
    skips: list[Skip] = []
    n = 0
    bar = tqdm(rows.rows, total=rows.num_rows, desc="read", unit="row", disable=not options.progress, leave=False)
    for n, row in enumerate(bar, start=1):
        item = normalize_row(
            n - 1,
            row,
            template=options.template,
            data_source=options.data_source,
            trust_unmarked=options.verify_targets,
        )
        (candidates if isinstance(item, Candidate) else skips).append(item)
    return rows.description, n, candidates, skips


def _check_template(options: PrepareOptions, tokenizer: Any, candidates: list[Candidate]) -> tuple[list, list]:

    sample = candidates[0].traces[0] if candidates else None
    report = check_template(tokenizer, expects_think=options.expects_think, sample_target=sample)
    for problem in report.problems:
        logger.warning("chat template: %s", problem)
    return report.problems, report.notes


def _to_row(cand: Candidate, index: int, split: str, max_targets: int) -> dict[str, Any]:
    flags = cand.truncated or [False] * len(cand.traces)
    return make_row(
        data_source=cand.data_source,
        prompt=cand.prompt,
        ground_truth=cand.answer,
        traces=cand.traces[:max_targets],
        ability=cand.ability,
        extra_info={
            "index": index,
            "split": split,
            "row": cand.row,
            "uuid": cand.uuid,
            "source": cand.source,
            "target_truncated": any(flags[:max_targets]),
        },
    )


def prepare(source: str, options: PrepareOptions | None = None) -> PrepareResult:
    """Prepare ``source`` (file, folder or hub name) into RL rows; see the module docstring."""
    options = options or PrepareOptions()
    options.validate()
    description, num_input, candidates, skips = _read_candidates(source, options)
    problems: list[str] = []
    notes: list[str] = []
    stats: Counter = Counter()
    if options.tokenizer is not None:
        tokenizer = load_tokenizer(options.tokenizer)
        problems, notes = _check_template(options, tokenizer, candidates)
        candidates, more = token_budget_filter(
            candidates,
            tokenizer,
            int(options.max_target_tokens),
            options.overlong,
            options.num_proc,
            options.progress,
            needed=None if options.verify_targets else options.max_targets,
            stats=stats,
        )
        skips += more
    if options.verify_targets:
        candidates, more = verify_filter(candidates, options.num_proc, options.progress, needed=options.max_targets)
        skips += more
    candidates, more = dedupe_filter(candidates)
    skips += more
    skips.sort(key=lambda s: s.row)
    for skip in skips[:MAX_LOGGED_SKIPS]:
        logger.warning("skipped row %d: %s (%s)", skip.row, skip.reason, skip.detail)
    if len(skips) > MAX_LOGGED_SKIPS:
        logger.warning("... and %d more skipped rows (all listed in skipped.jsonl)", len(skips) - MAX_LOGGED_SKIPS)

    order = list(range(len(candidates)))
    if options.shuffle:
        random.Random(options.seed).shuffle(order)
    val_ids, train_ids = order[: options.val_size], order[options.val_size :]
    if options.val_size and len(train_ids) == 0:
        raise LuffyDataError(f"--val_size {options.val_size} leaves no training rows ({len(order)} usable)")
    train = [_to_row(candidates[j], i, "train", options.max_targets) for i, j in enumerate(train_ids)]
    val = [_to_row(candidates[j], i, "val", options.max_targets) for i, j in enumerate(val_ids)]
    truncated = sum(1 for r in train + val if r["extra_info"]["target_truncated"])
    return PrepareResult(description, num_input, train, val, skips, truncated, problems, notes, stats)


def write_parquet(table: Any, path: str | Path, allow_empty: bool = True) -> None:
    """Write ``table`` to ``path`` as a one-file run (:class:`luffy.atomic_outputs.RunOutputs`): through a
    temporary file beside it, so a crash never leaves half a file."""
    outputs = RunOutputs()
    outputs.table(path, table, allow_empty=allow_empty)
    outputs.commit()


def check_output_dir(output_dir: str | Path) -> Path:
    """``output_dir`` as a folder that exists and can be written, or one ``LuffyDataError`` line."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise LuffyDataError(f"--output_dir {out} is an existing file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK | os.X_OK):
        raise LuffyDataError(f"--output_dir {out} is not writable")
    return out


def no_rows_message(result: PrepareResult) -> str:
    """Why a run kept no row: the input and the counts of each skip reason."""
    reasons = ", ".join(f"{reason} {n}" for reason, n in result.counts.most_common())
    return f"no usable rows in {result.input_description} ({result.num_input} read; skipped: {reasons or 'none'})"


def write_outputs(
    result: PrepareResult, output_dir: str | Path, inputs: list[str | Path] = (), options: dict | None = None
) -> dict[str, Path]:
    """Write ``train.parquet``, ``val.parquet`` (when there is a val split) and ``skipped.jsonl`` as one run.

    They replace an earlier run's files together or not at all (:class:`luffy.atomic_outputs.RunOutputs`);
    an earlier ``val.parquet`` is removed when this run has no val split. ``inputs`` and ``options`` are
    recorded in the parquet footers (see :func:`luffy.atomic_outputs.outputs_are_current`).

    Raises:
        LuffyDataError: no training row (nothing is written: an earlier good output stays).
    """
    out = check_output_dir(output_dir)
    if not result.train:
        raise LuffyDataError(f"{no_rows_message(result)}; nothing was written to {out}")
    run = RunOutputs("prepare_train.py", inputs, options)
    paths = {"train": run.table(out / "train.parquet", rows_to_table(result.train), "train split")}
    val_path = out / "val.parquet"
    if result.val:
        paths["val"] = run.table(val_path, rows_to_table(result.val), "val split")
    else:
        run.remove(val_path)  # a stale split from an earlier run would not match this train split
    skipped = "".join(json.dumps(skip.as_dict(), ensure_ascii=False) + "\n" for skip in result.skipped)
    paths["skipped"] = run.text(out / "skipped.jsonl", skipped)
    run.commit()
    return paths


def format_summary(result: PrepareResult, paths: dict[str, Path] | None = None) -> str:
    """Human-readable summary: input, kept rows, one line per skip reason, outputs."""
    counts = result.counts
    lines = [
        f"input: {result.input_description}",
        f"rows read:            {result.num_input}",
        f"kept:                 {len(result.train) + len(result.val)}"
        f" (train {len(result.train)}, val {len(result.val)}; truncated targets {result.truncated})",
        f"skipped:              {len(result.skipped)}",
    ]
    for reason in REASONS:
        if counts.get(reason):
            lines.append(f"  {reason:<24}{counts[reason]}")
    if result.stats:
        lines.append(
            f"token budget:         {result.stats['traces_tokenised']} trace(s) tokenised, "
            f"{result.stats['traces_within_byte_bound']} within the byte bound (byte-level BPE), "
            f"{result.stats['traces_head_only']} over it from a bounded head"
        )
    for problem in result.template_problems:
        lines.append(f"WARNING chat template: {problem}")
    for note in result.template_notes:
        lines.append(f"note: {note}")
    if paths:
        lines.extend(f"wrote {name}: {path}" for name, path in paths.items())
    return "\n".join(lines)
