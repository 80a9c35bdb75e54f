"""math-verify comparison of one extracted answer with one ground truth.

This file has two roles:

* ``verify_answer`` is imported in-process (baseline, fallback) by :mod:`luffy.scoring.math_verify_bounded`;
* run as a script (``python _mv_worker.py``) it becomes a long-lived worker that reads one JSON request
  per line on stdin (``[gold, pred]``, or ``[gold, text, mode]`` for :func:`verify_text`) and answers
  ``1``/``0``/``E`` per line on stdout.

It imports nothing from ``luffy`` so that the worker starts without the package being importable.
math-verify turns LaTeX into sympy expressions; no text is ever evaluated as Python code. Its own
timeouts (``signal.alarm``) are disabled here: the parent process enforces the deadline by killing
the worker.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import warnings

_GOLD_CONFIG = None
_PRED_CONFIG = None


def _configs():
    """Build (once) the extraction configs for gold and predicted answers."""
    global _GOLD_CONFIG, _PRED_CONFIG
    if _GOLD_CONFIG is None:
        import math_verify.grader
        import math_verify.parser
        from math_verify import ExprExtractionConfig, LatexExtractionConfig

        # The deadline is enforced by the caller; silence the "timeout disabled" notice.
        math_verify.grader.TIMEOUT_WARNING_SHOWN = True
        math_verify.parser.TIMEOUT_WARNING_SHOWN = True

        _GOLD_CONFIG = [LatexExtractionConfig(), ExprExtractionConfig()]
        _PRED_CONFIG = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    return _GOLD_CONFIG, _PRED_CONFIG


def _as_latex(answer: str) -> str:
    """Wrap a bare answer so that math-verify's LaTeX extractor sees it as one expression."""
    answer = answer.strip()
    if "\\boxed" in answer or answer.startswith("$"):
        return answer
    return f"${answer}$"


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> list:
    """Parsed ground truth (cached: a rollout group verifies the same gold many times)."""
    from math_verify import parse

    gold_cfg, _ = _configs()
    try:
        return parse(_as_latex(gold), extraction_config=gold_cfg, parsing_timeout=None)
    except Exception:  # noqa: BLE001
        return []


def verify_answer(gold: str, pred: str) -> bool:
    """True when math-verify finds ``pred`` equivalent to ``gold`` (both short answer strings).

    No time bound here: callers that need one run this in a worker process.
    """
    from math_verify import parse, verify

    _, pred_cfg = _configs()
    try:
        gold_parsed = _parse_gold(gold)
        pred_parsed = parse(_as_latex(pred), extraction_config=pred_cfg, parsing_timeout=None)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
    except Exception:  # noqa: BLE001 - any parser/sympy failure means "not verified"
        return False


def verify_text(gold: str, text: str, mode: str) -> bool:
    """math-verify as other evaluation protocols call it (``mode``), no time bound here.

    ``"luffy"``: LUFFY's evaluation script: the whole ``text`` (a response) parsed with math-verify's
    default extraction, against the ground truth wrapped as ``$gold$``.
    ``"oat"``: the last step of OAT's boxed grader: both answers ``$``-wrapped unless they hold a ``$``,
    the LaTeX (boxed first) or plain-expression extractor, no fallback.
    """
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    if mode not in ("luffy", "oat"):
        raise ValueError(f"unknown mode {mode!r}")
    _configs()  # silences math-verify's timeout notice
    try:
        if mode == "luffy":
            gold_parsed = parse(f"${gold}$", parsing_timeout=None)
            pred_parsed = parse(text, parsing_timeout=None)
        else:
            config = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
            # OAT passes ``extraction_mode=["first_match"]``, a list, which math-verify compares with a string
            # and so runs as its default "any_match": reproduced here as what actually runs.
            kwargs = dict(extraction_config=config, fallback_mode="no_fallback", parsing_timeout=None)
            gold_parsed = parse(gold if "$" in gold else f"${gold}$", **kwargs)
            pred_parsed = parse(text if "$" in text else f"${text}$", **kwargs)
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
    except Exception:  # noqa: BLE001 - any parser/sympy failure means "not verified"
        return False


def _limit_memory() -> None:
    """Cap the worker's address space (``LUFFY_SCORING_MAX_MEM_MB``, 0 disables)."""
    mb = int(os.environ.get("LUFFY_SCORING_MAX_MEM_MB", "0") or 0)
    if mb <= 0:
        return
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (mb * 1024 * 1024, mb * 1024 * 1024))
    except (ImportError, ValueError, OSError):
        pass


def main() -> None:
    """Serve requests from stdin until it closes."""
    logging.disable(logging.CRITICAL)
    warnings.filterwarnings("ignore")
    _limit_memory()
    _configs()
    verify_answer("1", "1")  # warm the caches before announcing readiness
    out = sys.stdout
    out.write("R\n")
    out.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            if len(request) == 3:
                ok = verify_text(str(request[0]), str(request[1]), str(request[2]))
            else:
                ok = verify_answer(str(request[0]), str(request[1]))
            reply = "1" if ok else "0"
        except MemoryError:
            reply = "E"
        except Exception:  # noqa: BLE001
            reply = "E"
        out.write(reply + "\n")
        out.flush()


if __name__ == "__main__":
    main()
