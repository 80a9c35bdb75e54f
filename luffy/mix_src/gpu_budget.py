"""Per-GPU memory and checkpoint disk estimates of a LUFFY run, as plain functions of sizes and settings.

Figures in GiB (2**30 bytes) unless a name says bytes. What is counted, per GPU, for veRL 0.9.1's
colocated actor and vLLM server:

- **rollout** (vLLM awake): vLLM's share, ``gpu_memory_utilization`` x the card's *total* memory (veRL
  passes the value straight to vLLM, whose ``request_memory`` asks for that share of the total and
  refuses to start when less is free), plus what the actor keeps on the GPU between updates: its fp32
  parameter shard unless ``param_offload``, its Adam state (two fp32 moments) unless
  ``optimizer_offload``; gradients are freed after each update (``zero_grad`` sets them to None);
- **training** (vLLM asleep when ``free_cache_engine``): parameters, gradients, the Adam state (loaded
  back for the whole update even with ``optimizer_offload``) and the micro-batch's activations
  (:func:`activation_gib`);
- both: :data:`CONTEXT_GIB` for the CUDA context and NCCL buffers, and :data:`HEADROOM` of the card
  kept free for allocator fragmentation and temporaries this model does not count.

FSDP (1 or 2, ``fsdp_size=-1``) shards parameters, gradients and optimizer state over all GPUs of the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

GIB = 2**30
PARAM_BYTES = 4  # fsdp_config.model_dtype=fp32: FSDP keeps fp32 parameters, compute is bf16
GRAD_BYTES = 4
ADAM_BYTES = 8  # exp_avg + exp_avg_sq, fp32
ACT_BYTES = 2  # bf16 activations and logits under autocast
CONTEXT_GIB = 2.0  # CUDA context + NCCL buffers per process and GPU
HEADROOM = 0.05  # share of the card left free for fragmentation and uncounted temporaries
LOGPROB_CHUNK = 1024  # tokens per chunk of luffy.mix_src.logprobs (two fp32 chunk x vocab buffers)
CKPT_BYTES = {"model": PARAM_BYTES, "optimizer": ADAM_BYTES, "hf_model": 2, "extra": 0}


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a dense decoder-only LM that the estimates need."""

    n_params: int
    hidden: int
    intermediate: int
    layers: int
    vocab: int


def model_shape(config: dict[str, Any]) -> ModelShape | None:
    """Sizes of a dense decoder (Qwen2, Llama, Mistral layout) from its HF ``config.json``, or None.

    Parameters: embeddings (and an untied ``lm_head``), per layer q/k/v/o projections (q/k/v biases for
    ``qwen2`` or ``attention_bias``), the gated MLP (3 x hidden x intermediate) and two RMSNorms, one
    final norm. None when a size is missing (another architecture: the caller skips the estimate).
    """
    text = config.get("text_config") or config
    try:
        hidden, inter = int(text["hidden_size"]), int(text["intermediate_size"])
        layers, vocab, heads = int(text["num_hidden_layers"]), int(text["vocab_size"]), int(text["num_attention_heads"])
    except (KeyError, TypeError, ValueError):
        return None
    if text.get("num_local_experts") or text.get("num_experts"):
        return None  # mixture of experts: not this formula
    kv_heads = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or hidden // heads)
    q, kv = heads * head_dim, kv_heads * head_dim
    bias = text.get("model_type") == "qwen2" or bool(text.get("attention_bias"))
    attn = hidden * (q + 2 * kv) + q * hidden + ((q + 2 * kv) if bias else 0)
    per_layer = attn + 3 * hidden * inter + 2 * hidden
    tied = bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False)))
    n = layers * per_layer + vocab * hidden * (1 if tied else 2) + hidden
    return ModelShape(n_params=n, hidden=hidden, intermediate=inter, layers=layers, vocab=vocab)


def actor_state_gib(
    n_params: int, shards: int, *, params: bool = True, grads: bool = False, optimizer: bool = True
) -> dict[str, float]:
    """The actor's FSDP-sharded state on one GPU: ``{"params", "grads", "optimizer"}`` in GiB (0 when absent)."""
    per_gpu = n_params / shards / GIB
    return {
        "params": per_gpu * PARAM_BYTES if params else 0.0,
        "grads": per_gpu * GRAD_BYTES if grads else 0.0,
        "optimizer": per_gpu * ADAM_BYTES if optimizer else 0.0,
    }


def activation_gib(shape: ModelShape, tokens: int, gradient_checkpointing: bool = True) -> float:
    """Activation memory of one training micro-batch of ``tokens`` packed tokens on one GPU (rough).

    - layers: with checkpointing each layer's bf16 input (tokens x hidden) plus one layer recomputed in
      full; without, every layer in full. A layer's full set is taken as tokens x (8 hidden + 3
      intermediate) bf16 values (q/k/v/o, norms, residual; gate, up, act);
    - logits: four bf16 tokens x vocab tensors (the logits, their gradient, and the softmax and product
      that veRL's entropy keeps for backward), plus two fp32 :data:`LOGPROB_CHUNK` x vocab buffers.
    """
    full_layer = tokens * (8 * shape.hidden + 3 * shape.intermediate) * ACT_BYTES
    if gradient_checkpointing:
        layers = shape.layers * tokens * shape.hidden * ACT_BYTES + full_layer
    else:
        layers = shape.layers * full_layer
    logits = 4 * tokens * shape.vocab * ACT_BYTES + 2 * min(tokens, LOGPROB_CHUNK) * shape.vocab * 4
    return (layers + logits) / GIB


@dataclass(frozen=True)
class GpuRun:
    """The settings of a run that the memory estimate reads (the config keys in parentheses).

    Attributes:
        n_gpus: GPUs of the run, ``trainer.n_gpus_per_node * trainer.nnodes``.
        fsdp_size: ``actor.fsdp_config.fsdp_size`` (-1: all GPUs).
        gpu_memory_utilization: ``rollout.gpu_memory_utilization``.
        param_offload, optimizer_offload, offload_policy: ``actor.fsdp_config.*``.
        tokens_per_gpu: tokens of one training micro-batch per GPU (``ppo_max_token_len_per_gpu`` with
            dynamic batch size, else micro-batch size x (prompt + response)), divided by Ulysses SP.
        gradient_checkpointing: ``model.enable_gradient_checkpointing``.
        free_cache_engine: ``rollout.free_cache_engine`` (vLLM sleeps while the actor trains).
    """

    n_gpus: int
    gpu_memory_utilization: float
    tokens_per_gpu: int
    fsdp_size: int = -1
    param_offload: bool = False
    optimizer_offload: bool = False
    offload_policy: bool = False
    gradient_checkpointing: bool = True
    free_cache_engine: bool = True

    @property
    def shards(self) -> int:
        return self.n_gpus if self.fsdp_size in (-1, None) or self.fsdp_size <= 0 else self.fsdp_size


@dataclass(frozen=True)
class PhaseEstimate:
    """One phase's per-GPU memory: ``parts`` (name -> GiB) against ``card_gib``."""

    name: str
    card_gib: float
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def total_gib(self) -> float:
        return sum(self.parts.values())

    @property
    def usable_gib(self) -> float:
        """The card less :data:`HEADROOM`."""
        return self.card_gib * (1 - HEADROOM)

    @property
    def fits(self) -> bool:
        return self.total_gib <= self.usable_gib

    def describe(self) -> str:
        """``"vLLM 63.7 + actor params 3.5 + ... = 76.3 GiB"`` (parts over 0.05 GiB)."""
        shown = " + ".join(f"{k} {v:.1f}" for k, v in self.parts.items() if v >= 0.05)
        return f"{shown} = {self.total_gib:.1f} GiB"


def rollout_phase(shape: ModelShape, run: GpuRun, card_gib: float) -> PhaseEstimate:
    """Per-GPU memory while vLLM generates: its share of the card plus the actor's resident state."""
    on_cpu = run.offload_policy
    state = actor_state_gib(
        shape.n_params,
        run.shards,
        params=not (run.param_offload or on_cpu),
        optimizer=not (run.optimizer_offload or on_cpu),
    )
    parts = {
        f"vLLM ({run.gpu_memory_utilization:g} x {card_gib:.1f})": run.gpu_memory_utilization * card_gib,
        "actor fp32 params": state["params"],
        "Adam state": state["optimizer"],
        "CUDA/NCCL": CONTEXT_GIB,
    }
    return PhaseEstimate("rollout", card_gib, parts)


def training_phase(shape: ModelShape, run: GpuRun, card_gib: float) -> PhaseEstimate:
    """Per-GPU memory at the actor's peak: the backward of the largest micro-batch.

    ``optimizer_offload`` does not lower it: veRL's train-mode context loads the Adam state back on
    entry, before the first forward. With ``offload_policy`` (FSDP2's CPU offload) parameters, gradients
    and Adam state stay on the CPU.
    """
    on_cpu = run.offload_policy
    state = actor_state_gib(shape.n_params, run.shards, params=not on_cpu, grads=not on_cpu, optimizer=not on_cpu)
    acts = activation_gib(shape, run.tokens_per_gpu, run.gradient_checkpointing)
    parts = {
        "actor fp32 params": state["params"],
        "grads": state["grads"],
        "Adam state": state["optimizer"],
        f"activations ({run.tokens_per_gpu} tokens)": acts,
        "CUDA/NCCL": CONTEXT_GIB,
    }
    if not run.free_cache_engine:
        parts[f"vLLM awake ({run.gpu_memory_utilization:g} x {card_gib:.1f})"] = run.gpu_memory_utilization * card_gib
    return PhaseEstimate("training", card_gib, parts)


def max_gpu_memory_utilization(shape: ModelShape, run: GpuRun, card_gib: float, step: float = 0.05) -> float:
    """The largest multiple of ``step`` for ``gpu_memory_utilization`` whose rollout phase fits (0 if none)."""
    rest = rollout_phase(shape, run, card_gib).total_gib - run.gpu_memory_utilization * card_gib
    room = card_gib * (1 - HEADROOM) - rest
    return max(0.0, math.floor(room / card_gib / step + 1e-9) * step)


def max_tokens_per_gpu(shape: ModelShape, run: GpuRun, card_gib: float, step: int = 1024) -> int:
    """The largest multiple of ``step`` tokens per training micro-batch whose training phase fits (0 if none)."""
    fixed = training_phase(shape, run, card_gib).total_gib - activation_gib(
        shape, run.tokens_per_gpu, run.gradient_checkpointing
    )
    best, tokens = 0, step
    while tokens <= 1 << 22 and fixed + activation_gib(shape, tokens, run.gradient_checkpointing) <= card_gib * (
        1 - HEADROOM
    ):
        best, tokens = tokens, tokens + step
    return best


def checkpoint_bytes(n_params: int, save_contents: list[str]) -> int:
    """Bytes of one actor checkpoint: fp32 parameters (``model``), Adam state (``optimizer``), bf16 HF weights
    (``hf_model``); ``extra`` (RNG and scheduler state) is counted as nothing."""
    return n_params * sum(CKPT_BYTES.get(str(c), 0) for c in save_contents)


def checkpoints_on_disk(max_kept: int | None) -> int | None:
    """Most checkpoints of one run on disk at once under ``trainer.max_actor_ckpt_to_keep`` (None: all kept).

    veRL 0.9.1 (``BaseCheckpointManager.ensure_checkpoint_capacity`` / ``register_checkpoint``) deletes
    down to ``max_kept - 1`` before a save and to ``max_kept`` after it; with 1 the old one stays until the
    new one is written. Checkpoints left from before a resume are not counted (veRL deletes only its own).
    """
    return None if not max_kept or max_kept <= 0 else max(max_kept, 2)
