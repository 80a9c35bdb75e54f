"""Token-in/token-out LLM server on the CPU, generating with transformers.

The Ray-actor counterpart of veRL's vLLM server for machines without a GPU: agent loops call
``generate(request_id=..., prompt_ids=..., sampling_params=...)`` and get a ``TokenOutput`` with the
sampled token ids, their log-probs and a stop reason; the trainer drives the same control methods
(``wake_up``, ``sleep``, ``abort_all_requests``, ``resume_generation``, kv-cache calls) and the
worker-side adapter pushes the actor's weights after every update.

Concurrent requests with the same sampling parameters are generated as one left-padded batch by
:class:`luffy.cpu.hf_generator.HFGenerator` (sampling as vLLM samples; see that module).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Any

import torch
from verl.workers.rollout.replica import TokenOutput

from luffy.cpu.hf_generator import GenerationResult, HFGenerator, SamplingSpec
from luffy.profiling import span

logger = logging.getLogger(__name__)

# Sampling keys this server understands; anything else (e.g. vLLM-only knobs) is ignored.
_KNOWN_PARAMS = {
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "max_new_tokens",
    "logprobs",
    "repetition_penalty",
    "ignore_eos",
    "seed",
    "n",
}


@dataclass
class _Request:
    prompt_ids: list[int]
    spec: SamplingSpec
    future: asyncio.Future
    epoch: int


def _model_path(model_config: Any) -> str:
    """Local checkpoint folder of veRL's ``HFModelConfig`` (dataclass or DictConfig)."""
    getter = model_config.get if hasattr(model_config, "get") else lambda k, d=None: getattr(model_config, k, d)
    path = getter("local_path", None) or getter("path", None)
    if not path:
        raise ValueError("rollout model config has neither local_path nor path; set actor_rollout_ref.model.path")
    return str(path)


class HFRolloutServer:
    """Ray actor (``ray.remote(HFRolloutServer)``, async, ``max_concurrency`` > 1) serving one replica.

    Args:
        config: veRL ``RolloutConfig`` (lengths, ``free_cache_engine``, ``max_num_seqs``).
        model_config: veRL ``HFModelConfig`` (``local_path`` of the checkpoint).
        replica_rank: index of this replica (seeds its sampling RNG).
        batch_window_s: the batcher starts a batch once no request has arrived for this long ...
        max_batch_wait_s: ... or this long after the first one, whichever comes first. Requests that
            arrive later join the running batch between two decode steps (``HFGenerator.generate``'s
            ``admit``).
    """

    def __init__(
        self,
        config: Any,
        model_config: Any,
        replica_rank: int = 0,
        batch_window_s: float = 0.005,
        max_batch_wait_s: float = 0.05,
    ):
        self.config = config
        self.replica_rank = replica_rank
        self.batch_window_s = batch_window_s
        self.max_batch_wait_s = max_batch_wait_s
        self.engine = HFGenerator(_model_path(model_config))
        self.generator = torch.Generator().manual_seed(int(getattr(config, "seed", 0) or 0) + replica_rank)
        self.global_steps: int | None = None
        self.max_batch = max(1, int(getattr(config, "max_num_seqs", 1024) or 1024))
        self.asleep = False
        self.weights_version = 0
        self._queue: list[_Request] = []
        self._queue_lock = threading.Lock()  # the decode thread takes joining requests from the queue
        self._running = 0  # requests in the batch being generated
        self._epoch = 0  # bumped by abort_all_requests: older requests are answered "aborted"
        self._paused = False
        self._resume: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._engine_lock: asyncio.Lock | None = None
        self._batcher: asyncio.Task | None = None
        self._pending_weights: list[tuple[str, torch.Tensor]] = []

    # -- lazy asyncio state (created on the actor's event loop) ----------------------------------
    def _ensure_loop_state(self) -> None:
        if self._batcher is None:
            self._resume = asyncio.Event()
            self._resume.set()
            self._wake = asyncio.Event()
            self._engine_lock = asyncio.Lock()
            self._batcher = asyncio.get_running_loop().create_task(self._batch_loop())

    # -- sampling parameters ---------------------------------------------------------------------
    def _max_model_len(self) -> int:
        max_len = getattr(self.config, "max_model_len", None)
        return int(max_len) if max_len else int(self.config.prompt_length + self.config.response_length)

    def sampling_spec(self, prompt_len: int, sampling_params: dict[str, Any]) -> SamplingSpec:
        """Normalise a request's sampling parameters as veRL's vLLM server does.

        ``max_tokens`` (or ``max_new_tokens``) defaults to the response budget left after the prompt
        and is clamped to ``[1, max_model_len - prompt_len]``.
        """
        params = dict(sampling_params)
        unknown = set(params) - _KNOWN_PARAMS
        if unknown:
            logger.debug("ignoring sampling params %s", sorted(unknown))
        room = self._max_model_len() - prompt_len
        if room < 1:
            raise ValueError(
                f"prompt of {prompt_len} tokens leaves no room within max_model_len={self._max_model_len()}"
            )
        max_tokens = params.get("max_tokens", params.get("max_new_tokens"))
        if max_tokens is None:
            max_tokens = min(
                self.config.response_length,
                self.config.prompt_length + self.config.response_length - prompt_len,
            )

        def number(key: str, default: float) -> float:
            value = params.get(key)
            return default if value is None else float(value)

        # vLLM reads logprobs=0 as "the sampled token's log-prob", so only None/False turn it off
        logprobs = params.get("logprobs", False)
        return SamplingSpec(
            max_tokens=max(1, min(int(max_tokens), room)),
            temperature=number("temperature", 1.0),
            top_p=number("top_p", 1.0),
            top_k=int(number("top_k", -1)),
            repetition_penalty=number("repetition_penalty", 1.0),
            ignore_eos=bool(params.get("ignore_eos", False)),
            logprobs=logprobs is not None and logprobs is not False,
        )

    # -- generation ------------------------------------------------------------------------------
    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        **kwargs: Any,
    ) -> TokenOutput:
        """Generate one continuation of ``prompt_ids``; parks while generation is paused."""
        if image_data is not None or video_data is not None:
            raise ValueError("the CPU rollout server generates text only; got image/video data")
        with span("rollout/request (per sample)"):
            return await self._generate(prompt_ids, sampling_params)

    async def _generate(self, prompt_ids: list[int], sampling_params: dict[str, Any]) -> TokenOutput:
        self._ensure_loop_state()
        prompt_ids = [int(t) for t in prompt_ids]
        spec = self.sampling_spec(len(prompt_ids), sampling_params)
        while self._paused:
            await self._resume.wait()
        future = asyncio.get_running_loop().create_future()
        with self._queue_lock:
            self._queue.append(_Request(prompt_ids, spec, future, self._epoch))
        self._wake.set()
        result: GenerationResult = await future
        stop_reason = "aborted" if result.finish_reason == "abort" else "completed"
        # the weights version the tokens came from (a partial rollout's first part predates an update)
        version = self.global_steps if result.global_steps is None else result.global_steps
        return TokenOutput(
            token_ids=result.token_ids,
            log_probs=result.log_probs if spec.logprobs else None,
            stop_reason=stop_reason,
            extra_fields={"global_steps": version, "finish_reason": result.finish_reason},
        )

    async def _batch_loop(self) -> None:
        while True:
            await self._wake.wait()
            await self._gather_requests()
            self._wake.clear()
            while self._queue:
                batch = self._take(self._queue[0].spec, self.max_batch)
                self._running = len(batch)
                try:
                    await self._run_batch(batch)
                finally:
                    self._running = 0

    def _take(self, spec: SamplingSpec, limit: int, epoch: int | None = None) -> list[_Request]:
        """Remove and return up to ``limit`` queued requests with ``spec`` (and ``epoch``, when given)."""
        with self._queue_lock:
            batch = [r for r in self._queue if r.spec == spec and epoch in (None, r.epoch)][: max(limit, 0)]
            taken = {id(r) for r in batch}
            self._queue = [r for r in self._queue if id(r) not in taken]
        return batch

    async def _gather_requests(self) -> None:
        """Wait while requests keep arriving (a group's samples reach the server a few ms apart)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_batch_wait_s
        seen = -1
        while len(self._queue) != seen and loop.time() < deadline:
            seen = len(self._queue)
            await asyncio.sleep(min(self.batch_window_s, max(deadline - loop.time(), 0.0)))

    async def _run_batch(self, batch: list[_Request]) -> None:
        epoch = self._epoch
        live = [r for r in batch if r.epoch == epoch]
        for r in batch:
            if r.epoch != self._epoch and not r.future.done():
                r.future.set_result(GenerationResult(token_ids=[], finish_reason="abort"))
        if not live:
            return

        info = {"size": len(live), "joined": 0}

        def admit() -> list[list[int]]:  # called from the decode thread after every step
            joining = self._take(live[0].spec, self.max_batch - len(live), epoch)
            live.extend(joining)
            self._running = len(live)
            info["joined"] += len(joining)
            return [r.prompt_ids for r in joining]

        try:
            async with self._engine_lock:
                version = self.global_steps  # weights cannot change while the lock is held
                with span("rollout/decode (batch)", info):
                    results = await asyncio.to_thread(
                        self.engine.generate,
                        [r.prompt_ids for r in live],
                        live[0].spec,
                        lambda: self._epoch != epoch,
                        self.generator,
                        admit,
                    )
        except Exception as exc:  # answer every waiter, then keep serving
            logger.exception("generation failed for a batch of %d", len(live))
            for r in live:
                if not r.future.done():
                    r.future.set_exception(exc)
            return
        for r, res in zip(live, results):
            res.global_steps = version
            if not r.future.done():
                r.future.set_result(res)

    # -- control methods driven by the trainer ---------------------------------------------------
    async def wake_up(self, tags: list[str] | None = None) -> None:
        """Weights and cache stay in host memory; only the state flag changes."""
        self.asleep = False

    async def sleep(self) -> None:
        """Nothing to free on the CPU (host memory is shared with training); only the state flag changes."""
        if getattr(self.config, "free_cache_engine", True):
            self.asleep = True

    async def clear_kv_cache(self) -> None:
        """No-op: the KV cache lives only for the duration of one batch."""

    async def release_kv_cache(self) -> None:
        """No-op: see :meth:`clear_kv_cache`."""

    async def resume_kv_cache(self) -> None:
        """No-op: see :meth:`clear_kv_cache`."""

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict:
        """Answer every queued and running request with ``stop_reason="aborted"`` and pause admission.

        New requests wait until :meth:`resume_generation`. ``reject_request`` is accepted for
        interface parity; parked requests are always held, never rejected.
        """
        self._ensure_loop_state()
        self._paused = True
        self._resume.clear()
        self._epoch += 1
        with self._queue_lock:
            queued, self._queue = self._queue, []
        aborted = len(queued)
        for r in queued:
            if not r.future.done():
                r.future.set_result(GenerationResult(token_ids=[], finish_reason="abort"))
        async with self._engine_lock:  # the running batch sees the new epoch and stops
            pass
        return {"aborted_count": aborted, "request_ids": []}

    async def resume_generation(self) -> None:
        """Re-open admission after :meth:`abort_all_requests`."""
        self._ensure_loop_state()
        self._paused = False
        self._resume.set()

    async def set_global_steps(self, global_steps: int) -> None:
        """Record the trainer step of the weights now loaded (tagged on every output)."""
        self.global_steps = global_steps

    async def start_profile(self, **kwargs: Any) -> None:
        """No-op: no profiler."""

    async def stop_profile(self) -> None:
        """No-op: no profiler."""

    # -- weights ---------------------------------------------------------------------------------
    async def update_weights(
        self, named_tensors: list[tuple[str, torch.Tensor]], last: bool = True, global_steps: int | None = None
    ) -> int:
        """Receive a bucket of HF-named tensors; on the ``last`` bucket load all of them at once.

        Loading waits for the running batch, so a sequence never mixes two weight versions.
        Returns the number of tensors loaded (0 until the last bucket).
        """
        self._ensure_loop_state()
        self._pending_weights.extend(named_tensors)
        if not last:
            return 0
        pending, self._pending_weights = self._pending_weights, []
        async with self._engine_lock:
            loaded = self.engine.load_weights(pending)
        self.weights_version += 1
        if global_steps is not None:
            self.global_steps = global_steps
        logger.debug("replica %d loaded %d tensors (version %d)", self.replica_rank, loaded, self.weights_version)
        return loaded

    async def get_weights_version(self) -> int:
        """How many weight pushes this server has loaded."""
        return self.weights_version

    async def get_state(self) -> dict[str, Any]:
        """Diagnostics: sleep/pause flags, queued and running requests, weight version and step."""
        return {
            "asleep": self.asleep,
            "paused": self._paused,
            "queued": len(self._queue),
            "running": self._running,
            "weights_version": self.weights_version,
            "global_steps": self.global_steps,
        }
