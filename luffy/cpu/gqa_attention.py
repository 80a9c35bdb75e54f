"""Decode-step attention for grouped-query models without copying the KV cache per query head.

transformers' ``sdpa`` attention expands grouped key/value heads to one copy per query head
(``repeat_kv``) whenever an attention mask is given, which it always is for a left-padded batch: one
copy of the whole cache per layer per decode step. For a one-token query the same result comes from
folding the query heads of each group into the query-length axis, so the cache is read in place.
Registered with transformers' ``AttentionInterface`` (and its mask interface) under :data:`NAME`;
the CPU rollout's generator loads its model with it. Anything but a one-token grouped query goes to
transformers' own ``sdpa`` function unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

NAME = "luffy_gqa_sdpa"


def gqa_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """query (B, Hq, Q, D), key/value (B, Hkv, L, D), mask (B, 1, Q, L) -> output (B, Q, Hq, D), None."""
    groups = getattr(module, "num_key_value_groups", 1)
    batch, heads, q_len, dim = query.shape
    if groups == 1 or q_len != 1:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    # query head h reads key/value head h // groups (repeat_kv's order): group the heads as query rows
    grouped = query.reshape(batch, heads // groups, groups, dim)  # (B, Hkv, groups, D)
    out = torch.nn.functional.scaled_dot_product_attention(
        grouped, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling
    )  # (B, Hkv, groups, D)
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, gqa_sdpa_attention)
AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
