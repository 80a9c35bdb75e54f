"""An OAT-style boxed-answer grader (the ``--add_oat_evaluate`` check of LUFFY's evaluation script).

Written from the documented behaviour of OAT's ``boxed_reward_fn`` (Oat-Zero's "high recall" math
grader, called by LUFFY with ``fast=False``):

* the answer is the content of the *last* ``\\boxed{...}`` of the text; a text without ``\\boxed``, a
  last box that is never closed, or one not written ``\\boxed{`` (``\\boxed 5``) has no answer, which
  is wrong (an earlier complete box is not used);
* a boxed ground truth is unboxed the same way;
* correct when the two agree after the MATH-dataset string normalisation (Hendrycks), or after a
  looser normalisation (lower case, no ``$``/``%``/units/braces, "a and b" as a list), or when
  math-verify finds them equal with both wrapped as ``$...$``.

One step differs: OAT also asks sympy to simplify the difference of the two answers, parsing them
with ``parse_expr``, which evaluates text as Python. Scoring here never evaluates model text, so that
step is left to math-verify (which OAT's ``fast=False`` mode runs anyway, and which decides the same
equalities symbolically). Everything here is linear string work; math-verify runs in the bounded
worker pool (:mod:`luffy.scoring.math_verify_bounded`), and a boxed answer over ``2 * MAX_ANSWER_CHARS``
characters counts as wrong without being compared (OAT refuses long repetitive ones).
"""

from __future__ import annotations

import re

from luffy.scoring.extract import MAX_ANSWER_CHARS
from luffy.scoring.math_verify_bounded import get_verifier

_BOX = "\\boxed"


def oat_boxed_answer(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` in ``text`` (None when there is none or it is unclosed)."""
    start = text.rfind(_BOX)
    if start < 0:
        return None
    open_at = start + len(_BOX)
    if open_at >= len(text) or text[open_at] != "{":
        return None
    depth = 0
    for i in range(open_at, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
    return None


_TEXT_WRAP_RE = re.compile(r"^\\text\{(.+?)\}$")
_UNIT_WORDS = (
    "degrees", "degree", "units", "unit", "inches", "inch", "feet", "foot", "meters", "meter", "cm", "km",
    "miles", "mile", "hours", "hour", "minutes", "minute", "seconds", "second", "days", "day", "dollars", "cents",
    "mph", "points", "ways", "square",
)  # fmt: skip
_UNIT_RE = re.compile(r"(^|\W)(?:" + "|".join(_UNIT_WORDS) + r")(?=$|\W)")


def _fix_short_fracs(s: str) -> str:
    r"""``\frac12`` -> ``\frac{1}{2}``, ``\frac1{7}`` -> ``\frac{1}{7}``."""
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    return re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", s)


def mathd_normalize(answer: str) -> str:
    """The MATH dataset's answer normalisation (Hendrycks et al.), as OAT applies it."""
    s = answer.strip()
    m = _TEXT_WRAP_RE.match(s)
    if m:
        s = m.group(1).strip()
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac").replace("bmatrix", "pmatrix")
    s = s.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    s = s.replace("\\left", "").replace("\\right", "")
    stripped = re.sub(r"\\text\{[^{}]*\}$", "", s).strip()  # a trailing unit
    if stripped:
        s = stripped
    without_units = _UNIT_RE.sub(r"\1", s)
    if without_units.strip():
        s = without_units
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "").replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if s.startswith("."):
        s = "0" + s
    parts = s.split("=")
    if len(parts) == 2 and len(parts[0].strip()) <= 2:  # "x = 5" -> "5"
        s = parts[1]
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    s = _fix_short_fracs(s.replace(" ", ""))
    if s == "0.5":
        s = "\\frac{1}{2}"
    m = re.fullmatch(r"(-?\d+)/(\d+)", s)
    if m:
        s = f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}"
    return s


def loose_normalize(answer: str) -> str:
    """OAT's looser form for its string comparison: no ``$``/``%``/units/braces/spaces, lower case,
    "a and b" / "a or b" as "a,b", integral floats as integers, thousands separators dropped."""
    s = answer.strip()
    m = _TEXT_WRAP_RE.match(s)
    if m:
        s = m.group(1)
    s = s.replace("\\%", "").replace("\\$", "").replace("$", "").replace("%", "")
    s = s.replace(" or ", " , ").replace(" and ", " , ")
    s = s.replace("million", "*10^6").replace("billion", "*10^9").replace("trillion", "*10^12")
    s = _UNIT_RE.sub(r"\1", s)
    s = re.sub(r"\^ *\\circ", "", s).replace(",\\!", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"- *", "-", s)
    s = re.sub(r"(\d) +(\d)", r"\1+\2", s)  # a mixed number "7 3/4" -> "7+3/4"
    s = s.replace(" ", "").replace("{", "").replace("}", "").lower()
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    try:
        value = float(s)
        if value.is_integer() and abs(value) < 1e15:
            s = str(int(value))
    except ValueError:
        pass
    return s


def oat_grade(answer: str, ground_truth: str) -> bool:
    """True when the extracted ``answer`` matches ``ground_truth`` (boxed ground truths are unboxed)."""
    if _BOX in ground_truth:
        unboxed = oat_boxed_answer(ground_truth)
        if unboxed is None:
            return False
        ground_truth = unboxed
    if len(answer) > 2 * MAX_ANSWER_CHARS:
        return False
    if mathd_normalize(answer) == mathd_normalize(ground_truth):
        return True
    loose = loose_normalize(answer)
    if loose and loose == loose_normalize(ground_truth):
        return True
    return get_verifier().verify_text(ground_truth, answer, "oat")


def oat_boxed_correct(text: str, ground_truth: str) -> bool:
    """OAT's verdict on a whole response: its last box graded against ``ground_truth``."""
    answer = oat_boxed_answer(text)
    return answer is not None and oat_grade(answer, ground_truth)
