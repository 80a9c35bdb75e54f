"""Registers veRL's own FSDP/FSDP2 training engines for device ``cpu``.

veRL registers ``FSDPEngineWithLMHead`` (actor, reference) and ``FSDPEngineWithValueHead`` (critic)
for ``cuda`` and ``npu`` only; the engines themselves are device-agnostic once the platform answers
``cpu``. Only ``strategy=fsdp2`` works on CPU: FSDP1 hard-codes accelerator placement.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

DEVICE = "cpu"
BACKENDS = ["fsdp", "fsdp2"]


def register_cpu_engines() -> None:
    """Register the FSDP engines for device ``cpu`` in veRL's ``EngineRegistry`` (idempotent)."""
    from verl.workers.engine import EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

    from luffy.verl_compat import registered_engines

    for model_type, engine_cls in (
        ("language_model", FSDPEngineWithLMHead),
        ("value_model", FSDPEngineWithValueHead),
    ):
        # EngineRegistry asserts on a second registration; plugin loading can run twice in a process.
        registered = registered_engines(model_type)
        missing = [b for b in BACKENDS if registered.get(b, {}).get(DEVICE) is not engine_cls]
        if missing:
            EngineRegistry.register(model_type=model_type, backend=missing, device=DEVICE)(engine_cls)
            logger.debug("registered %s for %s on device %s", engine_cls.__name__, missing, DEVICE)
