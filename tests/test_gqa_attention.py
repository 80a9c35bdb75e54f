"""The rollout's decode-step attention for grouped KV heads equals plain attention, head by head."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from luffy.cpu.gqa_attention import gqa_sdpa_attention


def _loop_attention(q, k, v, keep, groups):
    """q (B, Hq, Q, D), k/v (B, Hkv, L, D), keep (B, L) bool -> (B, Q, Hq, D), one head and query at a time."""
    batch, heads, q_len, dim = q.shape
    out = torch.zeros(batch, q_len, heads, dim, dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            kv = h // groups
            for t in range(q_len):
                scores = [
                    float(q[b, h, t] @ k[b, kv, j]) / math.sqrt(dim) if keep[b, j] else -math.inf
                    for j in range(k.shape[2])
                ]
                top = max(scores)
                weights = torch.tensor([math.exp(s - top) for s in scores], dtype=torch.float64)
                out[b, t, h] = (weights / weights.sum()) @ v[b, kv].double()
    return out


@pytest.mark.parametrize(("heads", "kv_heads", "q_len"), [(4, 2, 1), (8, 2, 1), (4, 4, 1), (4, 2, 3)])
def test_matches_a_loop_over_heads_with_padding(heads, kv_heads, q_len):
    gen = torch.Generator().manual_seed(heads * 10 + kv_heads + q_len)
    batch, length, dim = 3, 9, 8
    q = torch.randn(batch, heads, q_len, dim, generator=gen)
    k = torch.randn(batch, kv_heads, length, dim, generator=gen)
    v = torch.randn(batch, kv_heads, length, dim, generator=gen)
    keep = torch.ones(batch, length, dtype=torch.bool)
    keep[0, :3] = False  # left padding of different widths
    keep[2, :1] = False
    mask = keep[:, None, None, :].expand(batch, 1, q_len, length)  # (B, 1, Q, L): no causal part for these keys
    module = SimpleNamespace(num_key_value_groups=heads // kv_heads, is_causal=True)
    out, weights = gqa_sdpa_attention(module, q, k, v, mask)
    assert weights is None and out.shape == (batch, q_len, heads, dim)
    torch.testing.assert_close(out.double(), _loop_attention(q, k, v, keep, heads // kv_heads), atol=1e-5, rtol=0)
