"""LUFFY's actor loss, installed on the worker with ``set_loss_fn``.

:func:`luffy_ppo_loss` is veRL's own ``ppo_loss`` (``verl/workers/utils/losses.py``: padding, global
batch normalisation info, KL loss, metric aggregation) with the policy term replaced by LUFFY's token
on/off-policy loss and the entropy bonus aggregated on the policy term's footing. veRL's ``ppo_loss``
picks its policy term by name from the policy-loss registry, and a registered policy loss receives no
batch fields; so this wrapper builds the off-policy token mask from the micro-batch and hands it to
:func:`luffy_policy_loss` (registered as :data:`LOSS_MODE`, selected by ``actor.policy_loss.loss_mode``)
through a context variable that is set only while veRL's ``ppo_loss`` runs.

Every term goes through veRL's ``agg_loss`` with the mini-batch's ``global_batch_info``, so the
gradient of a mini-batch does not depend on how it is cut into micro-batches. The aggregation mode is
``actor.loss_agg_mode``; LUFFY's ``loss_remove_token_mean=true`` sets it to ``seq-mean-token-sum-norm``
with ``loss_scale_factor`` = the configured maximum response length (``mix_config.py``).

With ``actor.use_sft_multitask_loss`` (LUFFY's "RL with an SFT loss" baseline) the policy term is PPO on
the on-policy tokens only, aggregated over the mini-batch's on-policy token and response counts, and
``sft_loss_coef`` times the target tokens' token-mean NLL is added beside it (``sft_loss.py``). The
successors' knobs (``docs/successors.md``) act here too: ``sft_token_weight`` weights each target
token's NLL, ``sft_loss_coef_schedule`` makes the coefficient ``mu`` a function of the training progress
the samples recorded (``guidance.sft_coef``), ``sft_rl_complement`` weights the PPO term ``1 - mu``,
and ``off_policy_token_weight`` weights the shaped off-policy term's tokens.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import torch
from tensordict import TensorDict
from verl.trainer.ppo.core_algos import agg_loss
from verl.utils.metric import AggregationType, Metric
from verl.workers.utils.losses import ppo_loss
from verl.workers.utils.padding import no_padding_2_padding

from luffy.mix_src.core_algos import LOSS_METRIC_KEYS, compute_token_on_off_policy_loss
from luffy.mix_src.guidance import sft_coef
from luffy.mix_src.mix_fields import off_policy_token_mask, training_progress
from luffy.mix_src.sft_loss import read_sft_counts, sft_nll_loss

LOSS_MODE = "luffy_mixed"
# Loss metrics reported per micro-batch (averaged by veRL over micro-batches), under "actor/": all of the
# loss's metrics but the total (veRL reports its own pg_loss), the old on-policy probability (the trainer
# reports it per step) and the token counts (not meaningful as micro-batch averages).
_NOT_REPORTED = ("pg_loss", "on_policy_prob", "on_token_count", "off_token_count")
_REPORTED = tuple(key for key in LOSS_METRIC_KEYS if key not in _NOT_REPORTED)
# with the SFT multitask loss: the policy term's only off-policy metric is the target probability
_SFT_REPORTED = ("on_pg_loss", "on_pg_clipfrac", "ppo_kl")
_OFF_POLICY_MASK: ContextVar[torch.Tensor | None] = ContextVar("luffy_off_policy_mask", default=None)
# with the SFT multitask loss: the on-policy counts that replace veRL's batch_num_tokens / global_batch_size
_ON_POLICY_BATCH_INFO: ContextVar[dict | None] = ContextVar("luffy_on_policy_batch_info", default=None)


def luffy_policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Policy term of LUFFY's loss, in veRL's policy-loss signature.

    Args:
        old_log_prob, log_prob, advantages, response_mask: ``(batch_size, response_length)``.
        loss_agg_mode: veRL's aggregation mode (``config.loss_agg_mode``).
        config: the actor config (:class:`luffy.mix_src.mix_config.LuffyActorConfig`).
        rollout_is_weights: ``(batch_size, response_length)`` rollout-correction weights (1 on
            off-policy tokens) or ``None``.

    Returns:
        ``(loss, metrics)``: the scalar loss aggregated by veRL's ``agg_loss`` over the global batch
        (``config.global_batch_info``, so micro-batch gradients add up to the mini-batch's), and float
        metrics.

    Raises:
        ValueError: when called outside :func:`luffy_ppo_loss` (no off-policy mask available).
    """
    off_mask = _OFF_POLICY_MASK.get()
    if off_mask is None:
        raise ValueError(
            f"policy_loss.loss_mode={LOSS_MODE!r} needs the off-policy mask; install luffy_ppo_loss with "
            "set_loss_fn (luffy.mix_src.mix_worker.MixActorRolloutRefWorker does)"
        )
    info = config.global_batch_info
    on_policy_info = _ON_POLICY_BATCH_INFO.get()
    if on_policy_info is not None:
        # SFT multitask loss: PPO on on-policy tokens alone, normalised by their own mini-batch counts
        response_mask = response_mask & ~off_mask
        off_mask = torch.zeros_like(off_mask)
        rl_scale = on_policy_info.get("rl_scale", 1.0)
        info = {**info, **{key: value for key, value in on_policy_info.items() if key != "rl_scale"}}
    if rollout_is_weights is not None:
        # w * max(a, b) = max(w a, w b) for w >= 0: weighting the advantage of an on-policy token is
        # weighting its clipped PPO loss, as veRL's vanilla loss does; off-policy tokens keep weight 1.
        advantages = torch.where(off_mask, advantages, advantages * rollout_is_weights)
    loss, raw = compute_token_on_off_policy_loss(
        old_log_prob=old_log_prob,
        log_prob=log_prob,
        advantages=advantages,
        response_mask=response_mask,
        off_policy_mask=off_mask,
        cliprange=config.clip_ratio_low if config.clip_ratio_low is not None else config.clip_ratio,
        clip_upper_bound=1.0 + (config.clip_ratio_high if config.clip_ratio_high is not None else config.clip_ratio),
        # parsed once by LuffyActorConfig.__post_init__, not per micro-batch
        off_policy_reshape=config.off_reshape,
        on_policy_reshape=config.on_reshape,
        off_max_clip=config.off_max_clip,
        off_min_clip=config.off_min_clip,
        all_max_clip=config.all_max_clip,
        loss_remove_token_mean=config.loss_remove_token_mean,
        loss_remove_clip=config.loss_remove_clip,
        loss_agg_mode=loss_agg_mode,
        global_batch_info=info,
        off_policy_token_weight=getattr(config, "off_policy_token_weight", "none"),
    )
    if on_policy_info is not None and rl_scale != 1.0:
        loss = loss * rl_scale  # sft_rl_complement: the PPO term weighted 1 - mu
    reported = _REPORTED if on_policy_info is None else _SFT_REPORTED
    metrics = {f"actor/{key}": float(raw[key]) for key in reported}
    metrics["actor/pg_clipfrac"] = metrics["actor/on_pg_clipfrac"]
    return loss, metrics


def entropy_bonus(config: Any, entropy: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Entropy term of the loss, aggregated like the policy term (``entropy`` and mask ``(B, T)``).

    veRL's ``agg_loss`` with the same mode and global batch information as the policy term, except that
    under ``seq-mean-token-sum-norm`` (``loss_remove_token_mean``) the token sums are divided by
    ``entropy_loss_scale_factor`` instead of the response length: LUFFY took a token *mean* of the
    entropy inside micro-batches of about that many tokens while the policy term was a token sum over
    the response length, and this keeps that ratio fixed (docs/algorithm.md, "The loss").
    """
    info = dict(config.global_batch_info)
    if config.loss_agg_mode == "seq-mean-token-sum-norm":
        info["loss_scale_factor"] = config.entropy_loss_scale_factor
    return agg_loss(loss_mat=entropy, loss_mask=response_mask, loss_agg_mode=config.loss_agg_mode, **info)


def _entropy_metrics(model_output: dict, data: TensorDict, off_mask: torch.Tensor, mask: torch.Tensor) -> dict:
    """Mean entropy of on- and off-policy tokens in the micro-batch (when the model returned it)."""
    entropy = model_output.get("entropy", None)
    if entropy is None:
        return {}
    entropy = no_padding_2_padding(entropy, data).detach().float()  # (B, T); float: bf16 sums round
    on_mask = mask & ~off_mask
    out = {}
    for name, m in (("actor/entropy_on_policy", on_mask), ("actor/entropy_off_policy", off_mask)):
        if m.any():
            out[name] = float((entropy * m).sum() / m.sum())
    return out


def luffy_ppo_loss(config: Any, model_output: dict, data: TensorDict, dp_group: Any = None):
    """veRL's ``ppo_loss`` with LUFFY's policy term (``fn(config, model_output, data, dp_group)``).

    Args:
        config: the actor config; ``config.policy_loss.loss_mode`` must be :data:`LOSS_MODE`.
        model_output: the engine's output (``log_probs``, optional ``entropy``), unpadded.
        data: the micro-batch TensorDict veRL hands the loss: ``response_mask`` (nested), ``extra_fields``
            (per-sample dicts holding the off-policy record), ``old_log_probs``, ``advantages``, ...

    Returns:
        ``(loss, metrics)`` as veRL's ``ppo_loss``.
    """
    response_mask = data.select("response_mask").to_padded_tensor()["response_mask"]  # (B, T)
    off_mask = off_policy_token_mask(data["extra_fields"], response_mask)  # (B, T)
    counts = read_sft_counts(data) if config.use_sft_multitask_loss else None
    on_policy_info = None
    if counts is not None:
        mu = sft_coef(
            config.sft_loss_coef_schedule,
            training_progress(data["extra_fields"]),
            config.sft_loss_coef,
            config.sft_loss_coef_valley,
            config.sft_loss_coef_warmup,
        )
        on_policy_info = {
            "batch_num_tokens": max(counts.on_policy_tokens, 1),
            "global_batch_size": max(counts.on_policy_samples, 1),
            "rl_scale": 1.0 - mu if config.sft_rl_complement else 1.0,
        }
    token = _OFF_POLICY_MASK.set(off_mask)
    info_token = _ON_POLICY_BATCH_INFO.set(on_policy_info)
    try:
        # veRL's ppo_loss without the entropy: it would aggregate it with the policy's length normaliser
        loss, metrics = ppo_loss(config, {**model_output, "entropy": None}, data, dp_group)
    finally:
        _OFF_POLICY_MASK.reset(token)
        _ON_POLICY_BATCH_INFO.reset(info_token)
    # veRL's rule in ppo_loss: a partial sum of the global-batch value when global information is present
    info = config.global_batch_info
    is_partial = (info.get("dp_size") or 1) > 1 or any(
        info.get(key) is not None for key in ("batch_num_tokens", "global_batch_size", "loss_scale_factor")
    )
    aggregation = AggregationType.SUM if is_partial else AggregationType.MEAN
    entropy = model_output.get("entropy", None)
    if entropy is not None:
        entropy_padded = no_padding_2_padding(entropy, data)  # (B, T)
        entropy_loss = entropy_bonus(config, entropy_padded, response_mask.bool())
        loss = loss - config.entropy_coeff * entropy_loss
        metrics["actor/entropy_loss"] = Metric(value=entropy_loss, aggregation=aggregation)
    if counts is not None:
        log_prob = no_padding_2_padding(model_output["log_probs"], data)  # (B, T)
        sft_loss = sft_nll_loss(
            log_prob, off_mask, counts.target_tokens, int(info.get("dp_size") or 1), config.sft_token_weight
        )
        loss = loss + mu * sft_loss
        metrics["actor/sft_loss_coef"] = mu
        if counts.target_tokens > 0:  # a mini-batch without targets has no NLL to report (not 0)
            metrics["actor/sft_loss"] = Metric(value=sft_loss.detach(), aggregation=aggregation)
        if off_mask.any():
            p = log_prob.detach().float().exp()
            metrics["actor/off_policy_prob"] = float((p * off_mask).sum() / off_mask.sum())
    metrics.update(_entropy_metrics(model_output, data, off_mask, response_mask.bool()))
    return loss, metrics
