"""math-verify with a hard time and memory bound that works in any thread.

math-verify's own timeout relies on ``signal.alarm`` and therefore only works in a process's main
thread; veRL calls reward functions from executor threads inside Ray workers. Here each comparison
runs in one of a few persistent worker *processes* (plain ``subprocess`` children, so this also works
inside daemonic processes). The caller waits on the worker's pipe with a deadline; a worker that
misses it is killed and replaced in the background, and the answer counts as not verified.

Cheap cases never leave the caller: identical normalised strings, plain numbers, and a result cache.
Everything that runs in the caller is linear in the input, whose length is capped (answers at
``2 * MAX_ANSWER_CHARS``), so no input can stall the caller. A ground truth that
:func:`~luffy.scoring.ground_truth.ground_truth_text` refuses (over ``MAX_GROUND_TRUTH_CHARS``, or
spelling ``nan``/``inf``) verifies nothing and is counted in ``stats["refused"]``.

A ground truth that runs out of time against a plain-number answer is remembered, and its later
answers are refused at once (``stats["slow_gold"]``) rather than each waiting for the deadline; an
answer equal to it (normalised) or already cached is still decided first. ``stats["deadline_misses"]``
counts every answer counted wrong because of the deadline: timeouts plus those refusals.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import re
import select
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

from luffy.scoring.extract import MAX_ANSWER_CHARS, normalize_answer
from luffy.scoring.ground_truth import BadGroundTruth, ground_truth_text

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = float(os.environ.get("LUFFY_SCORING_TIMEOUT", "5"))
DEFAULT_MAX_MEMORY_MB = int(os.environ.get("LUFFY_SCORING_MAX_MEM_MB", "4096"))
MAX_TEXT_CHARS = 200_000
"""Longest response :meth:`BoundedVerifier.verify_text` hands to math-verify whole."""
_WORKER_SCRIPT = Path(__file__).with_name("_mv_worker.py")
_THOUSANDS_RE = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")


_INT_RE = re.compile(r"^[+-]?\d+$")
_DEC_RE = re.compile(r"^[+-]?(\d+\.\d*|\.\d+)$")
_SLASH_RE = re.compile(r"^([+-]?\d+)/([+-]?\d+)$")
_FRAC_RE = re.compile(r"^([+-]?)\\frac\{([+-]?\d+)\}\{([+-]?\d+)\}$")
_FRAC_SHORT_RE = re.compile(r"^([+-]?)\\frac(\d)(\d)$")


def _rational(s: str) -> tuple[Fraction, bool] | None:
    """``s`` as an exact rational (integer, decimal, ``a/b``, ``\\frac{a}{b}``) and whether it was a
    decimal; None for anything else. ``s`` is already normalised (no spaces, ``\\dfrac`` folded)."""
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    try:
        if _INT_RE.match(s):
            return Fraction(int(s)), False
        if _DEC_RE.match(s):
            return Fraction(s), True
        m = _SLASH_RE.match(s)
        if m and int(m.group(2)) != 0:
            return Fraction(int(m.group(1)), int(m.group(2))), False
        m = _FRAC_RE.match(s) or _FRAC_SHORT_RE.match(s)
        if m and int(m.group(3)) != 0:
            value = Fraction(int(m.group(2)), int(m.group(3)))
            return (-value if m.group(1) == "-" else value), False
    except (ValueError, ZeroDivisionError):
        return None
    return None


# Commands whose last brace group completes a value: ``^{..}``, a root, a fraction or binomial (2 groups).
_VALUE_CMD_RE = re.compile(r"(?:\^|\\sqrt(?:\[[^\[\]]*\])?|\\(?:[dtc]?frac|[dt]?binom))$")
# Symbols that stand for a value (a following digit would be a factor, not an argument).
_VALUE_SYMBOL_RE = re.compile(
    r"\\(?:pi|infty|[vV]ar(?:epsilon|theta|pi|rho|sigma|phi)|alpha|beta|[gG]amma|[dD]elta|epsilon|zeta|eta|"
    r"[tT]heta|iota|kappa|[lL]ambda|mu|nu|[xX]i|rho|[sS]igma|tau|[uU]psilon|[pP]hi|chi|[pP]si|[oO]mega)\d"
)


_CLOSE_BEFORE_DIGIT_RE = re.compile(r"(?<!\\)\}(?=\d)")


def _group_starts(s: str) -> dict[int, int]:
    """Index of each ``}`` -> index of its matching ``{`` (escaped braces ignored), in one pass."""
    stack: list[int] = []
    start: dict[int, int] = {}
    for j, ch in enumerate(s):
        if ch not in "{}" or (j > 0 and s[j - 1] == "\\"):
            continue
        if ch == "{":
            stack.append(j)
        elif stack:
            start[j] = stack.pop()
    return start


# A value command is short: look for it only this far back (keeps the check linear in the input).
_CMD_WINDOW = 64


def _juxtaposed_number(s: str) -> bool:
    """True when a digit directly follows a complete value in normalised ``s`` without an operator:
    ``16\\pi1``, ``\\frac{2}{5}1``, ``\\sqrt{3}2``, ``x^{2}1``. Subscripts (``\\log_{2}8``), ``\\text{..}``,
    ``\\begin{..}`` and function arguments (``\\ln2``, ``\\frac17``) do not count. Linear in ``len(s)``."""
    if _VALUE_SYMBOL_RE.search(s):
        return True
    group_start = None
    for m in _CLOSE_BEFORE_DIGIT_RE.finditer(s):
        if group_start is None:
            group_start = _group_starts(s)
        i, groups = m.start(), 0
        # Walk back over the brace groups that end here (``\\frac{a}{b}`` has two) to their command;
        # after ``\\frac{270}`` the digit is the second argument (``\\frac{270}7``), not a factor.
        while (i := group_start.get(i, -1)) > 0:
            groups += 1
            cmd = _VALUE_CMD_RE.search(s, max(0, i - _CMD_WINDOW), i)
            if cmd:
                if groups >= (2 if cmd.group().endswith(("frac", "binom")) else 1):
                    return True
                break
            if s[i - 1] != "}":
                break
            i -= 1
    return False


def fast_verdict(gold: str, pred: str) -> bool | None:
    """Decide the easy cases without math-verify; None when a symbolic check is needed.

    Equal normalised strings are equivalent; two exact rationals are compared exactly. A decimal
    that differs from the gold is left to math-verify, which may accept a rounded value.
    """
    g, p = normalize_answer(gold), normalize_answer(pred)
    if not p:
        return False
    if g == p:
        return True
    # math-verify reads juxtaposition as multiplication, so a stray digit appended to a correct answer
    # (``16\\pi1``, ``\\frac{2}{5}1``) would verify; such a non-canonical form is wrong unless the gold has it.
    if _juxtaposed_number(p) and not _juxtaposed_number(g):
        return False
    if len(g) > 64 or len(p) > 64:
        return None
    gr, pr = _rational(g), _rational(p)
    if gr is None or pr is None:
        return None
    if gr[0] == pr[0]:
        return True
    return None if (gr[1] or pr[1]) else False


class _Worker:
    """One long-lived verification process speaking a line protocol over pipes."""

    def __init__(self, max_memory_mb: int) -> None:
        env = dict(os.environ)
        env["LUFFY_SCORING_MAX_MEM_MB"] = str(max_memory_mb)
        env.setdefault("OMP_NUM_THREADS", "1")
        flags = ["-P"] if sys.version_info >= (3, 11) else []
        self.proc = subprocess.Popen(
            [sys.executable, *flags, str(_WORKER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        self._fd = self.proc.stdout.fileno()
        self._buf = b""

    def read_line(self, deadline: float) -> str | None:
        """Next reply line, or None when the deadline passes or the process died."""
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self._fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(self._fd, 4096)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode("ascii", "replace").strip()

    def ask(self, gold: str, pred: str, timeout_s: float, mode: str | None = None) -> str | None:
        """Send one comparison; the reply ("1", "0", "E") or None on timeout/death."""
        request = [gold, pred] if mode is None else [gold, pred, mode]
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode("utf-8"))
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            return None
        return self.read_line(time.monotonic() + timeout_s)

    def kill(self) -> None:
        """Terminate the process and reap it."""
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            logger.warning("verification worker %s did not exit", self.proc.pid)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


class BoundedVerifier:
    """Thread-safe math-verify front end with a per-answer deadline.

    Args:
        num_workers: worker processes (default ``min(2, cpu_count)``, env ``LUFFY_SCORING_WORKERS``).
        timeout_s: seconds one comparison may take before its worker is killed.
        max_memory_mb: address-space cap per worker (0 disables).
        cache_size: number of (gold, pred) verdicts remembered.
        startup_timeout_s: how long to wait for a worker to come up.
    """

    def __init__(
        self,
        num_workers: int | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_memory_mb: int = DEFAULT_MAX_MEMORY_MB,
        cache_size: int = 100_000,
        startup_timeout_s: float = 120.0,
    ) -> None:
        if num_workers is None:
            num_workers = int(os.environ.get("LUFFY_SCORING_WORKERS", "0")) or min(2, os.cpu_count() or 1)
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.num_workers = num_workers
        self.timeout_s = timeout_s
        self.max_memory_mb = max_memory_mb
        self.startup_timeout_s = startup_timeout_s
        self._cache: OrderedDict[tuple, bool] = OrderedDict()
        # Ground truths whose check ran out of time against a plain-number answer: the ground truth is what
        # is slow, so its later answers are refused at once instead of each costing the deadline.
        self._slow_golds: OrderedDict[str, None] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: set[_Worker] = set()
        self._started = False
        self._closed = False
        self._pid = os.getpid()
        self.stats = {
            "fast": 0,
            "cached": 0,
            "worker": 0,
            "timeouts": 0,
            "errors": 0,
            "refused": 0,
            "slow_gold": 0,
            "deadline_misses": 0,
        }

    # ----------------------------------------------------------------- worker management
    def _spawn(self) -> None:
        """Start one worker and put it in the idle queue once it reports ready."""
        try:
            worker = _Worker(self.max_memory_mb)
        except OSError as exc:
            logger.error("cannot start a verification worker: %s", exc)
            return
        with self._lock:
            self._all.add(worker)
        if worker.read_line(time.monotonic() + self.startup_timeout_s) == "R" and not self._closed:
            self._idle.put(worker)
            return
        if not self._closed:
            logger.error("verification worker failed to start (pid %s)", worker.proc.pid)
        self._retire(worker)

    def _retire(self, worker: _Worker) -> None:
        with self._lock:
            self._all.discard(worker)
        worker.kill()

    def _replace_async(self, worker: _Worker) -> None:
        """Kill ``worker`` and start its replacement without blocking the caller."""

        def run() -> None:
            self._retire(worker)
            if not self._closed:
                self._spawn()

        threading.Thread(target=run, name="luffy-verify-respawn", daemon=True).start()

    def start(self) -> None:
        """Start the worker processes (done lazily on first use)."""
        with self._lock:
            if os.getpid() != self._pid:  # inherited across fork: the pipes belong to the parent
                self._all, self._idle, self._pid, self._started = set(), queue.Queue(), os.getpid(), False
            if self._started:
                return
            self._started = True
        threads = [threading.Thread(target=self._spawn, daemon=True) for _ in range(self.num_workers)]
        for t in threads:
            t.start()

    def close(self) -> None:
        """Stop all workers."""
        self._closed = True
        with self._lock:
            workers = list(self._all)
            self._all.clear()
        for w in workers:
            w.kill()
        self._started = False

    # ----------------------------------------------------------------- verification
    def _remember(self, key: tuple, verdict: bool) -> None:
        with self._lock:
            self._cache[key] = verdict
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _count(self, *keys: str) -> None:
        with self._lock:  # verify_many counts from several threads
            for key in keys:
                self.stats[key] += 1

    def _usable_gold(self, gold: str) -> str | None:
        """The ground truth as checked text, or None (counted and logged) when it is refused."""
        try:
            return ground_truth_text(gold)
        except BadGroundTruth as err:
            self._count("refused")
            logger.warning("ground truth refused (%s); answer counted as not verified", err)
            return None

    def verify(self, gold: str, pred: str | None) -> bool:
        """True when ``pred`` is mathematically equivalent to ``gold`` (within the deadline)."""
        if pred is None:
            return False
        gold = self._usable_gold(gold)
        if gold is None:
            return False
        pred = str(pred)
        if not pred.strip() or len(pred) > 2 * MAX_ANSWER_CHARS:
            return False
        # Definite verdicts first: an answer equal to a slow ground truth is still right.
        fast = fast_verdict(gold, pred)
        if fast is not None:
            self._count("fast")
            return fast
        key = (gold, pred)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            self._count("cached")
            return cached
        if gold in self._slow_golds:
            self._count("slow_gold", "deadline_misses")
            return False
        verdict = self._ask_worker(gold, pred, None)
        self._remember(key, verdict)
        return verdict

    def _ask_worker(self, gold: str, pred: str, mode: str | None) -> bool:
        """One comparison in a worker process, within the deadline (a late or dead worker: False)."""
        if self._closed:
            raise RuntimeError("BoundedVerifier is closed")
        if not self._started or os.getpid() != self._pid:
            self.start()
        try:
            worker = self._idle.get(timeout=self.startup_timeout_s)
        except queue.Empty:
            logger.error("no verification worker available; counting answer as not verified")
            return False
        reply = worker.ask(gold, pred, self.timeout_s, mode)
        if reply is None:
            self._count("timeouts", "deadline_misses")
            logger.warning("math verification exceeded %.1fs; pred=%r", self.timeout_s, pred[:80])
            self._replace_async(worker)
            verdict = False
            if mode is None and _rational(normalize_answer(pred)) is not None:
                logger.warning(
                    "ground truth %r... is slow to check; its later answers count as not verified", gold[:60]
                )
                with self._lock:
                    self._slow_golds[gold] = None
                    if len(self._slow_golds) > 1000:
                        self._slow_golds.popitem(last=False)
        else:
            self._idle.put(worker)
            self._count("worker", *(("errors",) if reply == "E" else ()))
            verdict = reply == "1"
        return verdict

    def verify_text(self, gold: str, text: str, mode: str) -> bool:
        """math-verify called the way another evaluation protocol calls it (see ``_mv_worker.verify_text``):
        ``mode="luffy"`` parses a whole response, ``mode="oat"`` one boxed answer. Same deadline and
        memory cap as :meth:`verify`; texts over ``MAX_TEXT_CHARS`` count as not verified."""
        text = str(text)
        if not text.strip():
            return False
        gold = self._usable_gold(gold)
        if gold is None:
            return False
        if len(text) > MAX_TEXT_CHARS:
            self._count("refused")
            return False
        key = (gold, text, mode)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            self._count("cached")
            return cached
        verdict = self._ask_worker(gold, text, mode)
        self._remember(key, verdict)
        return verdict

    def verify_many(self, pairs: Iterable[tuple[str, str | None]]) -> list[bool]:
        """Verify many (gold, pred) pairs, using all workers concurrently."""
        pairs = list(pairs)
        if len(pairs) <= 1 or self.num_workers == 1:
            return [self.verify(g, p) for g, p in pairs]
        with ThreadPoolExecutor(max_workers=self.num_workers) as ex:
            return list(ex.map(lambda gp: self.verify(*gp), pairs))


_DEFAULT: BoundedVerifier | None = None
_DEFAULT_LOCK = threading.Lock()


def get_verifier() -> BoundedVerifier:
    """The process-wide verifier (created on first use, closed at exit)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = BoundedVerifier()
            atexit.register(_DEFAULT.close)
        return _DEFAULT


def verify_math(gold: str, pred: str | None) -> bool:
    """Bounded math-verify check of an extracted answer against the ground truth."""
    return get_verifier().verify(gold, pred)
