"""What counts as a usable reference answer, checked the same way at preparation and scoring time.

A ground truth is a non-empty string, or a finite int/float (turned into its string). NaN and
infinities, booleans, containers (dicts, lists) and blank strings are refused: ``str()`` would turn
them into ``"nan"``, ``"{'a': 1}"`` or ``"[1, 2]"``, and ``\\boxed{nan}`` would then score correct.
For the same reason a string that spells a missing or non-finite value (``"nan"``, ``"NaN"``,
``"-inf"``, ``"Infinity"``, pandas' ``"<NA>"``/``"NaT"``) is refused like the number itself; LaTeX's
``\\infty`` is a real answer and stays.
A ground truth longer than :data:`MAX_GROUND_TRUTH_CHARS` is refused as well, which bounds the work
every scoring path does per answer.
"""

from __future__ import annotations

import math
from typing import Any

MAX_GROUND_TRUTH_CHARS = 4096
"""Longest accepted reference answer (LUFFY's sets stay under 300 characters)."""


#: Spellings (case-insensitive, sign ignored) that ``str()`` gives a missing or non-finite value.
NON_VALUE_SPELLINGS = frozenset({"nan", "inf", "infinity", "<na>", "nat"})


class BadGroundTruth(ValueError):
    """A reference answer that cannot be scored against; the message says why."""


def ground_truth_text(value: Any) -> str:
    """``value`` as the reference-answer string, or raise :class:`BadGroundTruth` saying why not."""
    if value is None:
        raise BadGroundTruth("the answer is missing (null)")
    if isinstance(value, bool):
        raise BadGroundTruth(f"the answer is a boolean ({value})")
    if isinstance(value, int):
        value = str(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise BadGroundTruth(f"the answer is the non-finite number {value}")
        value = str(value)
    elif hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy scalar
        return ground_truth_text(value.item())
    if not isinstance(value, str):
        raise BadGroundTruth(f"the answer is a {type(value).__name__}, not a string or number")
    if not value.strip():
        raise BadGroundTruth("the answer is an empty string")
    if value.strip().lstrip("+-").lower() in NON_VALUE_SPELLINGS:
        raise BadGroundTruth(f"the answer is the string {value.strip()!r}, a missing or non-finite value")
    if len(value) > MAX_GROUND_TRUTH_CHARS:
        raise BadGroundTruth(f"the answer is {len(value)} characters long (at most {MAX_GROUND_TRUTH_CHARS})")
    return value
