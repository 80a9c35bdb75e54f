"""LUFFY's "RL with an SFT loss" baseline (``actor.use_sft_multitask_loss``): its SFT term and batch counts.

With the SFT multitask loss the actor's loss on one mini-batch is::

    loss = PPO(on-policy tokens)  +  sft_loss_coef * sum_{target tokens} -log p / N_target

where ``N_target`` is the number of target tokens of the whole mini-batch (every data-parallel rank) and
the PPO term is aggregated like the mixed loss but over on-policy tokens only (its token count and
response count are those of the on-policy tokens: ``mix_loss.py``). veRL's ``global_batch_info`` has
only the mini-batch's total response-token count, so :func:`assign_sft_counts` adds the three counts
this needs to the mini-batch (``mix_worker.SftCountingTrainingWorker``, before veRL cuts micro-batches), and
each micro-batch's loss reads them with :func:`read_sft_counts`: the micro-batch losses then add up to
the mini-batch's loss however it is cut.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from tensordict import TensorDict
from verl.trainer.ppo.core_algos import agg_loss
from verl.utils import tensordict_utils as tu

from luffy.mix_src.mix_fields import off_policy_token_mask
from luffy.mix_src.reshape import token_weight as reshape_token_weight

#: non-tensor keys of the mini-batch holding its global counts (every data-parallel rank together)
TARGET_TOKENS_KEY = "luffy_target_tokens"
ON_POLICY_TOKENS_KEY = "luffy_on_policy_tokens"
ON_POLICY_SAMPLES_KEY = "luffy_on_policy_samples"
_KEYS = (TARGET_TOKENS_KEY, ON_POLICY_TOKENS_KEY, ON_POLICY_SAMPLES_KEY)


class SftCounts(NamedTuple):
    """Counts of one mini-batch over every data-parallel rank."""

    target_tokens: int
    on_policy_tokens: int
    on_policy_samples: int


def batch_counts(data: TensorDict) -> SftCounts:
    """Target tokens, on-policy tokens and samples holding on-policy tokens in ``data`` (this rank only).

    Args:
        data: a batch as veRL's engine receives it: ``response_mask`` (nested or ``(B, T)``) and the
            per-sample ``extra_fields`` holding the off-policy record.
    """
    response_mask = data.select("response_mask").to_padded_tensor()["response_mask"].bool()  # (B, T)
    off = off_policy_token_mask(data["extra_fields"], response_mask)  # (B, T)
    on = response_mask & ~off  # (B, T)
    return SftCounts(int(off.sum()), int(on.sum()), int(on.any(dim=-1).sum()))


def assign_sft_counts(data: TensorDict, dp_group: Any = None) -> SftCounts:
    """Add the mini-batch's global counts to ``data`` as non-tensor entries (summed over ``dp_group``).

    veRL computes its ``batch_num_tokens`` the same way (``forward_backward_batch``: a sum over the
    mini-batch, all-reduced over the data-parallel group) and its micro-batches inherit such entries.
    """
    counts = batch_counts(data)
    if dp_group is not None and torch.distributed.is_initialized():
        from verl.utils.device import get_device_id

        total = torch.tensor(counts, dtype=torch.int64, device=get_device_id())
        torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM, group=dp_group)
        counts = SftCounts(*(int(x) for x in total.tolist()))
    tu.assign_non_tensor(data, **dict(zip(_KEYS, counts)))
    return counts


def read_sft_counts(data: TensorDict) -> SftCounts:
    """The counts :func:`assign_sft_counts` put on the mini-batch, read from one of its micro-batches.

    Raises:
        ValueError: when they are missing (the worker that adds them is not installed).
    """
    values = [tu.get_non_tensor_data(data, key=key, default=None) for key in _KEYS]
    if any(v is None for v in values):
        raise ValueError(
            "actor_rollout_ref.actor.use_sft_multitask_loss=true needs the mini-batch's target and on-policy "
            "counts; they are added by luffy.mix_src.mix_worker.MixActorRolloutRefWorker"
        )
    return SftCounts(*(int(v) for v in values))


def sft_nll_loss(
    log_prob: torch.Tensor,
    target_mask: torch.Tensor,
    target_tokens: int,
    dp_size: int = 1,
    token_weight: str = "none",
) -> torch.Tensor:
    """This micro-batch's share of the mini-batch's token-mean NLL of its target tokens.

    With ``token_weight`` (a name of :data:`luffy.mix_src.reshape.TOKEN_WEIGHTS`) each token's NLL is
    multiplied by ``w(p)``, ``p = exp(log_prob)``, detached: the loss is ``sum -w(p) log p / N`` and its
    gradient ``sum -w(p) grad log p / N`` (CHORD's ``p (1 - p)``; with ``p`` it is ``-grad p``).

    Args:
        log_prob: ``(batch_size, response_length)`` current log-probs (gradients flow through them).
        target_mask: ``(batch_size, response_length)`` bool, true on target tokens.
        target_tokens: target tokens of the whole mini-batch (every rank); 0 gives a zero loss.
        dp_size: data-parallel ranks (veRL's ``agg_loss`` convention: gradients are averaged over ranks).
        token_weight: ``none`` (plain NLL), ``p_one_minus_p`` or ``p``.

    Returns:
        0-dim tensor ``sum_{target} -log p / max(target_tokens, 1) * dp_size``, float32 (float64 for
        float64 input).
    """
    lp = log_prob if log_prob.dtype == torch.float64 else log_prob.float()  # (B, T); bf16 sums round
    nll = -lp  # (B, T)
    weight = reshape_token_weight(token_weight, lp.detach().exp())  # (B, T) detached, or None
    if weight is not None:
        nll = nll * weight
    return agg_loss(
        loss_mat=nll,
        loss_mask=target_mask,
        loss_agg_mode="token-mean",
        dp_size=dp_size,
        batch_num_tokens=max(int(target_tokens), 1),
    )
