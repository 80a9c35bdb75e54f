"""Pre-start checks that platform packages add to LUFFY's preflight, found through entry points.

The entry point runs its checks before ``verl`` is imported (so a bad run fails in seconds), which is
before veRL's plugin loading registers anything. A platform package therefore names its checks in the
``luffy.preflight`` entry-point group of its distribution (``setup.py``); each is a function taking the
composed config and raising ``ValueError`` with one line. LUFFY's code never imports a platform package.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Any

ENTRY_POINT_GROUP = "luffy.preflight"


def registered_checks() -> list[Callable[[Any], None]]:
    """Every check of the ``luffy.preflight`` group, in name order."""
    points = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name)
    return [point.load() for point in points]


def run_platform_checks(config: Any) -> None:
    """Run every registered platform check on ``config``.

    Raises:
        ValueError: the first failing check's one-line message.
    """
    for check in registered_checks():
        check(config)
