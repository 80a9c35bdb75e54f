"""Token log-probabilities from fp32 logits, chunked, for actors without flash-attn's cross-entropy kernel.

veRL's ``logprobs_from_logits`` uses flash-attn's Triton cross-entropy (fp32 inside, fp32 out) when it
imports; without it (the ``gpu`` extra has no flash-attn) it falls back to ``logprobs_from_logits_v2``,
which on bf16 logits loops over the tokens in Python and returns bf16 log-probs (steps of 2**-6 at
log p = -3). :func:`chunked_fp32_logprobs` upcasts one chunk of tokens at a time, so the extra memory is
two fp32 ``chunk x vocab`` buffers whatever the micro-batch size, and recomputes the softmax per chunk in
backward instead of keeping it. :func:`use_fp32_logprobs_without_flash_attn` makes veRL's FSDP engine call it.
"""

from __future__ import annotations

import importlib.util

import torch

DEFAULT_CHUNK = 1024  # tokens: 2 x 1024 x 152064 x 4 B = 1.2 GB of fp32 buffers for Qwen2.5's vocabulary


class _ChunkedFp32LogProbs(torch.autograd.Function):
    """``log_softmax(logits.float())[labels]`` over chunks of rows; backward recomputes each chunk's softmax."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, chunk: int) -> torch.Tensor:
        out = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        for start in range(0, logits.shape[0], chunk):
            logp = torch.log_softmax(logits[start : start + chunk], dim=-1, dtype=torch.float32)
            out[start : start + chunk] = logp.gather(-1, labels[start : start + chunk].unsqueeze(-1)).squeeze(-1)
        ctx.save_for_backward(logits, labels)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logits, labels = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for start in range(0, logits.shape[0], ctx.chunk):
            stop = start + ctx.chunk
            # d log p(y) / d logits = onehot(y) - softmax(logits), in fp32, scaled by the incoming gradient
            g = torch.softmax(logits[start:stop], dim=-1, dtype=torch.float32).neg_()
            g.scatter_add_(-1, labels[start:stop].unsqueeze(-1), torch.ones_like(g[:, :1]))
            grad[start:stop] = g.mul_(grad_out[start:stop].unsqueeze(-1))
        return grad, None, None


def chunked_fp32_logprobs(
    logits: torch.Tensor, labels: torch.Tensor, inplace_backward: bool = True, chunk: int = DEFAULT_CHUNK
) -> torch.Tensor:
    """fp32 log-probabilities of ``labels`` under ``softmax(logits)``, whatever the logits' dtype.

    Args:
        logits: ``(..., vocab)``, any float dtype (bf16 under autocast).
        labels: ``(...)`` token ids.
        inplace_backward: accepted for veRL's signature; the gradient is always a new tensor.
        chunk: rows upcast at a time.

    Returns:
        ``(...)`` float32; its gradient w.r.t. ``logits`` has the logits' dtype.
    """
    del inplace_backward
    lead = logits.shape[:-1]
    flat = _ChunkedFp32LogProbs.apply(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), chunk)
    return flat.view(lead)


def flash_attn_cross_entropy_available() -> bool:
    """Whether flash-attn's Triton cross-entropy imports (what veRL's ``logprobs_from_logits`` prefers)."""
    if importlib.util.find_spec("flash_attn") is None:
        return False
    try:
        from flash_attn.ops.triton.cross_entropy import cross_entropy_loss  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken build (no CUDA, wrong torch ABI) is as good as none
        return False
    return True


def use_fp32_logprobs_without_flash_attn() -> bool:
    """In this process, make veRL's FSDP engine compute log-probs with :func:`chunked_fp32_logprobs`
    unless flash-attn's cross-entropy is available. Returns whether it did."""
    if flash_attn_cross_entropy_available() or importlib.util.find_spec("torch_npu") is not None:
        return False  # veRL's own fp32 kernels (flash-attn's, or Ascend's through torch_npu)
    from luffy.verl_compat import set_engine_logprobs

    set_engine_logprobs(chunked_fp32_logprobs)
    return True
