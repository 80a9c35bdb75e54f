"""Shaping of the on/off-policy importance ratio: the reshape names, their parsed form and the math.

A reshape name (``no_reshape``, ``logp``, ``p_logp``, ``square_root``, ``pow`` or ``p_div_p_<gamma>``)
is parsed once, where the config enters (:class:`luffy.mix_src.mix_config.LuffyActorConfig` and the
driver's :mod:`luffy.mix_src.config_check`), into a frozen :class:`Reshape` that the loss receives.

Beside the ratio shapings, :data:`TOKEN_WEIGHTS` names detached per-token weights ``w(p)`` that multiply
a term's per-token loss (the SFT NLL or the shaped off-policy term): CHORD's ``p(1 - p)`` and the
importance-style ``p`` (:func:`token_weight`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["ACCEPTED_RESHAPES", "TOKEN_WEIGHTS", "Reshape", "off_policy_ratio", "on_policy_ratio", "token_weight"]

# Names accepted by ``on_policy_reshape`` / ``off_policy_reshape``. The last entry is a pattern: any
# ``p_div_p_<gamma>`` with a positive finite number, e.g. ``p_div_p_0.1`` (LUFFY's recipe).
ACCEPTED_RESHAPES: tuple[str, ...] = ("no_reshape", "logp", "p_logp", "square_root", "pow", "p_div_p_<gamma>")
_P_DIV_P_PREFIX = "p_div_p_"
# Per-token weights w(p) of actor.sft_token_weight / actor.off_policy_token_weight (token_weight).
TOKEN_WEIGHTS: tuple[str, ...] = ("none", "p_one_minus_p", "p")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Reshape:
    """A parsed reshape: ``kind`` is the name without its number (``"p_div_p"`` for the pattern),
    ``gamma`` the number of ``p_div_p`` (else ``None``), ``weight`` the ``w`` of ``logp``/``p_logp`` and
    ``pow_exp`` the ``k`` of ``pow``."""

    kind: str
    gamma: float | None = None
    weight: float = 1.0
    pow_exp: float = 0.5

    @classmethod
    def parse(cls, name: str, weight: float = 1.0, pow_exp: float = 0.5) -> Reshape:
        """Parse a reshape name with its knobs.

        Raises:
            ValueError: for a name outside :data:`ACCEPTED_RESHAPES` (listing them), or a ``weight`` /
                ``pow_exp`` that is not a finite number.
        """
        kind, gamma = None, None
        if isinstance(name, str):
            if name in ACCEPTED_RESHAPES[:-1]:
                kind = name
            elif name.startswith(_P_DIV_P_PREFIX):
                try:
                    gamma = float(name[len(_P_DIV_P_PREFIX) :])
                except ValueError:
                    gamma = float("nan")
                if math.isfinite(gamma) and gamma > 0:
                    kind = "p_div_p"
        if kind is None:
            raise ValueError(
                f"Invalid reshape {name!r}; accepted: {', '.join(ACCEPTED_RESHAPES)} "
                "(gamma a positive number, e.g. 'p_div_p_0.1')"
            )
        for label, value in (("weight", weight), ("pow_exp", pow_exp)):
            if not _finite(value):
                raise ValueError(f"reshape {name!r}: {label}={value!r} must be a finite number")
        return cls(kind, gamma, float(weight), float(pow_exp))


def on_policy_ratio(
    reshape: Reshape, d: torch.Tensor, inside: torch.Tensor, p: torch.Tensor, old_log_prob: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Shaped on-policy ratio g and dg/dlog_prob, both (B, T), from the clamped log-ratio d (B, T).

    ``inside`` (B, T) marks tokens where the log-ratio clamp was inactive, ``p`` (B, T) is the current
    token probability. The third value tells whether dg still has to be zeroed where the clamp was
    active; for ``p_div_p`` that is already folded into dg.
    """
    kind, weight, exp_ = reshape.kind, reshape.weight, reshape.pow_exp
    if kind == "no_reshape":
        # g = e^d ; g' = e^d
        g = d.exp()
        return g, g, True
    if kind == "logp":
        # g = d ; g' = 1
        return d, torch.ones_like(d), True
    if kind == "p_logp":
        # g = e^d + w d ; g' = e^d + w
        e = d.exp()
        return e + weight * d, e.add_(weight), True
    if kind == "square_root":
        # g = sqrt(e^d) = e^(d/2) ; g' = g / 2
        g = (0.5 * d).exp()
        return g, 0.5 * g, True
    if kind == "pow":
        # g = (e^d)^k = e^(k d) ; g' = k g
        g = (exp_ * d).exp()
        return g, exp_ * g, True
    # p_div_p: g = f(p)/f(p_old), f(x) = x/(x+G), evaluated as e^d (p_old + G) / (p + G) (finite when p_old
    # underflows); g' = g (1[inside] - p/(p+G)), i.e. g G/(p+G) where the log-ratio clamp is inactive
    gamma = reshape.gamma
    inv = 1.0 / (p + gamma)  # (B, T)
    g = d.exp() * (old_log_prob.exp() + gamma) * inv  # (B, T)
    dg = g * (inside.to(g.dtype) - p * inv)  # (B, T)
    return g, dg, False


def off_policy_ratio(reshape: Reshape, log_q: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shaped off-policy ratio h(q), q = exp(log_q), and dh/dlog_q (= h'(q) q), all (B, T)."""
    kind, weight, exp_ = reshape.kind, reshape.weight, reshape.pow_exp
    if kind == "no_reshape":
        # h = q ; dh/dlog q = q
        return q, q
    if kind == "logp":
        # h = w log q ; dh/dlog q = w
        return weight * log_q, torch.full_like(log_q, weight)
    if kind == "p_logp":
        # h = w log q + q ; dh/dlog q = w + q
        return weight * log_q + q, q + weight
    if kind == "square_root":
        # h = q^(1/2) ; dh/dlog q = h / 2
        h = (0.5 * log_q).exp()
        return h, 0.5 * h
    if kind == "pow":
        # h = q^k ; dh/dlog q = k h
        h = (exp_ * log_q).exp()
        return h, exp_ * h
    # p_div_p: h = q/(q+G) ; dh/dlog q = q G/(q+G)^2 = h G/(q+G)
    gamma = reshape.gamma
    inv = 1.0 / (q + gamma)  # (B, T)
    h = q * inv  # (B, T)
    return h, h * gamma * inv


def check_token_weight(name: object) -> None:
    """Raise ``ValueError`` naming :data:`TOKEN_WEIGHTS` if ``name`` is not one of them."""
    if name not in TOKEN_WEIGHTS:
        raise ValueError(f"{name!r} is not a token weight; accepted: {', '.join(TOKEN_WEIGHTS)}")


def token_weight(name: str, p: torch.Tensor) -> torch.Tensor | None:
    """Per-token weight ``w(p)`` (same shape as ``p``, the current token probability), detached.

    ``none``: ``None`` (no weight). ``p_one_minus_p``: ``w = p (1 - p)`` (CHORD's phi: tokens the policy
    already predicts, p near 1, and tokens far from its distribution, p near 0, both count little).
    ``p``: ``w = p``, so that ``w * grad log p = grad p`` (an importance-style weight that favours
    tokens the policy finds likely).

    The weight is a constant of the backward pass: a term ``sum w(p) * l(p)`` has gradient
    ``sum w(p) * grad l(p)``, never a ``grad w`` part.
    """
    check_token_weight(name)
    if name == "none":
        return None
    p = p.detach()
    if name == "p":
        return p.clone()
    return p * (1.0 - p)
