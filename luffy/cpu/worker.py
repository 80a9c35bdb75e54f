"""Process-group setup that veRL's workers need on a CPU-only machine.

veRL's ``TrainingWorker`` starts the default process group with the backend string
``f"cpu:gloo,{device}:{backend}"`` (``verl/utils/distributed.py``
``initialize_global_process_group_ray``); on the CPU platform that reads ``cpu:gloo,cpu:gloo`` and
torch rejects the duplicate device. No platform method changes that string, but veRL skips its own
init when a default group already exists, so a worker that starts a plain ``gloo`` group first
clears it. ``CpuActorRolloutRefWorker`` is veRL's ``ActorRolloutRefWorker`` doing exactly that, and
``CpuMixActorRolloutRefWorker`` LUFFY's worker doing the same.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch.distributed as dist
from verl.workers.engine_workers import ActorRolloutRefWorker

from luffy.cpu.names import PLATFORM_NAME
from luffy.mix_src.mix_worker import MixActorRolloutRefWorker, MixDetachActorWorker


def cpu_platform_selected() -> bool:
    """True when veRL's platform in this process is luffy's ``cpu`` platform."""
    from verl.utils.device import get_device_name

    return get_device_name() == PLATFORM_NAME


ACTOR_THREADS_ENV = "LUFFY_CPU_ACTOR_THREADS"


def apply_actor_threads() -> int:
    """Give this actor worker ``$LUFFY_CPU_ACTOR_THREADS`` torch threads (unset: leave torch's setting).

    Every process of a tiny CPU run has one thread (``OMP_NUM_THREADS=1``); in sync mode the actor's
    phases run while the rollout waits, so on idle cores the actor alone may take more
    (``ACTOR_THREADS`` in ``common_tiny_cpu.sh``). Returns the thread count now in effect.

    Raises:
        ValueError: the variable is not a positive integer.
    """
    import torch

    value = os.environ.get(ACTOR_THREADS_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{ACTOR_THREADS_ENV}={value!r}: must be a positive integer")
        torch.set_num_threads(int(value))
    return torch.get_num_threads()


def prepare_cpu_process_group() -> None:
    """Start a plain ``gloo`` default process group when the platform is ``cpu`` (idempotent).

    Uses the variables Ray's worker group sets for every rank (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``). A no-op on any other platform or when a default group exists;
    call it before veRL's worker ``__init__`` builds its engines.
    """
    if dist.is_initialized() or not cpu_platform_selected():
        return
    apply_actor_threads()
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group(
        backend="gloo",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(hours=10),
        init_method=os.environ.get("DIST_INIT_METHOD"),
    )
    # one line per rank naming its Ray node: the multi-node rehearsal reads where ranks were placed
    import ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "-"
    print(f"[luffy] gloo rank {rank} of {world_size} on ray node {node}", flush=True)


class CpuActorRolloutRefWorker(ActorRolloutRefWorker):
    """veRL's ``ActorRolloutRefWorker`` that starts its process group as ``gloo`` first."""

    def __init__(self, *args, **kwargs) -> None:
        prepare_cpu_process_group()
        super().__init__(*args, **kwargs)


class CpuMixActorRolloutRefWorker(MixActorRolloutRefWorker):
    """LUFFY's actor worker that starts its process group as ``gloo`` first."""

    def __init__(self, *args, **kwargs) -> None:
        prepare_cpu_process_group()
        super().__init__(*args, **kwargs)


class CpuMixDetachActorWorker(MixDetachActorWorker):
    """LUFFY's ``separate_async`` worker (veRL's ``DetachActorWorker``) that starts its process group as
    ``gloo`` first."""

    def __init__(self, *args, **kwargs) -> None:
        prepare_cpu_process_group()
        super().__init__(*args, **kwargs)
