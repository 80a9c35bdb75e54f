"""Final-answer extraction from model responses (pure string work, nothing is evaluated).

Only the tail of a response is searched (``MAX_SEARCH_CHARS``) and an extracted answer longer than
``MAX_ANSWER_CHARS`` is rejected, so a huge response costs linear time and never reaches the
symbolic verifier.
"""

from __future__ import annotations

import re

MAX_SEARCH_CHARS = 16_000
"""Only this many trailing characters of a response are searched for the final answer."""

MAX_ANSWER_CHARS = 512
"""Extracted answers longer than this are treated as missing."""

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
# Patterns run on model text must stay linear: each starts with a literal (or ``^[ \t]*`` per line)
# and no two adjacent repeats can match the same character, so a failed match gives back each
# character of a run once. No two adjacent whitespace runs and no ``^\s*`` under MULTILINE: either
# makes a response of many blank lines cost quadratic time. ``tests/test_faults.py`` attacks every
# compiled pattern of the scoring modules with inputs of growing size.
_PLAIN_RE = re.compile(
    r"(?:final\s+answer|the\s+answer)\s*(?:is|:|=)\s*(?::\s*)?(.+)|^[ \t]*\**answer\**\s*:\s*(?:\*+\s*)?(.+)",
    re.IGNORECASE | re.MULTILINE,
)


def tail(text: str, limit: int = MAX_SEARCH_CHARS) -> str:
    """Return the last ``limit`` characters of ``text``."""
    return text[-limit:] if len(text) > limit else text


def after_think(text: str) -> str:
    """Return the part after the last ``</think>`` (the whole text when there is none)."""
    idx = text.rfind("</think>")
    return text[idx + len("</think>") :] if idx >= 0 else text


_BRACE_RE = re.compile(r"\\[{}]|[{}]")  # an escaped brace (skipped) or a brace


def _closing_braces(text: str, start: int = 0) -> dict[int, int]:
    """Index of each ``{`` at or after ``start`` -> index of its matching ``}``, in one pass.

    Escaped ``\\{`` / ``\\}`` are skipped; the regex jumps between braces, so plain text costs C speed.
    """
    stack: list[int] = []
    close: dict[int, int] = {}
    for m in _BRACE_RE.finditer(text, start):
        ch = m.group()
        if ch == "{":
            stack.append(m.start())
        elif ch == "}" and stack:
            close[stack.pop()] = m.start()
    return close


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` (or ``\\fbox{...}``); None if there is none.

    An unterminated last box is skipped in favour of the previous complete one. Linear time: the
    braces after the first box are matched once, not rescanned from every box (braces before it
    cannot close a box).
    """
    starts = [m.end() for m in _BOXED_RE.finditer(text)]
    if not starts:
        return None
    close = _closing_braces(text, starts[0] - 1)
    for start in reversed(starts):
        end = close.get(start - 1)
        if end is not None:
            return text[start:end].strip()
    return None


def _strip_trailing_dots(text: str) -> str:
    """``text`` without its trailing run of dots and whitespace (a ``[.\\s]+$`` search would retry
    from every character of a long run: quadratic)."""
    end = len(text)
    while end and (text[end - 1] == "." or text[end - 1].isspace()):
        end -= 1
    return text[:end]


def _clean_plain(answer: str) -> str:
    """Trim decoration around a plain-text final answer ("$5$.", "**5**")."""
    answer = answer.strip().strip("*").strip()
    answer = _strip_trailing_dots(answer)
    if answer.startswith("$") and answer.count("$") >= 2:
        answer = answer[1 : answer.index("$", 1)]
    elif answer.startswith("\\(") and "\\)" in answer:
        answer = answer[2 : answer.index("\\)")]
    elif answer.startswith("\\[") and "\\]" in answer:
        answer = answer[2 : answer.index("\\]")]
    return answer.strip().rstrip(".").strip()


def extract_math_answer(response: str) -> str | None:
    """Extract the final answer of a math response.

    Order: the last ``\\boxed{}`` in the response tail; otherwise the last plain statement
    ("The answer is 5", "Final answer: 5", a line "Answer: 5"). Returns None when nothing is found
    or the answer is implausibly long.
    """
    if not response:
        return None
    text = tail(response)
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed if 0 < len(boxed) <= MAX_ANSWER_CHARS else None
    matches = list(_PLAIN_RE.finditer(after_think(text)))
    if not matches:
        return None
    last = matches[-1]
    answer = _clean_plain(last.group(1) or last.group(2) or "")
    if not answer or len(answer) > MAX_ANSWER_CHARS:
        return None
    return answer


_SPACING_CMD_RE = re.compile(r"\\(?:left|right|displaystyle|!|,|;|:)")
_EMPTY_TEXT_RE = re.compile(r"\\text\{\s*\}")
_SPACE_RE = re.compile(r"\s+")


def normalize_answer(answer: str) -> str:
    """Cheap canonical form used for the fast path and for majority voting."""
    s = answer.strip()
    s = _SPACING_CMD_RE.sub("", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _EMPTY_TEXT_RE.sub("", s)
    s = _SPACE_RE.sub("", s)
    s = s.rstrip(".")
    if s.startswith("$") and s.endswith("$") and len(s) >= 2:
        s = s.strip("$")
    return s
