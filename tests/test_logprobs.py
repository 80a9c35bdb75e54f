"""fp32 token log-probs without flash-attn (``luffy.mix_src.logprobs``), through the path veRL's actor runs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from verl.utils.torch_functional import logprobs_from_logits_v2
from verl.workers.engine.fsdp import transformer_impl

from luffy.mix_src import logprobs as lp


def _reference(logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """log softmax(row)[label] of every row, one value at a time in Python floats (float64)."""
    out = []
    for row, label in zip(logits.tolist(), labels.tolist(), strict=True):
        top = max(row)
        lse = top + math.log(sum(math.exp(x - top) for x in row))
        out.append(row[label] - lse)
    return out


def _inputs(rows: int, vocab: int, seed: int, dtype=torch.bfloat16):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, vocab, generator=gen) * 4).to(dtype)  # spread like a trained LM's logits
    labels = torch.randint(0, vocab, (rows,), generator=gen)
    return logits, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bf16_logits_give_fp32_logprobs_within_1e4_of_the_reference(seed):
    logits, labels = _inputs(37, 257, seed)
    got = lp.chunked_fp32_logprobs(logits, labels, chunk=8)  # 37 rows: four full chunks and a partial one
    assert got.dtype == torch.float32 and got.shape == (37,)
    ref = torch.tensor(_reference(logits, labels), dtype=torch.float64)
    assert (got.double() - ref).abs().max().item() < 1e-4
    # veRL's fallback on the same logits is bf16: the error this module removes
    fallback = logprobs_from_logits_v2(logits, labels)
    assert fallback.dtype == torch.bfloat16 and (fallback.double() - ref).abs().max().item() > 1e-3


def test_hand_computed_case_and_leading_dims():
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]], dtype=torch.bfloat16)  # (1, 2, 2)
    labels = torch.tensor([[1, 0]])
    got = lp.chunked_fp32_logprobs(logits, labels, chunk=1)
    assert got.shape == (1, 2)
    assert got[0, 0].item() == pytest.approx(math.log(0.5), abs=1e-6)
    assert got[0, 1].item() == pytest.approx(math.log(0.75), abs=1e-3)  # log(3) rounds in bf16


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_gradient_matches_autograd_of_the_fp64_reference(dtype, tol):
    logits, labels = _inputs(23, 101, seed=3, dtype=dtype)
    weights = torch.randn(23, generator=torch.Generator().manual_seed(4))
    x = logits.clone().requires_grad_(True)
    (lp.chunked_fp32_logprobs(x, labels, chunk=5) * weights).sum().backward()
    ref_x = logits.double().requires_grad_(True)
    (torch.log_softmax(ref_x, -1).gather(-1, labels[:, None]).squeeze(-1) * weights.double()).sum().backward()
    assert x.grad.dtype == dtype
    assert (x.grad.double() - ref_x.grad).abs().max().item() < tol


def test_the_fsdp_engine_calls_it_without_flash_attn(monkeypatch):
    """veRL's own ``FSDPEngineWithLMHead.prepare_model_outputs`` on bf16 packed logits returns fp32 log-probs."""
    if lp.flash_attn_cross_entropy_available():
        pytest.skip("flash-attn's cross-entropy is installed: veRL's own fp32 kernel is used")
    monkeypatch.setattr(transformer_impl, "logprobs_from_logits", transformer_impl.logprobs_from_logits)  # restored
    assert lp.use_fp32_logprobs_without_flash_attn()

    from tensordict import TensorDict

    lengths = [5, 9, 3]
    logits, labels = _inputs(sum(lengths), 97, seed=5)
    offsets = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    input_ids = torch.nested.nested_tensor_from_jagged(labels, offsets)  # token ids: only the offsets are read
    micro_batch = TensorDict({"input_ids": input_ids}, batch_size=[len(lengths)])
    engine = transformer_impl.FSDPEngineWithLMHead.__new__(transformer_impl.FSDPEngineWithLMHead)
    engine.use_ulysses_sp = False
    output_args = {
        "input_ids_rmpad_rolled": labels,
        "temperature_rmpad": torch.ones(len(labels)),
        "temperature_is_one": True,
        "pad_size": 0,
    }
    out = engine.prepare_model_outputs(SimpleNamespace(logits=logits[None]), output_args, micro_batch, None)
    got = out["log_probs"].values()
    assert got.dtype == torch.float32
    ref = torch.tensor(_reference(logits, labels), dtype=torch.float64)
    assert (got.double() - ref).abs().max().item() < 1e-4
