"""veRL rollout ``hf_cpu``: transformers generation served from a Ray actor, for CPU-only machines.

Two pieces, the same split as veRL's vLLM rollout:

- :class:`HFCpuReplica` (``RolloutReplicaRegistry``): launches one :class:`~luffy.cpu.hf_server.HFRolloutServer`
  actor per replica; the agent loops send it token-in/token-out requests.
- :class:`HFCpuServerAdapter` (``BaseRollout``, worker side): lives in every actor rank; the rank with
  ``rank % rollout_world_size == 0`` pushes the actor's full weights to its own replica's server after
  every update, so with several replicas each one is refreshed.

Select it with ``actor_rollout_ref.rollout.name=hf_cpu`` (``mode`` stays ``async``). It serves the
actor's hybrid rollout; reward-model and teacher rollouts are not wired to it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from typing import Any

import ray
import torch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica

from luffy.cpu.hf_server import HFRolloutServer
from luffy.cpu.names import ROLLOUT_NAME

logger = logging.getLogger(__name__)

SERVER_NAME_PREFIX = "luffy_hf_cpu_server"


def server_actor_name(replica_rank: int, kind: str = "", name_suffix: str = "") -> str:
    """Ray actor name of a replica's server; the adapter finds its server by this name."""
    kind_part = f"{kind}_" if kind else ""
    return f"{SERVER_NAME_PREFIX}_{kind_part}{replica_rank}{name_suffix}"


def _rollout_world_size(config: Any) -> int:
    return (
        config.tensor_model_parallel_size * config.data_parallel_size * config.pipeline_model_parallel_size
    )


class HFCpuReplica(RolloutReplica):
    """A rollout replica served by one :class:`HFRolloutServer` actor (any rollout world size).

    The server holds a full copy of the model in host memory, so tensor/data parallel sizes only decide
    how many trainer ranks map to one replica.
    """

    def _kind(self) -> str:
        if self.is_reward_model:
            return "reward"
        if self.is_teacher_model:
            return "teacher"
        return ""

    async def launch_servers(self) -> None:
        """Start this replica's server actor and publish its handle and (non-HTTP) address."""
        name = server_actor_name(self.replica_rank, self._kind(), self.name_suffix)
        server_cls = ray.remote(HFRolloutServer)
        server = server_cls.options(
            name=name,
            num_cpus=0,  # logical CPUs are the scarce resource here; the server is idle while training runs
            max_concurrency=self.max_concurrency,
        ).remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank)
        await server.get_state.remote()  # surfaces a failed model load here, not at the first request
        self.servers = [server]
        self._server_handle = server
        # No HTTP endpoint: the address is only the load balancer's key for this replica.
        self._server_address = name
        logger.info("launched %s (%s mode)", name, self.rollout_mode.value if self.rollout_mode else "?")

    def rollout_worker_use_gpu(self) -> bool:
        return False


class HFCpuServerAdapter(BaseRollout):
    """Worker-side half of the ``hf_cpu`` rollout: resume/release and weight pushes to the server.

    Args:
        config: veRL ``RolloutConfig``.
        model_config: veRL ``HFModelConfig``.
        device_mesh: unused (the server is a separate process).
        replica_rank: replica this rank belongs to; ``-1`` derives it from ``RANK``.
    """

    def __init__(self, config: Any, model_config: Any, device_mesh: Any = None, replica_rank: int = -1, **kwargs):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        world = _rollout_world_size(self.config)
        self.replica_rank = rank // world if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % world
        self._has_server = self.rollout_rank == 0
        self.server_handle: ray.actor.ActorHandle | None = None
        self.bucket_bytes = int(self.config.checkpoint_engine.update_weights_bucket_megabytes) << 20

    def _server(self) -> ray.actor.ActorHandle | None:
        """This rank's server (looked up lazily: servers start after the workers), or None."""
        if not self._has_server:
            return None
        if self.server_handle is None:
            self.server_handle = ray.get_actor(server_actor_name(self.replica_rank))
        return self.server_handle

    async def resume(self, tags: list[str]) -> None:
        """Wake the server (weights and cache stay in host memory on the CPU)."""
        server = self._server()
        if self.config.free_cache_engine and server is not None:
            await server.wake_up.remote(tags=tags)

    async def release(self) -> None:
        """Put the server to sleep."""
        server = self._server()
        if self.config.free_cache_engine and server is not None:
            await server.sleep.remote()

    @torch.no_grad()
    async def update_weights(
        self,
        weights: Iterable[tuple[str, torch.Tensor]],
        global_steps: int | None = None,
        wire_format: str = "named_tensors",
        **kwargs: Any,
    ) -> None:
        """Push full HF-named tensors to this replica's server in buckets.

        Every rank iterates ``weights`` (gathering FSDP shards is collective); only the replica's
        first rank sends them.

        Raises:
            ValueError: for a ``wire_format`` other than ``named_tensors`` (delta sync needs CUDA IPC).
        """
        if wire_format != "named_tensors":
            raise ValueError(
                f"rollout {ROLLOUT_NAME!r} takes full weights only (wire_format='named_tensors'), got "
                f"{wire_format!r}; use actor_rollout_ref.rollout.checkpoint_engine.backend=naive"
            )
        server = self._server()
        bucket: list[tuple[str, torch.Tensor]] = []
        size = 0
        sends = []
        for name, tensor in weights:
            if server is None:
                continue
            t = tensor.detach().to("cpu").contiguous()
            bucket.append((name, t))
            size += t.numel() * t.element_size()
            if size >= self.bucket_bytes:
                sends.append(server.update_weights.remote(bucket, last=False))
                bucket, size = [], 0
        if server is None:
            return
        await asyncio.gather(*sends)
        await server.update_weights.remote(bucket, last=True, global_steps=global_steps)
        await server.clear_kv_cache.remote()


