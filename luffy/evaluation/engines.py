"""Generation back ends: vLLM when installed, a transformers ``generate`` fallback otherwise.

Both take fully rendered prompt strings (chat template already applied, see :func:`render_prompt`)
and return, per prompt, ``n`` samples as ``(text, token_ids)`` (the ids end with EOS when it was generated).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from luffy.data.errors import LuffyDataError
from luffy.model_folder import check_model_path, read_model_config
from luffy.prompts import build_messages

logger = logging.getLogger(__name__)

Sample = tuple[str, list[int]]


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings shared by the engines."""

    n: int = 1
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 8192
    seed: int = 42

    def __post_init__(self) -> None:
        if self.n < 1:
            raise LuffyDataError(f"--n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise LuffyDataError(f"--temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise LuffyDataError(f"--top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise LuffyDataError(f"--max_tokens must be >= 1, got {self.max_tokens}")


class Engine(Protocol):
    """What the scripts need from a back end."""

    tokenizer: Any
    streams_per_prompt: bool
    """True when prompts are generated one by one (results can be written per prompt)."""

    def generate(self, prompts: list[str], sampling: SamplingConfig, seeds: list[int]) -> list[list[Sample]]:
        """``n`` samples for each prompt; ``seeds[i]`` seeds prompt ``i``."""
        ...


def render_prompt(tokenizer: Any, question: str, template: str, remove_system: bool = False) -> str:
    """Prompt text for ``question``: the chat template applied to the template's messages.

    ``template="no"`` returns the bare question (no chat template).
    """
    if template == "no":
        return question
    messages = build_messages(question, template, remove_system=remove_system)
    if getattr(tokenizer, "chat_template", None) is None:
        raise LuffyDataError(f"the tokenizer has no chat template; use --template no for template {template!r}")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def vllm_available() -> bool:
    """True when the ``vllm`` package can be imported."""
    return importlib.util.find_spec("vllm") is not None


CPU_KV_CACHE_GB = 2.0
"""KV cache of vLLM's CPU build unless ``--kv_cache_gb`` says otherwise (its own default takes a share of
all host memory)."""


def vllm_engine_kwargs(
    on_cpu: bool,
    tensor_parallel_size: int = 1,
    max_model_len: int | None = None,
    seed: int = 42,
    kv_cache_gb: float | None = None,
) -> dict[str, Any]:
    """``vllm.LLM`` keyword arguments; on vLLM's CPU build: eager mode, fp32 and a bounded KV cache.

    Raises:
        LuffyDataError: tensor parallel on CPU (not supported there).
    """
    kwargs: dict[str, Any] = {"tensor_parallel_size": tensor_parallel_size, "seed": seed}
    if max_model_len:
        kwargs["max_model_len"] = max_model_len
    if on_cpu:
        if tensor_parallel_size != 1:
            raise LuffyDataError(f"--tensor_parallel_size={tensor_parallel_size}: vLLM's CPU build runs with 1")
        kwargs["enforce_eager"] = True  # no CUDA graphs to capture
        # vLLM's CPU build downcasts an fp32 model to bf16 by default; the HF engine computes in fp32 on a CPU
        kwargs["dtype"] = "float32"
        kv_cache_gb = CPU_KV_CACHE_GB if kv_cache_gb is None else kv_cache_gb
    if kv_cache_gb is not None:
        kwargs["kv_cache_memory_bytes"] = int(kv_cache_gb * 2**30)
    return kwargs


class VLLMEngine:
    """vLLM offline engine (``vllm.LLM`` + ``SamplingParams``), on a GPU or vLLM's CPU build."""

    streams_per_prompt = False

    def __init__(
        self,
        model_path: str,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        seed: int = 42,
        kv_cache_gb: float | None = None,
    ):
        from vllm import LLM
        from vllm.platforms import current_platform

        self.on_cpu = current_platform.is_cpu()
        kwargs = vllm_engine_kwargs(self.on_cpu, tensor_parallel_size, max_model_len, seed, kv_cache_gb)
        logger.info("vLLM on %s: %s", "CPU" if self.on_cpu else "GPU", kwargs)
        self.llm = LLM(model=model_path, **kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: list[str], sampling: SamplingConfig, seeds: list[int]) -> list[list[Sample]]:
        from vllm import SamplingParams

        # A seed per request keeps each problem's samples reproducible when a run is resumed.
        params = [
            SamplingParams(
                n=sampling.n,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_tokens,
                seed=seed,
            )
            for seed in seeds
        ]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [[(o.text, list(o.token_ids)) for o in out.outputs] for out in outputs]


class HFEngine:
    """transformers ``generate`` on CPU (or one GPU); slow, meant for tests and tiny models."""

    streams_per_prompt = True

    def __init__(
        self,
        model_path: str,
        max_model_len: int | None = None,
        device: str | None = None,
        cpu_threads: int | None = None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(self.device).eval()
        self.max_model_len = max_model_len
        self.cpu_threads = cpu_threads

    def generate(self, prompts: list[str], sampling: SamplingConfig, seeds: list[int]) -> list[list[Sample]]:
        torch = self.torch
        results: list[list[Sample]] = []
        previous_threads = torch.get_num_threads()
        if self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)
        try:
            for prompt, seed in zip(prompts, seeds):
                results.append(self._generate_one(prompt, seed, sampling))
        finally:
            torch.set_num_threads(previous_threads)
        return results

    def _generate_one(self, prompt: str, seed: int, sampling: SamplingConfig) -> list[Sample]:
        """``sampling.n`` samples for one prompt."""
        torch = self.torch
        tok = self.tokenizer
        eos = tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].to(self.device)
        max_new = sampling.max_tokens
        if self.max_model_len:
            max_new = min(max_new, self.max_model_len - ids.shape[1])
            if max_new < 1:
                logger.warning("prompt of %d tokens leaves no room under max_model_len", ids.shape[1])
                return [("", [])] * sampling.n
        torch.manual_seed(seed)
        do_sample = sampling.temperature > 0
        gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new, "do_sample": do_sample, "pad_token_id": pad}
        if do_sample:
            gen_kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p)
        gen_kwargs["num_return_sequences"] = sampling.n if do_sample else 1
        with torch.no_grad():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), **gen_kwargs)
        samples: list[Sample] = []
        for seq in out[:, ids.shape[1] :].tolist():
            if eos is not None and eos in seq:
                seq = seq[: seq.index(eos) + 1]
            samples.append((tok.decode(seq, skip_special_tokens=True), seq))
        return samples if do_sample else samples * sampling.n


def make_engine(
    engine: str,
    model_path: str,
    tensor_parallel_size: int = 1,
    max_model_len: int | None = None,
    seed: int = 42,
    cpu_threads: int | None = None,
    kv_cache_gb: float | None = None,
) -> Engine:
    """Build the engine named ``engine`` (``vllm``, ``hf`` or ``auto``: vLLM when installed).

    ``cpu_threads`` caps torch's CPU threads during HF generation (tiny models on a busy machine run
    far faster with 1); ``kv_cache_gb`` sizes vLLM's KV cache (default on its CPU build:
    :data:`CPU_KV_CACHE_GB`; on a GPU: vLLM's memory-utilisation share).
    """
    check_model_path(model_path)  # a mistyped local path: one line, before any engine loads
    read_model_config(model_path)  # a damaged config.json: one line naming it, before any engine loads
    if engine == "auto":
        engine = "vllm" if vllm_available() else "hf"
        logger.info("engine auto -> %s", engine)
    if engine == "vllm":
        if not vllm_available():
            raise LuffyDataError("vLLM is not installed; install it or pass --engine hf")
        return VLLMEngine(model_path, tensor_parallel_size, max_model_len, seed, kv_cache_gb)
    if engine == "hf":
        return HFEngine(model_path, max_model_len, cpu_threads=cpu_threads)
    raise LuffyDataError(f"unknown engine {engine!r}; choose vllm, hf or auto")
