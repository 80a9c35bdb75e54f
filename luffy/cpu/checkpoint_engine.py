"""Checkpoint engine ``gloo_cpu``: the trainer's weights to standalone rollout replicas over gloo.

veRL's ``separate_async`` mode pushes each update from the trainer ranks to rollout replicas that run on
their own resources, through a checkpoint engine other than ``naive`` (NCCL, NIXL, Mooncake, ...: all
GPU transports). This is the same protocol over a plain ``gloo`` group on the host: the trainer's
rank 0 broadcasts every tensor to the rollout workers; the other trainer ranks only take part in
gathering the sharded weights. Select it with::

    actor_rollout_ref.rollout.checkpoint_engine.backend=gloo_cpu
    actor_rollout_ref.rollout.checkpoint_engine.custom_backend_module=luffy.cpu.checkpoint_engine

A group is built for each update (veRL calls ``prepare``, ``build_topology``, ``init_process_group``,
then ``send_weights`` / ``receive_weights``, then ``finalize``), as veRL's NCCL engine does.
"""

from __future__ import annotations

import pickle
import socket
from collections.abc import Generator, Iterable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from verl.checkpoint_engine.base import CheckpointEngine, CheckpointEngineRegistry

BACKEND = "gloo_cpu"
_TIMEOUT = timedelta(minutes=10)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@CheckpointEngineRegistry.register(BACKEND)
class GlooCpuCheckpointEngine(CheckpointEngine):
    """One sender (trainer rank 0), every rollout worker a receiver, one gloo group per update.

    Args:
        bucket_size: unused (tensors are broadcast one at a time); veRL passes it to every engine.
        is_master: true on the trainer's rank 0, the sender.
    """

    def __init__(self, bucket_size: int = 0, is_master: bool = False, **kwargs: Any) -> None:
        self.bucket_size = bucket_size
        self.is_master = is_master
        self.rank = -1
        self.group: Any = None

    def prepare(self) -> dict[str, Any]:
        """The master picks the rendezvous address; everyone else has nothing to announce."""
        if not self.is_master:
            return {}
        import ray

        host = ray.util.get_node_ip_address().strip("[]")
        return {"host": host, "port": _free_port(host)}

    @classmethod
    def build_topology(
        cls, actor_wg_world_size: int, rollout_world_size: int, metadata: list[dict]
    ) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
        """Rank 0 is the trainer's rank 0; rollout workers are 1..R; other trainer ranks stay out (-1)."""
        master = metadata[0]
        world_size = 1 + rollout_world_size
        actor = {
            "rank": [0] + [-1] * (actor_wg_world_size - 1),
            "world_size": [world_size] * actor_wg_world_size,
            "master": [master] * actor_wg_world_size,
        }
        rollout = {
            "rank": list(range(1, world_size)),
            "world_size": [world_size] * rollout_world_size,
            "master": [master] * rollout_world_size,
        }
        return actor, rollout

    def init_process_group(self, rank: int, world_size: int, master: dict[str, Any]) -> None:
        """Join this update's gloo group (a rank of -1 sits the update out)."""
        self.rank = rank
        if rank < 0:
            return
        store = dist.TCPStore(
            master["host"], int(master["port"]), world_size, is_master=rank == 0, timeout=_TIMEOUT
        )
        self.group = dist.ProcessGroupGloo(store, rank, world_size, _TIMEOUT)

    def finalize(self) -> None:
        """Drop this update's group."""
        self.group = None
        self.rank = -1

    def _broadcast(self, tensor: torch.Tensor) -> None:
        self.group.broadcast(tensor, 0).wait()

    def _broadcast_object(self, obj: Any = None) -> Any:
        """Pickled ``obj`` from rank 0 to every rank (a length, then the bytes)."""
        if self.rank == 0:
            payload = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8)
            size = torch.tensor([payload.numel()], dtype=torch.int64)
        else:
            size = torch.zeros(1, dtype=torch.int64)
        self._broadcast(size)
        if self.rank != 0:
            payload = torch.empty(int(size.item()), dtype=torch.uint8)
        self._broadcast(payload)
        return pickle.loads(payload.numpy().tobytes()) if self.rank != 0 else obj

    async def send_weights(
        self, weights: Iterable[tuple[str, torch.Tensor]], global_steps: int | None = None
    ) -> dict[str, float]:
        """Trainer side: every rank drains ``weights`` (gathering shards is collective); rank 0 sends."""
        named = []
        for name, tensor in weights:
            if self.rank == 0:
                named.append((name, tensor.detach().to("cpu").contiguous()))
        if self.rank != 0:
            return {}
        self._broadcast_object([(name, t.shape, t.dtype) for name, t in named])
        for _, tensor in named:
            self._broadcast(tensor)
        return {}

    def receive_weights(self, global_steps: int | None = None) -> Generator[tuple[str, torch.Tensor], None, None]:
        """Rollout side: ``(name, tensor)`` pairs in the sender's order (a plain generator, as the
        ``hf_cpu`` adapter iterates it)."""
        for name, shape, dtype in self._broadcast_object():
            tensor = torch.empty(shape, dtype=dtype)
            self._broadcast(tensor)
            yield name, tensor
