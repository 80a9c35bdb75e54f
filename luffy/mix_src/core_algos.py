"""LUFFY's mixed on/off-policy token loss.

:func:`compute_token_on_off_policy_loss` is a pure-torch PPO-clipped loss on on-policy tokens plus an
unclipped, optionally shaped importance-sampling loss on off-policy (guidance) tokens; the shaping
functions and their parsed config live in :mod:`luffy.mix_src.reshape`, the split GRPO advantage in
:mod:`luffy.mix_src.advantage`.

It works on CPU and GPU, accepts float32/bfloat16 inputs and computes in float32 (float64 inputs stay
float64). The loss is aggregated by veRL's own ``agg_loss`` with veRL's global batch information, so
its normalisation is the one veRL applies to every other loss term. The function is not itself a veRL
registry entry; the ``luffy_mixed`` policy loss (``mix_loss.py``, registered in ``registration.py``)
adapts it and receives the off-policy token mask from LUFFY's ``ppo_loss`` wrapper.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from luffy.mix_src.reshape import Reshape, check_token_weight, off_policy_ratio, on_policy_ratio, token_weight

__all__ = [
    "LOSS_METRIC_KEYS",
    "compute_token_on_off_policy_loss",
    "luffy_loss_agg_mode",
]

# veRL's loss_agg_mode that expresses LUFFY's loss_remove_token_mean: per-sequence token sums, divided by
# the number of sequences of the global mini-batch and by one constant length (loss_scale_factor).
REMOVE_TOKEN_MEAN_MODE = "seq-mean-token-sum-norm"

# Same bound as veRL's PPO loss: log-ratios are clamped to [-20, 20] before ``exp``.
_LOG_RATIO_CLAMP = 20.0
# Floor for ``target_probs`` so that ``p / target_probs`` stays finite.
_TARGET_PROB_FLOOR = 1e-12


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


class _TokenLossWithGrad(torch.autograd.Function):
    """Per-token loss ``(B, T)`` whose elementwise derivative w.r.t. ``log_prob`` was computed analytically.

    Saves one (B, T) tensor instead of every intermediate of the elementwise graph; the aggregation
    on top of it (veRL's ``agg_loss``) is ordinary autograd. Gradients reach ``log_prob`` only.
    """

    @staticmethod
    def forward(ctx: Any, log_prob: torch.Tensor, tok_loss: torch.Tensor, dtok: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(dtok)
        ctx.in_dtype = log_prob.dtype
        return tok_loss

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (dtok,) = ctx.saved_tensors
        return (dtok * grad_out).to(ctx.in_dtype), None, None


def luffy_loss_agg_mode(loss_agg_mode: str, loss_remove_token_mean: bool) -> str:
    """veRL ``loss_agg_mode`` of LUFFY's loss: ``seq-mean-token-sum-norm`` when ``loss_remove_token_mean``.

    Raises:
        ValueError: ``loss_remove_token_mean`` together with a mode other than veRL's default
            ``token-mean`` or the mode it stands for.
    """
    if not loss_remove_token_mean:
        return loss_agg_mode
    if loss_agg_mode not in ("token-mean", REMOVE_TOKEN_MEAN_MODE):
        raise ValueError(
            f"loss_remove_token_mean=true is loss_agg_mode={REMOVE_TOKEN_MEAN_MODE!r}; it cannot be combined "
            f"with loss_agg_mode={loss_agg_mode!r}"
        )
    return REMOVE_TOKEN_MEAN_MODE


def _as_reshape(key: str, reshape: Reshape | str, weight: float | None, pow_exp: float | None) -> Reshape:
    """The :class:`Reshape` of one side of the loss: passed through, or parsed from its name once per call."""
    if isinstance(reshape, Reshape):
        if weight is not None or pow_exp is not None:
            raise ValueError(
                f"{key}: a parsed Reshape carries its own weight and pow_exp; leave the {key}_* knobs None"
            )
        return reshape
    try:
        return Reshape.parse(reshape, 1.0 if weight is None else weight, 0.5 if pow_exp is None else pow_exp)
    except ValueError as err:
        raise ValueError(f"{key}: {err}") from None


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum(a * b) over all elements without materialising the product."""
    return torch.dot(a.reshape(-1), b.reshape(-1))


def compute_token_on_off_policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    off_policy_mask: torch.Tensor,
    cliprange: float = 0.2,
    clip_upper_bound: float | None = None,
    off_policy_reshape: Reshape | str = "no_reshape",
    off_policy_reshape_weight: float | None = None,
    off_policy_reshape_pow_exp: float | None = None,
    on_policy_reshape: Reshape | str = "no_reshape",
    on_policy_reshape_weight: float | None = None,
    on_policy_reshape_pow_exp: float | None = None,
    off_max_clip: float | None = None,
    off_min_clip: float | None = None,
    all_max_clip: float | None = None,
    target_probs: torch.Tensor | None = None,
    loss_remove_token_mean: bool = False,
    loss_remove_clip: bool = False,
    loss_agg_mode: str = "token-mean",
    global_batch_info: Mapping[str, Any] | None = None,
    off_policy_token_weight: str = "none",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """LUFFY's mixed policy loss: PPO on on-policy tokens, shaped importance sampling on off-policy ones.

    All tensors are ``(batch_size, response_length)``; ``off_policy_mask`` may also be ``(batch_size,)``.

    On-policy tokens (``off_policy_mask == 0``), with ``d = clamp(log p - log p_old, -20, 20)``::

        g = e^d                      no_reshape
            d                        logp
            e^d + w d                p_logp        (w = on_policy_reshape_weight)
            e^(d/2)                  square_root
            e^(k d)                  pow           (k = on_policy_reshape_pow_exp)
            f(p) / f(p_old)          p_div_p_G     f(x) = x / (x + G), evaluated as e^d (p_old+G)/(p+G)
        L = max(-A g, -A clamp(g, 1 - cliprange, hi)),  hi = max(clip_upper_bound, 1 + cliprange)
        (L = -A g when loss_remove_clip)

    Off-policy tokens (``off_policy_mask == 1``): the behaviour probability is taken as 1, so the
    ratio is ``q = p = exp(log p)`` (``q = p / target_probs`` when ``target_probs`` is given), and::

        h = q | w log q | w log q + q | sqrt(q) | q^k | q / (q + G)      (same names, off_policy_* knobs)
        h <- clamp(h, off_min_clip, off_max_clip)                         (each bound optional)
        L = -A h                                                          (never PPO-clipped)
        L = -A w(p) h      with off_policy_token_weight (w detached: gradient -A w(p) grad h)

    ``all_max_clip``: tokens with current probability ``p > all_max_clip`` (either kind) are dropped
    from the loss and from its normaliser. With ``m`` the resulting mask (response_mask, minus those),
    the loss is veRL's ``agg_loss(L, m, mode, **global_batch_info)``, ``mode = loss_agg_mode``, or
    ``seq-mean-token-sum-norm`` when ``loss_remove_token_mean``::

        loss = sum_{b,t} m L / N_tok * dp            token-mean; N_tok = global_batch_info's
                                                     batch_num_tokens (this batch's sum(m) without it)
        loss = sum_{b,t} m L / (N_seq * T_norm) * dp loss_remove_token_mean; N_seq = global_batch_size
                                                     (rows holding a kept token without it), T_norm =
                                                     loss_scale_factor (the width T without it)

    so micro-batches of one mini-batch add up to the mini-batch's loss whatever their shapes.
    ``batch_num_tokens`` counts every response token, so with ``all_max_clip`` and token-mean the
    micro-batch's sum is rescaled by ``sum(response_mask) / sum(m)``: its dropped tokens leave the
    denominator too (exact when the mini-batch is one micro-batch; per micro-batch otherwise).

    Gradients flow to ``log_prob`` only (``old_log_prob``, ``advantages`` and ``target_probs`` are
    treated as constants); the gradient is computed analytically and matches autograd of the formulas
    above. Inputs must be finite; log-probabilities down to -1e4 give finite results.

    Args:
        old_log_prob: ``(batch_size, response_length)`` log-probs of the rollout (behaviour) policy.
        log_prob: ``(batch_size, response_length)`` log-probs of the current policy.
        advantages: ``(batch_size, response_length)``.
        response_mask: ``(batch_size, response_length)`` 1 on response tokens.
        off_policy_mask: ``(batch_size, response_length)`` or ``(batch_size,)``; 1 on off-policy tokens.
        cliprange: PPO epsilon.
        clip_upper_bound: optional larger upper clip bound for the on-policy ratio.
        off_policy_reshape, on_policy_reshape: a parsed :class:`~luffy.mix_src.reshape.Reshape` (what the
            worker passes, parsed once by its config), or a name of
            :data:`~luffy.mix_src.reshape.ACCEPTED_RESHAPES`, parsed here with the two knobs below.
        off_policy_reshape_weight, on_policy_reshape_weight: ``w`` of ``logp``/``p_logp`` for a name
            (default 1.0); must stay ``None`` with a ``Reshape``, which carries its own.
        off_policy_reshape_pow_exp, on_policy_reshape_pow_exp: ``k`` of ``pow`` for a name (default
            0.5); must stay ``None`` with a ``Reshape``.
        off_max_clip, off_min_clip: bounds on the shaped off-policy ratio.
        all_max_clip: drop tokens whose current probability exceeds this.
        target_probs: ``(batch_size, response_length)`` probabilities of the off-policy tokens under the
            policy that produced them (floored at 1e-12); the shaping then applies to ``p / target_probs``.
        loss_remove_token_mean: LUFFY's name for ``loss_agg_mode="seq-mean-token-sum-norm"``.
        loss_remove_clip: no PPO clip on on-policy tokens.
        loss_agg_mode: veRL's aggregation mode (``token-mean``, ``token-sum``, ``seq-mean-*``).
        off_policy_token_weight: a name of :data:`~luffy.mix_src.reshape.TOKEN_WEIGHTS`: per-token
            weight ``w(p)`` of the off-policy term, ``p`` the current probability, treated as a constant.
        global_batch_info: veRL's ``dp_size``, ``batch_num_tokens``, ``global_batch_size`` and
            ``loss_scale_factor`` of the mini-batch this micro-batch belongs to; ``None`` = this batch alone.

    Returns:
        ``(loss, metrics)``: ``loss`` a 0-dim float32 tensor (float64 for float64 inputs), the aggregated
        loss above; ``metrics`` maps the names in :data:`LOSS_METRIC_KEYS` to detached 0-dim tensors, all taken over
        the tokens left after ``all_max_clip`` of this batch: ``pg_loss`` (the loss), ``on_pg_loss`` / ``off_pg_loss``
        (sum of L over on / off tokens divided by their count), ``on_pg_clipfrac`` (on tokens whose
        clipped term is strictly larger), ``ppo_kl`` (mean of ``-d`` over on tokens), ``off_ratio_mean``
        (mean clamped shaped ratio h), ``off_ratio_max_clip_frac`` / ``off_ratio_min_clip_frac`` (off
        tokens where h was above / below the bound), ``off_policy_prob`` (mean p over off tokens),
        ``on_policy_prob`` (mean p_old over on tokens), ``on_token_count``, ``off_token_count``.
        Averages over an empty set of tokens are 0.
    """
    off_reshape = _as_reshape(
        "off_policy_reshape", off_policy_reshape, off_policy_reshape_weight, off_policy_reshape_pow_exp
    )
    on_reshape = _as_reshape(
        "on_policy_reshape", on_policy_reshape, on_policy_reshape_weight, on_policy_reshape_pow_exp
    )
    shape = log_prob.shape
    if log_prob.dim() != 2:
        raise ValueError(f"log_prob must be (batch_size, response_length), got {tuple(shape)}")
    for name, t in (
        ("old_log_prob", old_log_prob),
        ("advantages", advantages),
        ("response_mask", response_mask),
    ):
        if t.shape != shape:
            raise ValueError(f"{name} shape {tuple(t.shape)} != log_prob shape {tuple(shape)}")
    if target_probs is not None and target_probs.shape != shape:
        raise ValueError(f"target_probs shape {tuple(target_probs.shape)} != log_prob shape {tuple(shape)}")
    if off_policy_mask.shape != shape and tuple(off_policy_mask.shape) != (shape[0],):
        raise ValueError(
            f"off_policy_mask must have shape {tuple(shape)} or ({shape[0]},), got {tuple(off_policy_mask.shape)}"
        )
    if cliprange < 0:
        raise ValueError(f"cliprange must be >= 0, got {cliprange}")
    check_token_weight(off_policy_token_weight)
    agg_mode = luffy_loss_agg_mode(loss_agg_mode, loss_remove_token_mean)
    info = dict(global_batch_info or {})
    has_global_tokens = info.get("batch_num_tokens") is not None

    cdt = _compute_dtype(log_prob)
    need_grad = torch.is_grad_enabled() and log_prob.requires_grad
    with torch.no_grad():
        lp = log_prob.detach().to(cdt)  # (B, T)
        old = old_log_prob.detach().to(cdt)  # (B, T)
        neg_adv = -advantages.detach().to(cdt)  # (B, T)
        off = off_policy_mask.bool()
        if off.dim() == 1:
            off = off.unsqueeze(-1).expand(shape).contiguous()  # (B, T)
        mask = response_mask.to(cdt)  # (B, T)
        p = lp.exp()  # (B, T) current token probability

        # ---- on-policy part ----
        raw = lp - old  # (B, T)
        # d = clamp(log p - log p_old, -20, 20); dd/dlog p = 1 where the clamp is inactive, else 0
        d = raw.clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)  # (B, T)
        inside = d == raw  # (B, T)
        g, dg, fold_inside = on_policy_ratio(on_reshape, d, inside, p, old)
        on_no_grad = ~inside if fold_inside else None  # (B, T) tokens whose dL/dlog p is 0
        if loss_remove_clip:
            # L_on = -A g
            on_loss = neg_adv * g  # (B, T)
            on_clipped = None
        else:
            hi = 1.0 + cliprange if clip_upper_bound is None else max(clip_upper_bound, 1.0 + cliprange)
            # L_on = max(-A g, -A clamp(g, 1 - eps, hi)); where the clipped term wins, dL/dlog p = 0
            unclipped = neg_adv * g  # (B, T)
            clipped_loss = neg_adv * g.clamp(1.0 - cliprange, hi)  # (B, T)
            on_clipped = clipped_loss > unclipped  # (B, T)
            on_loss = torch.maximum(unclipped, clipped_loss, out=unclipped)  # (B, T)
            on_no_grad = on_clipped if on_no_grad is None else on_no_grad | on_clipped

        # ---- off-policy part ----
        if target_probs is None:
            log_q, q = lp, p  # (B, T)
        else:
            # log q = log p - log target
            log_q = lp - target_probs.detach().to(cdt).clamp(min=_TARGET_PROB_FLOOR).log()  # (B, T)
            q = log_q.exp()  # (B, T)
        h, dh = off_policy_ratio(off_reshape, log_q, q)
        over = under = off_no_grad = None
        if off_max_clip is not None:
            # h = min(h, off_max_clip); no gradient where it binds
            over = h > off_max_clip  # (B, T)
            h = h.clamp(max=off_max_clip)
            off_no_grad = over
        if off_min_clip is not None:
            # h = max(h, off_min_clip)
            under = h < off_min_clip  # (B, T)
            h = h.clamp(min=off_min_clip)
            off_no_grad = under if off_no_grad is None else off_no_grad | under

        weighted_h = h
        weight = token_weight(off_policy_token_weight, p)  # (B, T) detached w(p), or None
        if weight is not None:
            # L = -A w h ; dL/dlog p = -A w h' (w is a constant of the backward pass)
            weighted_h = h * weight
            dh = dh * weight

        # per-token loss L = -A h (off) | L_on (on), and dL/dlog p = -A h' | -A g' (0 where clipped)
        tok_loss = torch.where(off, neg_adv * weighted_h, on_loss)  # (B, T)

        # ---- masks ----
        full_mask = mask  # (B, T)
        if all_max_clip is not None:
            mask = mask.masked_fill(p > all_max_clip, 0.0)  # (B, T)
        off_m = mask * off.to(cdt)  # (B, T)
        on_m = mask - off_m  # (B, T)
        n_on = on_m.sum()
        n_off = off_m.sum()
        on_sum = _dot(tok_loss, on_m)
        off_sum = _dot(tok_loss, off_m)

        on_den = n_on.clamp(min=1.0)
        off_den = n_off.clamp(min=1.0)
        zero = torch.zeros((), dtype=cdt, device=lp.device)
        metrics = {
            "on_pg_loss": on_sum / on_den,
            "off_pg_loss": off_sum / off_den,
            "on_pg_clipfrac": zero if on_clipped is None else _dot(on_clipped.to(cdt), on_m) / on_den,
            # ppo_kl = mean over on-policy tokens of (log p_old - log p), clamped as veRL does
            "ppo_kl": -_dot(d, on_m) / on_den,
            "off_ratio_mean": _dot(h, off_m) / off_den,
            "off_ratio_max_clip_frac": zero if over is None else _dot(over.to(cdt), off_m) / off_den,
            "off_ratio_min_clip_frac": zero if under is None else _dot(under.to(cdt), off_m) / off_den,
            "off_policy_prob": _dot(p, off_m) / off_den,
            "on_policy_prob": _dot(old.exp(), on_m) / on_den,
            "on_token_count": n_on,
            "off_token_count": n_off,
        }
        dtok = None
        if need_grad:
            # dL/dlog p = -A (h' | g'), zero where a clip binds (masking and scale come from agg_loss)
            if on_no_grad is not None and off_no_grad is not None:
                no_grad = torch.where(off, off_no_grad, on_no_grad)  # (B, T)
            elif on_no_grad is not None:
                no_grad = on_no_grad & ~off  # (B, T)
            else:
                no_grad = off_no_grad if off_no_grad is None else off_no_grad & off  # (B, T)
            dtok = torch.where(off, dh, dg).mul_(neg_adv)  # (B, T)
            if no_grad is not None:
                dtok.masked_fill_(no_grad, 0.0)

    # imported here: config_check imports this module before veRL is loaded (early config errors)
    from verl.trainer.ppo.core_algos import agg_loss

    if need_grad:
        tok_loss = _TokenLossWithGrad.apply(log_prob, tok_loss, dtok)  # (B, T), differentiable
    # without global information: this batch's own counts, at least 1 (an empty batch gives 0, not 0/0)
    if info.get("batch_num_tokens") is None and int(info.get("dp_size") or 1) == 1:
        info["batch_num_tokens"] = max(float(n_on + n_off), 1.0)
    if info.get("global_batch_size") is None and int(info.get("dp_size") or 1) == 1:
        info["global_batch_size"] = max(int((mask.sum(dim=-1) > 0).sum()), 1)
    loss = agg_loss(loss_mat=tok_loss, loss_mask=mask, loss_agg_mode=agg_mode, **info)
    if all_max_clip is not None and agg_mode == "token-mean" and has_global_tokens:
        # batch_num_tokens counts the dropped tokens too: take this batch's ones out of the denominator
        kept = float(n_on + n_off)
        if kept > 0:
            loss = loss * (float(full_mask.sum()) / kept)
    metrics["pg_loss"] = loss.detach()
    return loss, metrics


# Keys of the metrics dict returned by compute_token_on_off_policy_loss.
LOSS_METRIC_KEYS: tuple[str, ...] = (
    "pg_loss",
    "on_pg_loss",
    "off_pg_loss",
    "on_pg_clipfrac",
    "ppo_kl",
    "off_ratio_mean",
    "off_ratio_max_clip_frac",
    "off_ratio_min_clip_frac",
    "off_policy_prob",
    "on_policy_prob",
    "on_token_count",
    "off_token_count",
)
