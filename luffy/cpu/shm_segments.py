"""Shared-memory segments (``/dev/shm``) a vLLM CPU server leaves behind, recorded and removed.

vLLM's engine and workers talk through ``/dev/shm`` ring buffers, and veRL's weight push goes through
a ``/dev/shm`` bucket. Ray ends a run by killing its actors, so nobody unlinks them: each run leaked
hundreds of MB. The server records the names its process tree maps in a text file (one name per line)
under :func:`record_dir`; whoever ends the run removes them afterwards (``exp_scripts/common_tiny_cpu.sh``
does on exit, even when the driver was killed). A watcher process cannot do it from inside the run:
Ray's raylet reaps and kills every process a dead worker leaves behind.

Command line: ``python -m luffy.cpu.shm_segments RECORD_OR_DIR ... [--wait S]`` removes the recorded
segments once no process maps them (waiting up to S seconds for the run's processes to exit), then the
record files.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterable
from pathlib import Path

SHM_DIR = Path("/dev/shm")
SEGMENT_PREFIXES = ("psm_", "verl_weights_")
"""Names recorded: Python's ``SharedMemory`` default names (vLLM's ring buffers) and veRL's weight buckets.
Ray's own object store files (also in ``/dev/shm``) are left to Ray."""
RECORD_ENV = "LUFFY_SHM_RECORD"
"""Environment variable naming the record file; children of the server (vLLM's processes) inherit it."""
RECORD_GLOB = "luffy_vllm_shm_*.txt"


def record_dir() -> str:
    """Where servers write their record files: ``$LUFFY_RAY_TMP`` (the run's Ray folder, set by the run
    scripts and inherited by Ray's workers) when set, else the system temp folder."""
    import tempfile

    folder = os.environ.get("LUFFY_RAY_TMP")
    return folder if folder and os.path.isdir(folder) else tempfile.gettempdir()


def mapped_segments(pid: int | str = "self") -> set[str]:
    """Names of ``/dev/shm`` files process ``pid`` maps, unlinked ones left out (empty when it is gone)."""
    try:
        lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return set()
    prefix = f"{SHM_DIR}/"
    names = set()
    for line in lines:
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if path.startswith(prefix) and not path.endswith(" (deleted)"):
            names.add(path[len(prefix) :])
    return names


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # the command name (field 2) may hold spaces: the parent pid follows its closing paren
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants alive now."""
    tree, out, todo = _children(), [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(tree.get(current, []))
    return out


def record(names: Iterable[str], record_file: str | os.PathLike | None = None) -> None:
    """Append segment names to the record file (``$LUFFY_SHM_RECORD`` when not given; no-op if neither)."""
    path = record_file or os.environ.get(RECORD_ENV)
    names = sorted(n for n in names if n.startswith(SEGMENT_PREFIXES) and "/" not in n)
    if not path or not names:
        return
    with open(path, "a") as fh:
        fh.write("".join(f"{n}\n" for n in names))


def record_tree(pid: int, record_file: str | os.PathLike | None = None) -> set[str]:
    """Record every segment ``pid`` and its descendants map; returns those names."""
    names = set().union(*(mapped_segments(p) for p in process_tree(pid)))
    record(names, record_file)
    return names


def recorded(record_file: str | os.PathLike) -> set[str]:
    """Names in a record file (empty when it does not exist)."""
    try:
        return {line.strip() for line in Path(record_file).read_text().splitlines() if line.strip()}
    except FileNotFoundError:
        return set()


def _mapped_by_anyone() -> set[str]:
    return set().union(*(mapped_segments(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()))


def remove_unmapped(names: Iterable[str]) -> list[str]:
    """Unlink the named segments no live process maps; returns those removed."""
    in_use = _mapped_by_anyone()
    removed = []
    for name in sorted(set(names) - in_use):
        try:
            (SHM_DIR / name).unlink()
            removed.append(name)
        except FileNotFoundError:
            pass
    return removed


def record_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Record files named, or found (``luffy_vllm_shm_*.txt``) in the folders named."""
    files: list[Path] = []
    for path in map(Path, paths):
        files.extend(sorted(path.glob(RECORD_GLOB)) if path.is_dir() else [path])
    return files


def cleanup(paths: Iterable[str | os.PathLike], wait_s: float = 0.0, poll_s: float = 1.0) -> tuple[list[str], int]:
    """Remove the segments recorded in ``paths`` (files or folders), then the record files.

    Waits up to ``wait_s`` for every recorded segment to be unmapped (the run's processes exiting);
    segments still mapped after that are kept (with their record file). Returns (removed, recorded).
    """
    files = record_files(paths)
    names = set().union(*(recorded(f) for f in files))
    deadline = time.monotonic() + wait_s
    while names & _mapped_by_anyone() and time.monotonic() < deadline:
        time.sleep(poll_s)
    removed = remove_unmapped(names)
    if not names & _mapped_by_anyone():
        for f in files:
            f.unlink(missing_ok=True)
    return removed, len(names)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="record files, or folders holding luffy_vllm_shm_*.txt")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the segments to be unmapped")
    args = parser.parse_args(argv)
    removed, total = cleanup(args.paths, args.wait)
    if total:
        print(f"removed {len(removed)} of {total} /dev/shm segments recorded by vLLM CPU servers")


if __name__ == "__main__":
    main()
