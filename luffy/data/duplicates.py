"""Finding a problem that an evaluation file holds more than once (each copy would be scored).

Intended repeats (avg@k copies) share a copy key (``extra_info.index`` in the benchmark parquets);
rows of one problem under different copy keys, or without one, are duplicates. They are reported
in one warning naming the file and the rows, and kept: the file is the user's to fix.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable

logger = logging.getLogger(__name__)

#: Groups listed in the warning (the count covers all of them).
MAX_LISTED = 5


def duplicate_groups(entries: Iterable[tuple[str, Hashable, Hashable | None]]) -> list[list[str]]:
    """Row labels of each problem found under more than one copy key.

    Args:
        entries: ``(row label, problem key, copy key)`` per row; a ``None`` copy key makes the row
            its own copy. Rows sharing both keys are one copy (the first row is listed).
    """
    copies: dict[Hashable, dict[Hashable, str]] = {}
    for n, (label, problem, copy) in enumerate(entries):
        copies.setdefault(problem, {}).setdefault(("row", n) if copy is None else ("copy", copy), label)
    return [list(rows.values()) for rows in copies.values() if len(rows) > 1]


def warn_duplicates(where: str, entries: Iterable[tuple[str, Hashable, Hashable | None]]) -> int:
    """Log one warning naming ``where`` and the rows of each duplicated problem; returns how many."""
    groups = duplicate_groups(entries)
    if groups:
        listed = "; ".join(", ".join(rows) for rows in groups[:MAX_LISTED])
        more = f"; and {len(groups) - MAX_LISTED} more" if len(groups) > MAX_LISTED else ""
        logger.warning(
            "%s: %d problem(s) appear more than once, each copy is scored (%s%s); remove the repeats, "
            "or give intended copies one extra_info.index",
            where,
            len(groups),
            listed,
            more,
        )
    return len(groups)
