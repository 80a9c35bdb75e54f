"""The transformers generator behind the CPU rollout server: a causal LM plus vLLM-like sampling.

No Ray and no asyncio: :class:`luffy.cpu.hf_server.HFRolloutServer` runs it in a thread. Sampling
follows vLLM: ``temperature == 0`` is greedy, ``top_k <= 0`` and ``top_p == 1`` disable truncation, EOS
ends a sequence (and is returned, as vLLM does) unless ``ignore_eos``. Log-probs are those of the sampled
tokens under ``softmax(logits / temperature)`` (raw logits when greedy): what veRL's actor computes for
the same tokens, and vLLM's ``processed_logprobs`` when no top-k/top-p truncation applies.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from luffy.cpu.gqa_attention import NAME as GQA_SDPA

logger = logging.getLogger(__name__)


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
class GenerationResult:
    """One generated sequence: tokens (EOS included when hit), their log-probs and why it stopped."""

    token_ids: list[int]
    log_probs: list[float] = field(default_factory=list)
    finish_reason: str = "length"  # "stop" (EOS), "length" (max_tokens) or "abort"
    global_steps: int | None = None  # the server's weights version while generating (set by the server)


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
        attn_implementation: transformers attention backend: by default ``sdpa`` with decode steps that read
            a grouped KV cache in place (:mod:`luffy.cpu.gqa_attention`); "sdpa" or "eager" also work.
    """

    def __init__(self, model_path: str, dtype: torch.dtype = torch.float32, attn_implementation: str = GQA_SDPA):
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

    def _prefill(
        self, prompts: list[list[int]], width: int
    ) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run ``prompts`` left-padded to ``width``: (KV cache, last logits (B, V), input ids and mask (B, width))."""
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)  # (B, W)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)  # (B, W)
        for i, p in enumerate(prompts):
            input_ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            attention_mask[i, width - len(p) :] = 1
        # positions count real tokens only, so left padding does not shift them
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True
        )
        return out.past_key_values, out.logits[:, -1, :].float(), input_ids, attention_mask

    @staticmethod
    def _join_caches(old: Any, new: Any, grow: int) -> None:
        """Append ``new``'s rows to ``old`` in place; ``old`` is ``grow`` positions shorter and is left-padded
        with zeros (masked out), since joining prompts are prefilled at least as wide as the batch."""
        for a, b in zip(old.layers, new.layers):
            for attr in ("keys", "values"):
                x = torch.nn.functional.pad(getattr(a, attr), (0, 0, grow, 0))  # (B, H, L, D)
                setattr(a, attr, torch.cat([x, getattr(b, attr)], dim=0))

    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[int]],
        spec: SamplingSpec,
        should_abort: Any = None,
        generator: torch.Generator | None = None,
        admit: Any = None,
    ) -> list[GenerationResult]:
        """Generate a continuation for each prompt with one batched KV-cached decode loop.

        Args:
            prompts: token ids per request (lengths may differ; they are left-padded).
            spec: sampling parameters shared by the batch.
            should_abort: optional callable polled every step; when it returns True the batch stops
                and every unfinished sequence ends with ``finish_reason="abort"``.
            generator: RNG for sampling (``None``: torch's global RNG).
            admit: optional callable polled after every decode step; it returns more prompts (same
                ``spec``) that join the running batch (continuous batching: requests of one step reach
                the server a few ms apart). Their results follow the initial prompts', in admission order.
        """
        past, logits, input_ids, attention_mask = self._prefill(prompts, max(len(p) for p in prompts))
        results = [GenerationResult(token_ids=[]) for _ in prompts]
        rows = list(range(len(prompts)))  # batch row -> index into results; finished rows leave the batch
        while True:
            if should_abort is not None and should_abort():
                for r in rows:
                    results[r].finish_reason = "abort"
                return results
            if spec.repetition_penalty != 1.0:
                logits = self._repetition_penalty(
                    logits, input_ids, [results[r] for r in rows], spec.repetition_penalty
                )
            if spec.greedy:
                next_tokens = logits.argmax(dim=-1)  # (B,)
                logp = logits.log_softmax(dim=-1)
            else:
                logp = (logits / spec.temperature).log_softmax(dim=-1)  # (B, V)
                probs = self._warp(logits, spec).softmax(dim=-1)
                next_tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)
            token_logp = logp.gather(-1, next_tokens[:, None]).squeeze(-1).tolist()  # (B,)
            keep = []
            for b, tok in enumerate(next_tokens.tolist()):
                res = results[rows[b]]
                res.token_ids.append(tok)
                res.log_probs.append(token_logp[b])
                if not spec.ignore_eos and tok in self.eos_token_ids:
                    res.finish_reason = "stop"
                elif len(res.token_ids) < spec.max_tokens:
                    keep.append(b)  # else finish_reason stays "length"
            joining = admit() if admit is not None else []
            if not keep and not joining:
                return results
            if keep:
                if len(keep) < len(rows):  # drop finished rows: the rest decode a smaller batch
                    index = torch.tensor(keep)
                    past.batch_select_indices(index)
                    attention_mask, input_ids, next_tokens = attention_mask[index], input_ids[index], next_tokens[index]
                    rows = [rows[b] for b in keep]
                attention_mask = torch.cat([attention_mask, torch.ones_like(next_tokens)[:, None]], dim=-1)
                input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
                out = self.model(
                    input_ids=next_tokens[:, None],
                    attention_mask=attention_mask,
                    position_ids=(attention_mask.cumsum(-1) - 1).clamp(min=0)[:, -1:],
                    past_key_values=past,
                    use_cache=True,
                )
                past, logits = out.past_key_values, out.logits[:, -1, :].float()  # (B, V)
            if joining:
                width = attention_mask.shape[1] if keep else 0
                new_past, new_logits, new_ids, new_mask = self._prefill(joining, max(width, *map(len, joining)))
                if keep:
                    grow = new_ids.shape[1] - width  # > 0 when a joining prompt is longer than the batch so far
                    self._join_caches(past, new_past, grow)
                    attention_mask = torch.cat([torch.nn.functional.pad(attention_mask, (grow, 0)), new_mask])
                    input_ids = torch.cat(
                        [torch.nn.functional.pad(input_ids, (grow, 0), value=self.pad_token_id), new_ids]
                    )
                    logits = torch.cat([logits, new_logits])
                else:
                    past, logits, input_ids, attention_mask = new_past, new_logits, new_ids, new_mask
                    rows = []
                rows += range(len(results), len(results) + len(joining))
                results += [GenerationResult(token_ids=[]) for _ in joining]

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
