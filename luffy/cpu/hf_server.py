"""Token-in/token-out LLM server on the CPU, generating with transformers.

The Ray-actor counterpart of veRL's vLLM server for machines without a GPU: agent loops call
``generate(request_id=..., prompt_ids=..., sampling_params=...)`` and get a ``TokenOutput`` with the
sampled token ids, their log-probs and a stop reason; the trainer drives the same control methods
(``wake_up``, ``sleep``, ``abort_all_requests``, ``resume_generation``, kv-cache calls) and the
worker-side adapter pushes the actor's weights after every update.

Concurrent requests with the same sampling parameters are generated as one left-padded batch.
Sampling follows vLLM: ``temperature == 0`` is greedy, ``top_k <= 0`` and ``top_p == 1`` disable
truncation, EOS ends a sequence (and is returned, as vLLM does) unless ``ignore_eos``. Log-probs are
those of the sampled tokens under ``softmax(logits / temperature)`` (raw logits when greedy): what
veRL's actor computes for the same tokens, and vLLM's ``processed_logprobs`` when no top-k/top-p
truncation applies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from verl.workers.rollout.replica import TokenOutput

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


@dataclass(frozen=True)
class SamplingSpec:
    """Normalised sampling parameters of one request; requests with equal specs share a batch."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    repetition_penalty: float = 1.0
    ignore_eos: bool = False
    logprobs: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass
class _Request:
    prompt_ids: list[int]
    spec: SamplingSpec
    future: asyncio.Future
    epoch: int


@dataclass
class GenerationResult:
    """One generated sequence: tokens (EOS included when hit), their log-probs and why it stopped."""

    token_ids: list[int]
    log_probs: list[float] = field(default_factory=list)
    finish_reason: str = "length"  # "stop" (EOS), "length" (max_tokens) or "abort"


def _model_path(model_config: Any) -> str:
    """Local checkpoint folder of veRL's ``HFModelConfig`` (dataclass or DictConfig)."""
    getter = model_config.get if hasattr(model_config, "get") else lambda k, d=None: getattr(model_config, k, d)
    path = getter("local_path", None) or getter("path", None)
    if not path:
        raise ValueError("rollout model config has neither local_path nor path; set actor_rollout_ref.model.path")
    return str(path)


def _as_list(value: int | Iterable[int] | None) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


class HFGenerator:
    """A causal LM plus the sampling loop; no Ray, no asyncio (the server runs it in a thread).

    Args:
        model_path: HF checkpoint folder (config, weights, generation config).
        dtype: parameter dtype; float32 keeps log-probs comparable with the actor's.
        attn_implementation: transformers attention backend ("sdpa" or "eager" on CPU).
    """

    def __init__(self, model_path: str, dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa"):
        from transformers import AutoModelForCausalLM, GenerationConfig

        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=dtype, attn_implementation=attn_implementation
        )
        self.model.eval()
        try:
            gen_config = GenerationConfig.from_pretrained(model_path)
        except OSError:
            gen_config = self.model.generation_config
        cfg = self.model.config
        self.eos_token_ids = _as_list(gen_config.eos_token_id) or _as_list(cfg.eos_token_id)
        pad = gen_config.pad_token_id if gen_config.pad_token_id is not None else cfg.pad_token_id
        self.pad_token_id = int(pad) if pad is not None else (self.eos_token_ids[0] if self.eos_token_ids else 0)
        self._state = self.model.state_dict()

    # -- weights ---------------------------------------------------------------------------------
    @torch.no_grad()
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Copy HF-named tensors into the model in place; returns how many were loaded.

        Raises:
            ValueError: a name the model does not have, or a shape mismatch.
        """
        loaded = 0
        for name, tensor in named_tensors:
            target = self._state.get(name)
            if target is None:
                raise ValueError(f"weight {name!r} is not a parameter of the rollout model")
            if target.shape != tensor.shape:
                raise ValueError(f"weight {name!r}: shape {tuple(tensor.shape)} != model's {tuple(target.shape)}")
            target.copy_(tensor.to(dtype=target.dtype))
            loaded += 1
        return loaded

    # -- generation ------------------------------------------------------------------------------
    def _warp(self, logits: torch.Tensor, spec: SamplingSpec) -> torch.Tensor:
        """Temperature, then top-k, then top-p masking (vLLM's order); logits (B, V) -> (B, V)."""
        logits = logits / spec.temperature
        vocab = logits.shape[-1]
        if 0 < spec.top_k < vocab:
            kth = torch.topk(logits, spec.top_k, dim=-1).values[:, -1:]  # (B, 1)
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if spec.top_p < 1.0:
            sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)  # (B, V)
            probs = sorted_logits.softmax(dim=-1)
            # keep the smallest prefix whose mass reaches top_p: drop a token when the mass before it >= top_p
            mass_before = probs.cumsum(dim=-1) - probs  # (B, V)
            drop_sorted = mass_before >= spec.top_p
            drop = torch.zeros_like(drop_sorted).scatter(-1, sorted_idx, drop_sorted)
            logits = logits.masked_fill(drop, float("-inf"))
        return logits

    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[int]],
        spec: SamplingSpec,
        should_abort: Any = None,
        generator: torch.Generator | None = None,
    ) -> list[GenerationResult]:
        """Generate a continuation for each prompt with one batched KV-cached decode loop.

        Args:
            prompts: token ids per request (lengths may differ; they are left-padded).
            spec: sampling parameters shared by the batch.
            should_abort: optional callable polled every step; when it returns True the batch stops
                and every unfinished sequence ends with ``finish_reason="abort"``.
            generator: RNG for sampling (``None``: torch's global RNG).
        """
        batch = len(prompts)
        width = max(len(p) for p in prompts)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)  # (B, P)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)  # (B, P)
        for i, p in enumerate(prompts):
            input_ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            attention_mask[i, width - len(p) :] = 1

        results = [GenerationResult(token_ids=[]) for _ in prompts]
        done = torch.zeros(batch, dtype=torch.bool)  # (B,)
        past = None
        step_ids = input_ids
        for _ in range(spec.max_tokens):
            if should_abort is not None and should_abort():
                for i in range(batch):
                    if not done[i]:
                        results[i].finish_reason = "abort"
                return results
            # positions count real tokens only, so left padding does not shift them
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1] :]
            out = self.model(
                input_ids=step_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=past,
                use_cache=True,
            )
            past = out.past_key_values
            logits = out.logits[:, -1, :].float()  # (B, V)
            if spec.repetition_penalty != 1.0:
                logits = self._repetition_penalty(logits, input_ids, results, spec.repetition_penalty)
            if spec.greedy:
                next_tokens = logits.argmax(dim=-1)  # (B,)
                logp = logits.log_softmax(dim=-1)
            else:
                logp = (logits / spec.temperature).log_softmax(dim=-1)  # (B, V)
                probs = self._warp(logits, spec).softmax(dim=-1)
                next_tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)
            token_logp = logp.gather(-1, next_tokens[:, None]).squeeze(-1)  # (B,)
            for i in range(batch):
                if done[i]:
                    continue
                tok = int(next_tokens[i])
                results[i].token_ids.append(tok)
                results[i].log_probs.append(float(token_logp[i]))
                if not spec.ignore_eos and tok in self.eos_token_ids:
                    done[i] = True
                    results[i].finish_reason = "stop"
            if bool(done.all()):
                break
            next_tokens = torch.where(done, torch.full_like(next_tokens, self.pad_token_id), next_tokens)
            step_ids = next_tokens[:, None]  # (B, 1)
            attention_mask = torch.cat([attention_mask, (~done).long()[:, None]], dim=-1)
        return results

    @staticmethod
    def _repetition_penalty(
        logits: torch.Tensor, prompt_ids: torch.Tensor, results: list[GenerationResult], penalty: float
    ) -> torch.Tensor:
        """CTRL-style penalty on every token already in prompt or output (vLLM/HF semantics)."""
        logits = logits.clone()
        for i, res in enumerate(results):
            seen = torch.unique(torch.cat([prompt_ids[i], torch.tensor(res.token_ids, dtype=torch.long)]))
            vals = logits[i, seen]
            logits[i, seen] = torch.where(vals > 0, vals / penalty, vals * penalty)
        return logits


class HFRolloutServer:
    """Ray actor (``ray.remote(HFRolloutServer)``, async, ``max_concurrency`` > 1) serving one replica.

    Args:
        config: veRL ``RolloutConfig`` (lengths, ``free_cache_engine``, ``max_num_seqs``).
        model_config: veRL ``HFModelConfig`` (``local_path`` of the checkpoint).
        replica_rank: index of this replica (seeds its sampling RNG).
        batch_window_s: how long the batcher waits for more requests before starting a batch.
    """

    def __init__(self, config: Any, model_config: Any, replica_rank: int = 0, batch_window_s: float = 0.005):
        self.config = config
        self.replica_rank = replica_rank
        self.batch_window_s = batch_window_s
        self.engine = HFGenerator(_model_path(model_config))
        self.generator = torch.Generator().manual_seed(int(getattr(config, "seed", 0) or 0) + replica_rank)
        self.global_steps: int | None = None
        self.max_batch = max(1, int(getattr(config, "max_num_seqs", 1024) or 1024))
        self.asleep = False
        self.weights_version = 0
        self._queue: list[_Request] = []
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
        self._ensure_loop_state()
        prompt_ids = [int(t) for t in prompt_ids]
        spec = self.sampling_spec(len(prompt_ids), sampling_params)
        while self._paused:
            await self._resume.wait()
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(prompt_ids, spec, future, self._epoch))
        self._wake.set()
        result: GenerationResult = await future
        stop_reason = "aborted" if result.finish_reason == "abort" else "completed"
        return TokenOutput(
            token_ids=result.token_ids,
            log_probs=result.log_probs if spec.logprobs else None,
            stop_reason=stop_reason,
            extra_fields={"global_steps": self.global_steps, "finish_reason": result.finish_reason},
        )

    async def _batch_loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.batch_window_s)  # let concurrent requests join the batch
            self._wake.clear()
            while self._queue:
                head = self._queue[0].spec
                batch = [r for r in self._queue if r.spec == head][: self.max_batch]
                taken = {id(r) for r in batch}
                self._queue = [r for r in self._queue if id(r) not in taken]
                self._running = len(batch)
                try:
                    await self._run_batch(batch)
                finally:
                    self._running = 0

    async def _run_batch(self, batch: list[_Request]) -> None:
        epoch = self._epoch
        live = [r for r in batch if r.epoch == epoch]
        for r in batch:
            if r.epoch != self._epoch and not r.future.done():
                r.future.set_result(GenerationResult(token_ids=[], finish_reason="abort"))
        if not live:
            return
        try:
            async with self._engine_lock:
                results = await asyncio.to_thread(
                    self.engine.generate,
                    [r.prompt_ids for r in live],
                    live[0].spec,
                    lambda: self._epoch != epoch,
                    self.generator,
                )
        except Exception as exc:  # answer every waiter, then keep serving
            logger.exception("generation failed for a batch of %d", len(live))
            for r in live:
                if not r.future.done():
                    r.future.set_exception(exc)
            return
        for r, res in zip(live, results):
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
        aborted = len(self._queue)
        for r in self._queue:
            if not r.future.done():
                r.future.set_result(GenerationResult(token_ids=[], finish_reason="abort"))
        self._queue = []
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
