"""The per-sample off-policy record and the masks built from it.

veRL's ``AgentLoopOutput`` is a fixed pydantic model, so a per-token tensor cannot ride along with a
sample. The agent loop stores two values in each sample's ``extra_fields`` instead:

* ``luffy_off_policy`` (bool): the sample holds target tokens (one of the prompt's ``n_prefix`` off-policy slots);
* ``luffy_prefix_len`` (int): how many leading response tokens are the target's (0 for on-policy).

The trainer and the loss rebuild the token mask from these and ``response_mask``. A training sample
also records ``luffy_progress`` (float in [0, 1], the fraction of training done when it was rolled
out), which the loss reads for the SFT coefficient's schedule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

OFF_POLICY_KEY = "luffy_off_policy"
PREFIX_LEN_KEY = "luffy_prefix_len"
PROGRESS_FIELD = "luffy_progress"


def as_dict_list(extra_fields: Any) -> list[Mapping[str, Any]]:
    """Per-sample ``extra_fields`` as a list of mappings, whatever container TransferQueue returned."""
    if hasattr(extra_fields, "tolist"):
        extra_fields = extra_fields.tolist()
    return [ef if isinstance(ef, Mapping) else {} for ef in extra_fields]


def off_policy_flags(extra_fields: Iterable[Mapping[str, Any]]) -> torch.Tensor:
    """``(batch_size,)`` bool: which samples are off-policy slots."""
    return torch.tensor([bool(ef.get(OFF_POLICY_KEY, False)) for ef in extra_fields], dtype=torch.bool)


def prefix_lengths(extra_fields: Iterable[Mapping[str, Any]]) -> torch.Tensor:
    """``(batch_size,)`` int64: number of leading off-policy response tokens per sample."""
    return torch.tensor([int(ef.get(PREFIX_LEN_KEY, 0) or 0) for ef in extra_fields], dtype=torch.int64)


def training_progress(extra_fields: Any) -> float:
    """The latest ``luffy_progress`` of the samples (0.0 when none records it)."""
    values = [float(ef[PROGRESS_FIELD]) for ef in as_dict_list(extra_fields) if ef.get(PROGRESS_FIELD) is not None]
    return max(values, default=0.0)


def off_policy_token_mask(extra_fields: Any, response_mask: torch.Tensor) -> torch.Tensor:
    """Token-level off-policy mask.

    Args:
        extra_fields: per-sample ``extra_fields`` (``batch_size`` mappings, any list-like container).
        response_mask: ``(batch_size, response_length)`` right-padded response mask.

    Returns:
        ``(batch_size, response_length)`` bool: true on the first ``luffy_prefix_len`` response tokens
        of each sample that are also in ``response_mask``.
    """
    lengths = prefix_lengths(as_dict_list(extra_fields)).to(response_mask.device)  # (B,)
    positions = torch.arange(response_mask.shape[-1], device=response_mask.device)  # (T,)
    return (positions.unsqueeze(0) < lengths.unsqueeze(1)) & response_mask.bool()  # (B, T)
