"""Check the checkpoint a run will resume from, before Ray starts.

veRL's ``resume_mode=auto`` reads ``<trainer.default_local_dir>/latest_checkpointed_iteration.txt``
and loads ``global_step_<N>/``. When that folder is gone it silently trains from step 1; an empty
tracker fails with ``int()``'s ``ValueError``; a truncated shard fails minutes later inside a worker
without the file's name, and a shard with damaged bytes inside an intact zip index loads wrong weights or
fails there too. Every shard's entries are read back against their stored CRC-32 (this reads the whole
checkpoint once, as the resume itself does). :func:`check_resume_checkpoint` finds all of these first and raises a
:class:`CheckpointError` naming the file and the fix, or, with ``trainer.resume_fallback=newest``,
picks the newest complete ``global_step_<N>`` and says so in the log.

A step folder is complete when it holds ``data.pt`` (the data order) and, under ``actor/``, one
readable shard per rank for every kind in ``actor_rollout_ref.actor.checkpoint.load_contents``
(``model``, ``optim``, ``extra_state`` files named ``<kind>_world_size_<W>_rank_<R>.pt``).
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TRACKER = "latest_checkpointed_iteration.txt"
STEP_DIR = re.compile(r"^global_step_(\d+)$")
#: ``checkpoint.load_contents`` entry -> shard file prefix written by veRL's FSDP checkpoint manager.
SHARD_KINDS = {"model": "model", "optimizer": "optim", "extra": "extra_state"}
FALLBACKS = ("error", "newest")
CRC_CHUNK = 1 << 24


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be resumed from; the message names the file and the fix."""


def _shard_problem(path: Path) -> str | None:
    """Why ``path`` is not a loadable ``torch.save`` file, or None.

    Reads the zip directory (a truncated file), then every entry's bytes against the CRC-32 the writer
    stored for it (a byte damaged inside an intact index: ``torch.load`` does not check, so it would load
    wrong weights or fail later in a worker). An entry stored without a CRC (0) cannot be checked.
    """
    if not path.is_file():
        return f"{path} is missing"
    size = path.stat().st_size
    if size == 0:
        return f"{path} is empty (0 bytes)"
    with path.open("rb") as fh:
        if fh.read(1) == b"\x80":  # legacy (non-zip) torch.save pickle: nothing cheap to check
            return None
    try:
        with zipfile.ZipFile(path) as zf:
            entries = zf.infolist()
            end = max((i.header_offset + i.compress_size for i in entries), default=0)
            if end > size:
                return f"{path} is truncated ({size} bytes, its index needs {end})"
            for info in entries:
                if info.CRC == 0 and info.file_size:
                    continue
                with zf.open(info) as entry:
                    while entry.read(CRC_CHUNK):
                        pass
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
        if "CRC" in str(err):
            return f"{path} is damaged: {err} (its bytes changed after it was written; {size} bytes)"
        return f"{path} is truncated or not a torch checkpoint ({size} bytes; {err})"
    return None


def step_problems(step_dir: Path, world_size: int, contents: Sequence[str]) -> list[str]:
    """What makes ``step_dir`` (a ``global_step_<N>`` folder) unusable; empty when it is complete."""
    if not step_dir.is_dir():
        return [f"{step_dir} does not exist"]
    problems = []
    actor = step_dir / "actor"
    for item in contents:
        kind = SHARD_KINDS.get(item)
        if kind is None:
            continue
        expected = [actor / f"{kind}_world_size_{world_size}_rank_{r}.pt" for r in range(world_size)]
        if not any(p.exists() for p in expected):
            found = sorted(p.name for p in actor.glob(f"{kind}_world_size_*_rank_0.pt")) if actor.is_dir() else []
            other = f" (found {found[0]}: written by another number of ranks)" if found else ""
            problems.append(f"{actor} has no {kind}_world_size_{world_size}_rank_*.pt{other}")
            continue
        with ThreadPoolExecutor(max_workers=min(len(expected), os.cpu_count() or 1, 8)) as pool:
            problems += [p for p in pool.map(_shard_problem, expected) if p]  # zlib's CRC-32 frees the GIL
    data = _shard_problem(step_dir / "data.pt")
    if data:
        problems.append(data + " (the data loader's position)")
    return problems


def _steps(root: Path) -> list[int]:
    """Step numbers of the ``global_step_<N>`` folders under ``root``, newest first."""
    if not root.is_dir():
        return []
    return sorted((int(m.group(1)) for p in root.iterdir() if (m := STEP_DIR.match(p.name))), reverse=True)


def newest_complete_step(root: Path, world_size: int, contents: Sequence[str]) -> int | None:
    """The highest step under ``root`` whose folder is complete, or None."""
    for step in _steps(root):
        if not step_problems(root / f"global_step_{step}", world_size, contents):
            return step
    return None


def check_checkpoint_dir(
    root: str | Path,
    world_size: int,
    contents: Sequence[str] = ("model", "optimizer", "extra"),
    fallback: str = "error",
) -> Path | None:
    """The ``global_step_<N>`` folder ``resume_mode=auto`` would load from ``root``, checked.

    Returns:
        None when there is nothing to resume (no tracker file), else the step folder to resume from:
        the tracker's, or with ``fallback="newest"`` the newest complete one when the tracker's is not.

    Raises:
        CheckpointError: the tracker is empty or not a number, or names a missing or incomplete step
            (and ``fallback`` is ``"error"`` or no complete step exists).
    """
    if fallback not in FALLBACKS:
        raise CheckpointError(f"trainer.resume_fallback={fallback!r}; accepted: {', '.join(FALLBACKS)}")
    root = Path(root)
    tracker = root / TRACKER
    if not tracker.is_file():
        if _steps(root):
            logger.warning("%s has step folders but no %s; training starts from step 1", root, TRACKER)
        return None
    text = tracker.read_text(encoding="utf-8", errors="replace").strip()
    if not text.isdigit():
        what = "is empty" if not text else f"holds {text[:40]!r}, not a step number"
        problems = [f"{tracker} {what}"]
        step_dir = None
    else:
        step_dir = root / f"global_step_{int(text)}"
        problems = step_problems(step_dir, world_size, contents)
    if not problems:
        return step_dir
    newest = newest_complete_step(root, world_size, contents)
    if fallback == "newest" and newest is not None:
        chosen = root / f"global_step_{newest}"
        logger.warning("cannot resume from the tracker's step (%s); resuming from the newest complete step %s",
                       "; ".join(problems), chosen)
        return chosen
    fixes = [f"delete {root} (or set trainer.resume_mode=disable) to start afresh"]
    if newest is not None:
        fixes.insert(0, f"write {newest} into {tracker} or set trainer.resume_fallback=newest to resume from "
                        f"global_step_{newest}, the newest complete step")
    raise CheckpointError(f"cannot resume: {'; '.join(problems[:3])}. Fix: {', or '.join(fixes)}")


def check_resume_checkpoint(config: Any) -> None:
    """Check the checkpoint ``config`` resumes from; point the config at a fallback step when allowed.

    With ``trainer.resume_mode=auto`` the folder is ``trainer.default_local_dir`` (relative paths from
    the working directory, as veRL does); with ``resume_path`` it is ``trainer.resume_from_path``.
    A fallback step is passed on as ``resume_mode=resume_path`` with ``resume_from_path`` set, so the
    tracker file itself is never rewritten.

    Raises:
        CheckpointError: see :func:`check_checkpoint_dir`.
    """
    trainer = config.trainer
    mode = trainer.get("resume_mode", "auto")
    world_size = int(trainer.nnodes) * int(trainer.n_gpus_per_node)
    ckpt = config.actor_rollout_ref.actor.get("checkpoint") or {}
    contents = list(ckpt.get("load_contents") or ckpt.get("save_contents") or ("model", "optimizer", "extra"))
    if mode == "resume_path":
        step_dir = Path(os.path.abspath(str(trainer.resume_from_path)))
        problems = step_problems(step_dir, world_size, contents)
        if problems:
            raise CheckpointError(f"cannot resume from trainer.resume_from_path: {'; '.join(problems[:3])}")
        return
    if mode != "auto":
        return
    fallback = trainer.get("resume_fallback", "error")
    root = Path(os.path.abspath(str(trainer.default_local_dir)))
    step_dir = check_checkpoint_dir(root, world_size, contents, fallback)
    if step_dir is not None and (root / TRACKER).read_text(encoding="utf-8", errors="replace").strip() != (
        step_dir.name.removeprefix("global_step_")
    ):
        trainer.resume_mode = "resume_path"
        trainer.resume_from_path = str(step_dir)
