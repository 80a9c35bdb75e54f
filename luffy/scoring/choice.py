"""Multiple-choice benchmarks: recognising them and extracting the chosen letter."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from luffy.scoring.extract import after_think, last_boxed, tail

LETTERS = "ABCDEFGHIJ"
"""Option letters (MMLU-Pro has up to ten options)."""

_MC_SOURCE_RE = re.compile(r"(arc[_-]?c|arc[_-]challenge|gpqa|mmlu[_-]?pro|mmlu)", re.IGNORECASE)

_L = f"[{LETTERS}]"
# Ordered from the most to the least explicit phrasing; within one pattern the last match wins.
# Linear on any text: a pattern starts with a literal, and each repeat is followed by something its
# characters cannot be (no two adjacent repeats share a character), so a failed match gives back
# each character of a run once. The decoration between "answer" and the letter (spaces, "is", ":",
# "*", "$", "(") is one repeat of disjoint alternatives, not a chain of optional runs: five adjacent
# ``\s*`` made "answer" + 80 spaces + "1" cost k^5 (17 s).
_PATTERNS: list[re.Pattern[str]] = [
    re.compile(rf"(?i:answer)(?:[\s*:$(]|(?i:is)(?![a-z]))*(?:\\text\{{)?({_L})(?![A-Za-z0-9])"),
    re.compile(rf"(?i:option|choice)[\s*]*\(?({_L})(?![A-Za-z0-9])"),
    re.compile(rf"\(({_L})\)"),
]
_FINAL_LINE_RE = re.compile(rf"^[\s\*\$\(\[]*({_L})(?:[\)\]\.:].*|[\s\*\$]*)$")
_STANDALONE_RE = re.compile(rf"(?<![A-Za-z'’-])({_L})(?![A-Za-z'’-])")
_TEXT_WRAP_RE = re.compile(r"^\\text\{(.*)\}$")
_LETTER_RE = re.compile(rf"^[\(\[\s]*({_L})(?:[\)\]\.:\s].*)?$", re.IGNORECASE | re.DOTALL)
_OPTION_LINE_RE = re.compile(rf"^({_L})\) ", re.MULTILINE)


def is_multiple_choice(data_source: str | None, extra_info: Mapping[str, Any] | None = None) -> bool:
    """True for ARC-c, GPQA(-diamond), MMLU(-Pro) style sources, or a row flagged as multiple choice.

    A row may carry ``extra_info["multiple_choice"] = True`` or a ``choices`` list.
    """
    if extra_info:
        flag = extra_info.get("multiple_choice")
        if flag is not None:
            return bool(flag)
        if extra_info.get("choices") is not None:
            return True
    return bool(data_source) and _MC_SOURCE_RE.search(str(data_source)) is not None


def normalize_letter(answer: str | None) -> str | None:
    """Reduce a ground truth or extracted option ("C", "(c)", "C) foo", "\\text{C}") to its letter."""
    if answer is None:
        return None
    s = str(answer).strip()
    s = _TEXT_WRAP_RE.sub(r"\1", s).strip()
    m = _LETTER_RE.match(s)
    return m.group(1).upper() if m else None


def valid_letters(extra_info: Mapping[str, Any] | None) -> str:
    """Option letters allowed for a row: from ``choices`` or ``n_choices`` in ``extra_info``, else A-J."""
    if extra_info:
        choices = extra_info.get("choices")
        n = len(choices) if isinstance(choices, (list, tuple)) else extra_info.get("n_choices")
        if isinstance(n, int) and 1 <= n <= len(LETTERS):
            return LETTERS[:n]
    return LETTERS


def count_choices(question: str) -> int | None:
    """Number of options laid out as "A) ..." lines in ``question`` (None when there are none)."""
    found = _OPTION_LINE_RE.findall(question)
    return len(set(found)) or None


def extract_choice(response: str, letters: str = LETTERS) -> str | None:
    """The option letter a response settles on, or None.

    Searched in the response tail after ``</think>`` (when present): the last ``\\boxed{}``,
    then "Answer: X" / "ANSWER: X" / "the answer is (X)", "option X", "(X)", a final line that is
    just a letter, and finally the last standalone capital letter. Only ``letters`` count.
    """
    if not response:
        return None
    text = after_think(tail(response))
    boxed = last_boxed(text)
    if boxed is not None:
        letter = normalize_letter(boxed)
        if letter and letter in letters:
            return letter
    for pattern in _PATTERNS:
        matches = [m.upper() for m in pattern.findall(text) if m.upper() in letters]
        if matches:
            return matches[-1]
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if lines:
        m = _FINAL_LINE_RE.match(lines[-1])
        if m and m.group(1) in letters:
            return m.group(1)
    matches = _STANDALONE_RE.findall(text[-400:])
    # "A" and "I" are too often words; accept them only when nothing else is present.
    strong = [x for x in matches if x not in ("A", "I") and x in letters]
    if strong:
        return strong[-1]
    return None
