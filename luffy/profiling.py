"""Opt-in wall-clock spans of one training step, in every process of a run (``LUFFY_PROFILE_DIR``).

veRL's ``timing_s/*`` timers cover the trainer's phases; they cannot say how much of ``update_actor``
is the model and how much is TransferQueue, Ray or Python around it, or what the rollout server and
the agent loop do inside ``gen``. With ``LUFFY_PROFILE_DIR`` set before Ray starts (Ray's workers
inherit it), :func:`install` (run by ``luffy.plugin`` in every process) wraps the callables of
:data:`PROBES` that the process has imported, and each call appends one line
``{"name", "pid", "start", "end", ...}`` (wall-clock seconds) to ``LUFFY_PROFILE_DIR/spans-<pid>.jsonl``.
Measurement only: a wrapper times the call and changes nothing else; unset, nothing is wrapped.

``benchmarks/bench_step.py`` reads the files back (:func:`read_spans`) and reports, per warm step, the
wall time each span name covered (overlapping calls merged).
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import inspect
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ENV = "LUFFY_PROFILE_DIR"

PROBES: dict[str, str] = {
    # trainer process: the step loop's pieces outside veRL's phase timers, and its TransferQueue calls
    "verl.trainer.ppo.v1.trainer_base:PPOTrainer.step": "trainer/step (phases)",
    "verl.trainer.ppo.v1.trainer_base:PPOTrainer._compute_metrics": "trainer/metrics",
    "verl.utils.tracking:Tracking.log": "trainer/log",
    "transfer_queue:kv_batch_get": "trainer/tq_get",
    "transfer_queue:kv_batch_put": "trainer/tq_put",
    "transfer_queue:kv_clear": "trainer/tq_clear",
    # actor worker: the Ray call, its TransferQueue transfers, the engine's compute inside it
    "verl.workers.engine_workers:ActorRolloutRefWorker.update_actor": "actor/update_actor (call)",
    "verl.workers.engine_workers:ActorRolloutRefWorker.compute_log_prob": "actor/compute_log_prob (call)",
    "verl.utils.transferqueue_utils:_async_meta_to_realdata": "actor/tq_get",
    "verl.utils.transferqueue_utils:_async_update_meta_with_output": "actor/tq_put",
    "verl.workers.engine.fsdp.transformer_impl:FSDPEngine.forward_backward_batch": "actor/forward_backward",
    "verl.workers.engine.fsdp.transformer_impl:FSDPEngine.optimizer_step": "actor/optimizer_step",
    # rollout: the agent loop per sample, the server's batched decode, scoring
    "verl.experimental.agent_loop.single_turn_agent_loop:SingleTurnAgentLoop.run": "rollout/agent_loop (per sample)",
    "luffy.mix_src.mix_agent_loop:MixAgentLoop.run": "rollout/agent_loop (per sample)",
    "verl.experimental.reward_loop.reward_loop:RewardLoopWorker.compute_score": "rollout/reward",
}
"""``module:qualname`` -> span name. A target whose module the process never imports is skipped.
luffy's own rollout server records its spans itself (:func:`span`): ``rollout/request (per sample)``
from a request's arrival to its answer, ``rollout/decode (batch)`` for each batched decode."""

_lock = threading.Lock()
_installed: set[str] = set()


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def _write(name: str, start: float, end: float, **extra: Any) -> None:
    line = json.dumps({"name": name, "pid": os.getpid(), "start": start, "end": end, **extra})
    path = Path(os.environ[ENV]) / f"spans-{os.getpid()}.jsonl"
    with _lock, path.open("a") as out:
        out.write(line + "\n")


@contextmanager
def span(name: str, extra: dict[str, Any] | None = None) -> Iterator[None]:
    """Record the wall time of the block as one span (a no-op when profiling is off); ``extra`` is read
    when the block ends, so the block may update it."""
    if not enabled():
        yield
        return
    start = time.time()
    try:
        yield
    finally:
        _write(name, start, time.time(), **(extra or {}))


def _size(args: tuple) -> dict[str, int]:
    """The batch size of a decode call (its first list argument), for the span's record."""
    for arg in args[1:2]:
        if isinstance(arg, list):
            return {"size": len(arg)}
    return {}


def _timed(fn: Callable, name: str) -> Callable:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args, **kwargs):
            start = time.time()
            try:
                return await fn(*args, **kwargs)
            finally:
                _write(name, start, time.time(), **_size(args))

        return async_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            _write(name, start, time.time(), **_size(args))

    return wrapper


def _wrap(target: str, name: str) -> bool:
    """Wrap one probe of an imported module; False when its module, class or attribute is missing."""
    module_name, _, qualname = target.partition(":")
    owner: Any = sys.modules.get(module_name)
    *path, attr = qualname.split(".")
    for part in path:
        owner = getattr(owner, part, None)
    original = getattr(owner, attr, None) if owner is not None else None
    if original is None:
        return False
    setattr(owner, attr, _timed(original, name))
    _installed.add(target)
    return True


class _WrapOnImport(importlib.abc.MetaPathFinder):
    """Wraps a probed module's targets right after the module executes (Ray workers import lazily)."""

    def __init__(self, probes: dict[str, str]):
        self.probes = probes
        self.modules = {t.partition(":")[0] for t in probes}

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.modules:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                exec_module = spec.loader.exec_module

                def exec_and_wrap(module, _exec=exec_module, _name=fullname):
                    _exec(module)
                    for target, name in self.probes.items():
                        if target.partition(":")[0] == _name and target not in _installed:
                            _wrap(target, name)

                spec.loader.exec_module = exec_and_wrap
                return spec
        return None


def install(probes: dict[str, str] | None = None) -> int:
    """Wrap the probes of modules imported so far, and the others when they are imported.

    Called once per process by ``luffy.plugin`` when :data:`ENV` is set; returns how many were wrapped
    now. A probe this veRL version lacks is skipped (it names nothing the run executes).
    """
    if not enabled():
        return 0
    probes = {t: n for t, n in (probes or PROBES).items() if t not in _installed}
    Path(os.environ[ENV]).mkdir(parents=True, exist_ok=True)
    count = sum(_wrap(t, n) for t, n in probes.items() if t.partition(":")[0] in sys.modules)
    pending = {t: n for t, n in probes.items() if t not in _installed}
    if pending:
        sys.meta_path.insert(0, _WrapOnImport(pending))
    return count


def read_spans(folder: Path) -> list[dict[str, Any]]:
    """Every span written under ``folder``, sorted by start time."""
    spans = []
    for path in sorted(Path(folder).glob("spans-*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                spans.append(json.loads(line))
    return sorted(spans, key=lambda s: s["start"])


def covered(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Seconds of ``[lo, hi]`` covered by the union of ``intervals`` (overlapping calls counted once)."""
    clipped = sorted((max(a, lo), min(b, hi)) for a, b in intervals if b > lo and a < hi)
    total, cur_a, cur_b = 0.0, None, None
    for a, b in clipped:
        if cur_b is None or a > cur_b:
            total += (cur_b - cur_a) if cur_b is not None else 0.0
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    return total + ((cur_b - cur_a) if cur_b is not None else 0.0)
