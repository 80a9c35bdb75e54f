"""Tests for luffy.mix_src.core_algos against slow per-sample / per-token loop references."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from luffy.mix_src.advantage import compute_grpo_outcome_advantage_split
from luffy.mix_src.core_algos import LOSS_METRIC_KEYS, compute_token_on_off_policy_loss
from luffy.mix_src.reshape import ACCEPTED_RESHAPES, Reshape

HYP = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RESHAPES = ["no_reshape", "logp", "p_logp", "square_root", "pow", "p_div_p_0.1", "p_div_p_0.5", "p_div_p_2"]


# --------------------------------------------------------------------------------------------------
# Loop references
# --------------------------------------------------------------------------------------------------
def ref_advantage(rewards, mask, index, off, epsilon, norm, stats_from):
    """Per-group loops with the statistics module (stdev is the unbiased sample std)."""
    bsz = rewards.shape[0]
    scores = [float(sum(rewards[i].tolist())) for i in range(bsz)]
    is_off = [False] * bsz
    if off is not None:
        for i in range(bsz):
            is_off[i] = bool(off[i].any()) if off.dim() == 2 else bool(off[i])
    out = torch.zeros(rewards.shape, dtype=torch.float64)
    for i in range(bsz):
        members = [j for j in range(bsz) if index[j] == index[i]]
        stats = [scores[j] for j in members if stats_from == "all" or not is_off[j]]
        if len(stats) < 2:
            mean, std = 0.0, 1.0
        elif len(set(stats)) == 1:
            mean, std = stats[0], 1.0  # zero spread: exact mean, std 1
        else:
            mean, std = statistics.mean(stats), statistics.stdev(stats)
        a = scores[i] - mean
        if norm:
            a = a / (std + epsilon)
        for t in range(rewards.shape[1]):
            out[i, t] = a * float(mask[i, t])
    return out


def _shape(kind_name, x, w, k, is_log):
    """Apply a reshape to a scalar tensor: x is a ratio (is_log False) or the log of one."""
    ratio = x.exp() if is_log else x
    log_ratio = x if is_log else x.log()
    if kind_name == "no_reshape":
        return ratio
    if kind_name == "logp":
        return w * log_ratio
    if kind_name == "p_logp":
        return ratio + w * log_ratio
    if kind_name == "square_root":
        return ratio.sqrt()
    if kind_name == "pow":
        return ratio**k
    raise AssertionError(kind_name)


def ref_loss(old, lp, adv, mask, off, cfg):
    """Token loop following the formulas of the docstring, gradient by autograd on float64 scalars."""
    bsz, length = lp.shape
    x_all = lp.detach().double().clone().requires_grad_(True)
    lo = 1 - cfg["cliprange"]
    hi = 1 + cfg["cliprange"]
    if cfg["clip_upper_bound"] is not None:
        hi = max(cfg["clip_upper_bound"], hi)
    on_terms, off_terms = [], []
    kept_rows: set[int] = set()
    m = dict(on_clip=0, kl=0.0, off_ratio=0.0, off_max=0, off_min=0, off_p=0.0, on_p=0.0)
    for b in range(bsz):
        for t in range(length):
            if float(mask[b, t]) == 0:
                continue
            x = x_all[b, t]
            o = float(old[b, t])
            a = float(adv[b, t])
            p = x.exp()
            if cfg["all_max_clip"] is not None and p.item() > cfg["all_max_clip"]:
                continue
            kept_rows.add(b)
            token_off = bool(off[b]) if off.dim() == 1 else bool(off[b, t])
            if token_off:
                q = p
                if cfg["target_probs"] is not None:
                    q = p / float(cfg["target_probs"][b, t])
                name = cfg["off_policy_reshape"]
                if name.startswith("p_div_p_"):
                    gamma = float(name[len("p_div_p_") :])
                    h = q / (q + gamma)
                else:
                    h = _shape(name, q, cfg["off_policy_reshape_weight"], cfg["off_policy_reshape_pow_exp"], False)
                if cfg["off_max_clip"] is not None:
                    m["off_max"] += int(h.item() > cfg["off_max_clip"])
                    h = torch.clamp(h, max=cfg["off_max_clip"])
                if cfg["off_min_clip"] is not None:
                    m["off_min"] += int(h.item() < cfg["off_min_clip"])
                    h = torch.clamp(h, min=cfg["off_min_clip"])
                m["off_ratio"] += h.item()
                m["off_p"] += math.exp(x.item())
                off_terms.append(-a * h)
            else:
                d = torch.clamp(x - o, -20.0, 20.0)
                name = cfg["on_policy_reshape"]
                if name.startswith("p_div_p_"):
                    gamma = float(name[len("p_div_p_") :])
                    p_old = math.exp(o)
                    g = (p / (p + gamma)) / (p_old / (p_old + gamma))
                elif name == "logp":
                    g = d  # the on-policy "logp" form carries no weight
                else:
                    g = _shape(name, d, cfg["on_policy_reshape_weight"], cfg["on_policy_reshape_pow_exp"], True)
                unclipped = -a * g
                if cfg["loss_remove_clip"]:
                    loss_t = unclipped
                else:
                    clipped = -a * torch.clamp(g, lo, hi)
                    m["on_clip"] += int(clipped.item() > unclipped.item())
                    loss_t = torch.maximum(unclipped, clipped)
                m["kl"] += -d.item()
                m["on_p"] += math.exp(o)
                on_terms.append(loss_t)
    n_on, n_off = len(on_terms), len(off_terms)
    total = sum(on_terms + off_terms, x_all.sum() * 0.0)
    info = cfg.get("global_batch_info") or {}
    dp = info.get("dp_size", 1)
    if cfg["loss_remove_token_mean"]:
        # sum / (responses of the mini-batch * constant length)
        rows = max(len(kept_rows), 1)
        n_seq = info.get("global_batch_size") or rows
        t_norm = info.get("loss_scale_factor") or length
        loss = total / (n_seq * t_norm) * dp
    else:
        # sum / tokens of the mini-batch; dropped tokens of this batch leave that count
        n_tok = info.get("batch_num_tokens")
        if n_tok is None:
            loss = total / max(n_on + n_off, 1) * dp
        else:
            loss = total / n_tok * dp
            if cfg["all_max_clip"] is not None and n_on + n_off > 0:
                loss = loss * float(mask.sum()) / (n_on + n_off)
    loss.backward()
    on_sum = sum(v.item() for v in on_terms)
    off_sum = sum(v.item() for v in off_terms)
    don, doff = max(n_on, 1), max(n_off, 1)
    metrics = {
        "pg_loss": loss.item(),
        "on_pg_loss": on_sum / don,
        "off_pg_loss": off_sum / doff,
        "on_pg_clipfrac": m["on_clip"] / don,
        "ppo_kl": m["kl"] / don,
        "off_ratio_mean": m["off_ratio"] / doff,
        "off_ratio_max_clip_frac": m["off_max"] / doff,
        "off_ratio_min_clip_frac": m["off_min"] / doff,
        "off_policy_prob": m["off_p"] / doff,
        "on_policy_prob": m["on_p"] / don,
        "on_token_count": float(n_on),
        "off_token_count": float(n_off),
    }
    return loss.item(), x_all.grad, metrics


DEFAULT_CFG = dict(
    cliprange=0.2,
    clip_upper_bound=None,
    off_policy_reshape="no_reshape",
    off_policy_reshape_weight=1.0,
    off_policy_reshape_pow_exp=0.5,
    on_policy_reshape="no_reshape",
    on_policy_reshape_weight=1.0,
    on_policy_reshape_pow_exp=0.5,
    off_max_clip=None,
    off_min_clip=None,
    all_max_clip=None,
    target_probs=None,
    loss_remove_token_mean=False,
    loss_remove_clip=False,
    global_batch_info=None,
)


def run_loss(old, lp, adv, mask, off, cfg, dtype=torch.float64):
    lp_t = lp.detach().to(dtype).clone().requires_grad_(True)
    kwargs = dict(cfg)
    if kwargs["target_probs"] is not None:
        kwargs["target_probs"] = kwargs["target_probs"].to(dtype)
    loss, metrics = compute_token_on_off_policy_loss(old.to(dtype), lp_t, adv.to(dtype), mask, off, **kwargs)
    loss.backward()
    return loss, lp_t.grad, metrics


# --------------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------------
@st.composite
def loss_case(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    bsz = draw(st.integers(1, 6))
    length = draw(st.integers(1, 8))
    lp = torch.from_numpy(-rng.exponential(1.0, (bsz, length)))
    old = (lp + torch.from_numpy(rng.normal(0.0, 0.3, (bsz, length)))).clamp(max=0.0)
    adv = torch.from_numpy(rng.normal(0.0, 1.0, (bsz, length)))
    mask = torch.from_numpy(rng.random((bsz, length)) < draw(st.sampled_from([0.0, 0.6, 1.0]))).float()
    if bsz > 1 and draw(st.booleans()):
        mask[0] = 0.0  # an empty row
    off_kind = draw(st.sampled_from(["per_sample", "per_token", "all_on", "all_off"]))
    if off_kind == "per_sample":
        off = torch.from_numpy(rng.random(bsz) < 0.5)
    elif off_kind == "per_token":
        off = torch.from_numpy(rng.random((bsz, length)) < 0.5)
    else:
        off = torch.full((bsz,), off_kind == "all_off", dtype=torch.bool)
    cfg = dict(DEFAULT_CFG)
    cfg.update(
        cliprange=draw(st.sampled_from([0.1, 0.2, 0.3])),
        clip_upper_bound=draw(st.sampled_from([None, 1.0, 2.0])),
        off_policy_reshape=draw(st.sampled_from(RESHAPES)),
        off_policy_reshape_weight=draw(st.sampled_from([1.0, 0.3])),
        off_policy_reshape_pow_exp=draw(st.sampled_from([0.5, 0.2, 2.0])),
        on_policy_reshape=draw(st.sampled_from(RESHAPES)),
        on_policy_reshape_weight=draw(st.sampled_from([1.0, 0.3])),
        on_policy_reshape_pow_exp=draw(st.sampled_from([0.5, 2.0])),
        off_max_clip=draw(st.sampled_from([None, 0.5, 2.0])),
        off_min_clip=draw(st.sampled_from([None, 0.1])),
        all_max_clip=draw(st.sampled_from([None, 0.6])),
        loss_remove_token_mean=draw(st.booleans()),
        loss_remove_clip=draw(st.booleans()),
    )
    if draw(st.booleans()):
        cfg["target_probs"] = torch.from_numpy(rng.uniform(0.05, 1.0, (bsz, length)))
    if draw(st.booleans()):  # a micro-batch of a larger mini-batch, possibly data-parallel
        cfg["global_batch_info"] = dict(
            dp_size=draw(st.sampled_from([1, 2])),
            batch_num_tokens=int(mask.sum()) + draw(st.integers(1, 30)),
            global_batch_size=bsz + draw(st.integers(0, 5)),
            loss_scale_factor=draw(st.sampled_from([None, 16])),
        )
    return old, lp, adv, mask, off, cfg


# --------------------------------------------------------------------------------------------------
# Advantage
# --------------------------------------------------------------------------------------------------
@HYP
@given(
    seed=st.integers(0, 2**32 - 1),
    bsz=st.integers(1, 12),
    length=st.integers(1, 6),
    n_groups=st.integers(1, 5),
    off_kind=st.sampled_from(["none", "per_sample", "per_token"]),
    stats_from=st.sampled_from(["all", "on_policy"]),
    norm=st.booleans(),
    str_index=st.booleans(),
    binary=st.booleans(),
)
def test_advantage_matches_loop(seed, bsz, length, n_groups, off_kind, stats_from, norm, str_index, binary):
    rng = np.random.default_rng(seed)
    if binary:
        rewards = torch.zeros(bsz, length, dtype=torch.float64)
        # two-valued outcome scores (0/1, or values whose group mean is inexact in binary)
        values = np.array([0.0, 1.0] if seed % 2 else [0.1, 0.7])
        rewards[:, -1] = torch.from_numpy(values[(rng.random(bsz) < 0.5).astype(np.int64)])
    else:
        rewards = torch.from_numpy(rng.normal(0, 1, (bsz, length)))
    mask = torch.from_numpy(rng.random((bsz, length)) < 0.8).float()
    groups = rng.integers(0, n_groups, bsz)
    index = np.array([f"uid-{g}" for g in groups], dtype=object) if str_index else groups
    off = None
    if off_kind == "per_sample":
        off = torch.from_numpy(rng.random(bsz) < 0.4)
    elif off_kind == "per_token":
        off = torch.from_numpy(rng.random((bsz, length)) < 0.2)
    adv, ret = compute_grpo_outcome_advantage_split(
        rewards, mask, index, off, epsilon=1e-6, norm_adv_by_std=norm, stats_from=stats_from
    )
    expected = ref_advantage(rewards, mask, index, off, 1e-6, norm, stats_from)
    torch.testing.assert_close(adv, expected, rtol=1e-9, atol=1e-9)
    assert torch.equal(adv, ret)


def test_advantage_hand_case():
    # one group, rewards [1, 0, 0] on-policy and 1 off-policy.
    # stats_from="all": mean 0.5, unbiased std sqrt((4 * 0.25) / 3) = sqrt(1/3) = 0.57735
    #   -> advantages +-0.5 / 0.57735 = +-0.866025
    # stats_from="on_policy": stats over [1, 0, 0]: mean 1/3, std sqrt((4/9 + 1/9 + 1/9) / 2) = sqrt(1/3)
    #   -> 1: (2/3) / 0.57735 = 1.154701; 0: -(1/3) / 0.57735 = -0.577350; off-policy 1: 1.154701
    rewards = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    index = np.array(["q", "q", "q", "q"], dtype=object)
    off = torch.tensor([False, False, False, True])
    adv, _ = compute_grpo_outcome_advantage_split(rewards, mask, index, off, epsilon=0.0)
    s = 0.5 / math.sqrt(1 / 3)
    expected = torch.tensor([[s, s], [-s, -s], [-s, 0.0], [s, s]])
    torch.testing.assert_close(adv, expected)
    adv, _ = compute_grpo_outcome_advantage_split(rewards, mask, index, off, epsilon=0.0, stats_from="on_policy")
    hi, lo = (2 / 3) / math.sqrt(1 / 3), -(1 / 3) / math.sqrt(1 / 3)
    expected = torch.tensor([[hi, hi], [lo, lo], [lo, 0.0], [hi, hi]])
    torch.testing.assert_close(adv, expected)
    # Dr. GRPO (no std): 1 - 0.5 = 0.5, 0 - 0.5 = -0.5
    adv, _ = compute_grpo_outcome_advantage_split(rewards, mask, index, off, norm_adv_by_std=False)
    torch.testing.assert_close(adv[:, 0], torch.tensor([0.5, -0.5, -0.5, 0.5]))


def test_advantage_degenerate_groups():
    # group "a": single sample -> mean 0, std 1 -> A = 3 / (1 + 1e-6)
    # group "b": zero variance -> A = 0, finite
    # group "c": on_policy stats from nobody (all off-policy) -> mean 0, std 1 -> A = score / (1 + eps)
    # group "d": on-policy scores [0.1, 0.1, 0.1] (mean not exact in binary), off-policy 1.0:
    #   mean 0.1 exactly, std 1 -> on-policy 0, off-policy 0.9 / (1 + eps) (not 0.9 / eps)
    rewards = torch.tensor([[3.0], [1.0], [1.0], [2.0], [5.0], [0.1], [0.1], [0.1], [1.0]], dtype=torch.float64)
    mask = torch.ones(9, 1)
    index = np.array(["a", "b", "b", "c", "c", "d", "d", "d", "d"], dtype=object)
    off = torch.tensor([False, False, False, True, True, False, False, False, True])
    adv, _ = compute_grpo_outcome_advantage_split(rewards, mask, index, off, stats_from="on_policy")
    assert torch.isfinite(adv).all()
    expected = torch.tensor([3.0, 0.0, 0.0, 2.0, 5.0, 0.0, 0.0, 0.0, 0.9], dtype=torch.float64) / (1 + 1e-6)
    torch.testing.assert_close(adv[:, 0], expected, rtol=1e-12, atol=1e-12)


def test_advantage_index_types_agree():
    rng = np.random.default_rng(0)
    rewards = torch.from_numpy(rng.normal(size=(10, 3))).float()
    mask = torch.ones(10, 3)
    groups = rng.integers(0, 3, 10)
    a1, _ = compute_grpo_outcome_advantage_split(rewards, mask, groups)
    a2, _ = compute_grpo_outcome_advantage_split(rewards, mask, np.array([str(g) for g in groups], dtype=object))
    a3, _ = compute_grpo_outcome_advantage_split(rewards, mask, torch.from_numpy(groups))
    a4, _ = compute_grpo_outcome_advantage_split(rewards, mask, groups.tolist())
    # labels numpy cannot sort (mixed int / str) still group by equality
    mixed = np.array([("x" if g == 0 else int(g)) for g in groups], dtype=object)
    a5, _ = compute_grpo_outcome_advantage_split(rewards, mask, mixed)
    for other in (a2, a3, a4, a5):
        torch.testing.assert_close(a1, other)
    assert a1.dtype == torch.float32


@pytest.mark.parametrize("norm", [True, False])
def test_advantage_matches_verl_grpo(norm):
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    rng = np.random.default_rng(1)
    bsz, length = 32, 7
    rewards = torch.zeros(bsz, length)
    rewards[torch.arange(bsz), torch.from_numpy(rng.integers(0, length, bsz))] = torch.from_numpy(
        rng.integers(0, 2, bsz).astype(np.float32)
    )
    mask = torch.from_numpy(rng.random((bsz, length)) < 0.9).float()
    index = np.array([f"u{g}" for g in rng.integers(0, 9, bsz)], dtype=object)
    expected, _ = compute_grpo_outcome_advantage(rewards, mask, index, norm_adv_by_std_in_grpo=norm)
    got, _ = compute_grpo_outcome_advantage_split(
        rewards, mask, index, torch.zeros(bsz, dtype=torch.bool), norm_adv_by_std=norm, stats_from="all"
    )
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    got_none, _ = compute_grpo_outcome_advantage_split(rewards, mask, index, norm_adv_by_std=norm)
    torch.testing.assert_close(got_none, expected, rtol=1e-6, atol=1e-6)


def test_advantage_validation():
    r = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="stats_from"):
        compute_grpo_outcome_advantage_split(r, torch.ones(3, 2), np.arange(3), stats_from="off")
    with pytest.raises(ValueError, match="response_mask"):
        compute_grpo_outcome_advantage_split(r, torch.ones(3, 3), np.arange(3))
    with pytest.raises(ValueError, match="index"):
        compute_grpo_outcome_advantage_split(r, torch.ones(3, 2), np.arange(4))
    with pytest.raises(ValueError, match="off_policy_mask"):
        compute_grpo_outcome_advantage_split(
            r, torch.ones(3, 2), np.arange(3), torch.zeros(3, 5).bool(), stats_from="on_policy"
        )


# --------------------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------------------
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=loss_case())
def test_loss_matches_loop(case):
    old, lp, adv, mask, off, cfg = case
    exp_loss, exp_grad, exp_metrics = ref_loss(old, lp, adv, mask, off, cfg)
    loss, grad, metrics = run_loss(old, lp, adv, mask, off, cfg)
    assert math.isclose(loss.item(), exp_loss, rel_tol=1e-9, abs_tol=1e-9)
    torch.testing.assert_close(grad, exp_grad, rtol=1e-8, atol=1e-10)
    assert set(metrics) == set(LOSS_METRIC_KEYS)
    for key, value in exp_metrics.items():
        assert math.isclose(float(metrics[key]), value, rel_tol=1e-8, abs_tol=1e-9), key
    # float32 inputs agree with the float64 reference to float32 precision
    loss32, grad32, _ = run_loss(old, lp, adv, mask, off, cfg, dtype=torch.float32)
    assert loss32.dtype == torch.float32 and grad32.dtype == torch.float32
    assert math.isclose(loss32.item(), exp_loss, rel_tol=1e-4, abs_tol=1e-4)
    torch.testing.assert_close(grad32.double(), exp_grad, rtol=1e-4, atol=1e-5)


def _single(lp_values, old_values, adv_values, off_values, **kw):
    lp = torch.tensor([lp_values], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([old_values], dtype=torch.float64)
    adv = torch.tensor([adv_values], dtype=torch.float64)
    off = torch.tensor([off_values], dtype=torch.bool)
    loss, metrics = compute_token_on_off_policy_loss(old, lp, adv, torch.ones_like(old), off, **kw)
    loss.backward()
    return loss.item(), lp.grad[0].tolist(), metrics


def test_loss_hand_policy_shaping():
    # off-policy token, p = 0.1, G = 0.1: f = 0.1 / 0.2 = 0.5; f'(p) = G / (p + G)^2 = 2.5,
    # df/dlog p = f'(p) p = 0.25. With A = 2 and a single token: loss = -A f = -1, grad = -A 0.25 = -0.5.
    loss, grad, m = _single([math.log(0.1)], [0.0], [2.0], [True], off_policy_reshape="p_div_p_0.1")
    assert math.isclose(loss, -1.0, rel_tol=1e-12)
    assert math.isclose(grad[0], -0.5, rel_tol=1e-12)
    assert math.isclose(float(m["off_ratio_mean"]), 0.5) and math.isclose(float(m["off_policy_prob"]), 0.1)
    # add an on-policy token with ratio 1 and A = 2: normaliser 2, so the off-policy gradient is
    # -A f'(p) p / 2 = -0.25 and the on-policy one -A r / 2 = -1; loss = (-1 - 2) / 2 = -1.5
    loss, grad, m = _single(
        [math.log(0.1), math.log(0.4)],
        [0.0, math.log(0.4)],
        [2.0, 2.0],
        [True, False],
        off_policy_reshape="p_div_p_0.1",
    )
    assert math.isclose(loss, -1.5, rel_tol=1e-12)
    assert math.isclose(grad[0], -0.25, rel_tol=1e-12) and math.isclose(grad[1], -1.0, rel_tol=1e-12)
    assert float(m["on_token_count"]) == 1.0 and float(m["off_token_count"]) == 1.0
    # plain off-policy ratio (no shaping): f = p = 0.1, df/dlog p = p = 0.1 -> grad = -2 * 0.1 = -0.2
    loss, grad, _ = _single([math.log(0.1)], [0.0], [2.0], [True])
    assert math.isclose(loss, -0.2, rel_tol=1e-12) and math.isclose(grad[0], -0.2, rel_tol=1e-12)


def test_loss_hand_ppo_clip():
    # on-policy: p_old = 0.5, p = 0.7 -> r = 1.4 > 1.2.
    # A = +1: max(-1.4, -1.2) = -1.2 (clipped), gradient 0.
    loss, grad, m = _single([math.log(0.7)], [math.log(0.5)], [1.0], [False])
    assert math.isclose(loss, -1.2, rel_tol=1e-12) and grad[0] == 0.0
    assert float(m["on_pg_clipfrac"]) == 1.0
    assert math.isclose(float(m["ppo_kl"]), math.log(0.5) - math.log(0.7), rel_tol=1e-12)
    # A = -1: max(1.4, 1.2) = 1.4 (unclipped), d/dlog p (-A r) = r = 1.4
    loss, grad, m = _single([math.log(0.7)], [math.log(0.5)], [-1.0], [False])
    assert math.isclose(loss, 1.4, rel_tol=1e-12) and math.isclose(grad[0], 1.4, rel_tol=1e-12)
    assert float(m["on_pg_clipfrac"]) == 0.0
    # clip_upper_bound 1.5 widens the upper bound: A = +1 -> -1.4, grad -1.4
    loss, grad, _ = _single([math.log(0.7)], [math.log(0.5)], [1.0], [False], clip_upper_bound=1.5)
    assert math.isclose(loss, -1.4, rel_tol=1e-12) and math.isclose(grad[0], -1.4, rel_tol=1e-12)
    # loss_remove_clip: -A r = -1.4
    loss, _, _ = _single([math.log(0.7)], [math.log(0.5)], [1.0], [False], loss_remove_clip=True)
    assert math.isclose(loss, -1.4, rel_tol=1e-12)


def test_loss_hand_aggregation_and_all_max_clip():
    # two rows of 3 columns, 4 valid tokens, all off-policy with p = 0.5 and A = 1: each L = -0.5.
    lp = torch.full((2, 3), math.log(0.5), dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    adv = torch.ones(2, 3, dtype=torch.float64)
    off = torch.ones(2, dtype=torch.bool)
    # token mean: 4 * -0.5 / 4 = -0.5 ; remove token mean: 4 * -0.5 / (2 rows * T(=3)) = -1/3
    loss, _ = compute_token_on_off_policy_loss(lp, lp, adv, mask, off)
    assert math.isclose(loss.item(), -0.5)
    loss, _ = compute_token_on_off_policy_loss(lp, lp, adv, mask, off, loss_remove_token_mean=True)
    assert math.isclose(loss.item(), -1 / 3)
    # with the mini-batch's figures: / (5 responses * 8 columns), and / 10 tokens
    info = dict(dp_size=1, global_batch_size=5, loss_scale_factor=8, batch_num_tokens=10)
    loss, _ = compute_token_on_off_policy_loss(
        lp, lp, adv, mask, off, loss_remove_token_mean=True, global_batch_info=info
    )
    assert math.isclose(loss.item(), -2 / 40)
    loss, _ = compute_token_on_off_policy_loss(lp, lp, adv, mask, off, global_batch_info=info)
    assert math.isclose(loss.item(), -2 / 10)
    # all_max_clip 0.4 < p = 0.5 everywhere: every token leaves -> loss 0, counts 0
    loss, m = compute_token_on_off_policy_loss(lp, lp, adv, mask, off, all_max_clip=0.4)
    assert loss.item() == 0.0 and float(m["off_token_count"]) == 0.0
    # off_max_clip 0.3: h = min(0.5, 0.3) = 0.3 -> loss -0.3, every token max-clipped
    loss, m = compute_token_on_off_policy_loss(lp, lp, adv, mask, off, off_max_clip=0.3)
    assert math.isclose(loss.item(), -0.3) and float(m["off_ratio_max_clip_frac"]) == 1.0


def test_remove_token_mean_minimal_case_gives_the_originals_value():
    # configured length 4; two one-response micro-batches of widths 2 and 4; on-policy, A = 1, ratio 1,
    # no clip: every token L = -1. LUFFY's definition: (-2 - 4) / (4 * 2 responses) = -0.75, whatever
    # the widths (the width-normalised sum would give -2/2/2 - 4/4/2 = -1.0).
    info = dict(dp_size=1, global_batch_size=2, loss_scale_factor=4)
    total = 0.0
    for width in (2, 4):
        zeros = torch.zeros(1, width, dtype=torch.float64)
        loss, _ = compute_token_on_off_policy_loss(
            zeros,
            zeros,
            torch.ones_like(zeros),
            torch.ones(1, width),
            torch.zeros(1, dtype=torch.bool),
            loss_remove_token_mean=True,
            loss_remove_clip=True,
            global_batch_info=info,
        )
        total += loss.item()
    assert math.isclose(total, -0.75)


def test_all_max_clip_dropped_token_leaves_the_global_denominator():
    # B = 1, T = 2, on-policy, A = 1, log p = log p_old = [log 0.5, log 0.95], all_max_clip 0.9,
    # batch_num_tokens 2: the 0.95 token leaves numerator and denominator -> -1 / 1 = -1.0
    lp = torch.log(torch.tensor([[0.5, 0.95]], dtype=torch.float64)).requires_grad_(True)
    loss, m = compute_token_on_off_policy_loss(
        lp.detach(),
        lp,
        torch.ones(1, 2, dtype=torch.float64),
        torch.ones(1, 2),
        torch.zeros(1, dtype=torch.bool),
        all_max_clip=0.9,
        global_batch_info=dict(dp_size=1, batch_num_tokens=2),
    )
    assert math.isclose(loss.item(), -1.0) and float(m["on_token_count"]) == 1.0
    loss.backward()
    assert lp.grad.tolist() == [[-1.0, 0.0]]


@pytest.mark.parametrize("off_kind", ["all_on", "all_off", "empty"])
def test_loss_extreme_masks_no_nan(off_kind):
    bsz, length = 3, 4
    lp = torch.randn(bsz, length).clamp(max=0).requires_grad_()
    old = torch.randn(bsz, length).clamp(max=0)
    adv = torch.randn(bsz, length)
    mask = torch.zeros(bsz, length) if off_kind == "empty" else torch.ones(bsz, length)
    off = torch.full((bsz,), off_kind == "all_off")
    loss, m = compute_token_on_off_policy_loss(old, lp, adv, mask, off, off_policy_reshape="p_div_p_0.1")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(lp.grad).all()
    assert all(math.isfinite(float(v)) for v in m.values())
    if off_kind == "all_on":
        assert float(m["off_pg_loss"]) == 0.0 and float(m["off_policy_prob"]) == 0.0
    if off_kind == "all_off":
        assert float(m["on_pg_loss"]) == 0.0 and float(m["on_pg_clipfrac"]) == 0.0
    if off_kind == "empty":
        assert loss.item() == 0.0 and (lp.grad == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reshape", RESHAPES)
def test_loss_finite_for_tiny_log_probs(dtype, reshape):
    # log-probs down to -1e4 (exp underflows to 0) and zero-variance advantages stay finite
    gen = torch.Generator().manual_seed(0)
    lp = (-torch.rand(4, 6, generator=gen) * 1e4).to(dtype).requires_grad_()
    old = (-torch.rand(4, 6, generator=gen) * 1e4).to(dtype)
    rewards = torch.ones(4, 6)
    adv, _ = compute_grpo_outcome_advantage_split(rewards, torch.ones(4, 6), np.array(["a"] * 4, dtype=object))
    assert torch.isfinite(adv).all() and (adv == 0).all()
    adv = torch.randn(4, 6, generator=gen).to(dtype)
    off = torch.tensor([[i % 2 == 0] * 6 for i in range(4)])
    for extra in ({}, {"target_probs": torch.rand(4, 6, generator=gen).to(dtype)}, {"loss_remove_clip": True}):
        loss, m = compute_token_on_off_policy_loss(
            old,
            lp,
            adv,
            torch.ones(4, 6),
            off,
            off_policy_reshape=reshape,
            on_policy_reshape=reshape,
            all_max_clip=0.9,
            off_max_clip=5.0,
            off_min_clip=-5.0,
            **extra,
        )
        (grad,) = torch.autograd.grad(loss, lp)
        assert torch.isfinite(loss) and torch.isfinite(grad.float()).all(), extra
        assert all(math.isfinite(float(v)) for v in m.values()), extra


def test_loss_bfloat16_matches_float32():
    gen = torch.Generator().manual_seed(3)
    lp = (-torch.rand(5, 7, generator=gen) * 3).to(torch.bfloat16)
    old = (-torch.rand(5, 7, generator=gen) * 3).to(torch.bfloat16)
    adv = torch.randn(5, 7, generator=gen).to(torch.bfloat16)
    mask = (torch.rand(5, 7, generator=gen) < 0.8).float()
    off = torch.rand(5, 7, generator=gen) < 0.5
    lp16 = lp.clone().requires_grad_()
    lp32 = lp.float().requires_grad_()
    kw = dict(off_policy_reshape="p_div_p_0.1")
    loss16, _ = compute_token_on_off_policy_loss(old, lp16, adv, mask, off, **kw)
    loss32, _ = compute_token_on_off_policy_loss(old.float(), lp32, adv.float(), mask, off, **kw)
    loss16.backward()
    loss32.backward()
    assert loss16.dtype == torch.float32 and lp16.grad.dtype == torch.bfloat16
    torch.testing.assert_close(loss16, loss32)
    torch.testing.assert_close(lp16.grad.float(), lp32.grad, rtol=1e-2, atol=1e-4)


def test_gradient_flows_to_log_prob_only():
    lp = (-torch.rand(3, 4)).requires_grad_()
    old = (-torch.rand(3, 4)).requires_grad_()
    adv = torch.randn(3, 4).requires_grad_()
    off = torch.tensor([True, False, False])
    loss, metrics = compute_token_on_off_policy_loss(old, lp, adv, torch.ones(3, 4), off)
    loss.backward()
    assert lp.grad is not None and lp.grad.abs().sum() > 0
    assert old.grad is None and adv.grad is None
    assert all(not v.requires_grad for v in metrics.values())
    # no graph when log_prob needs no gradient
    loss, _ = compute_token_on_off_policy_loss(old.detach(), lp.detach(), adv.detach(), torch.ones(3, 4), off)
    assert not loss.requires_grad


@pytest.mark.parametrize("clip_upper_bound", [None, 1.5])
def test_on_policy_loss_matches_verl_vanilla(clip_upper_bound):
    from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla
    from verl.workers.config import ActorConfig

    gen = torch.Generator().manual_seed(7)
    bsz, length = 16, 12
    old = -torch.rand(bsz, length, generator=gen) * 3
    lp_base = old + torch.randn(bsz, length, generator=gen) * 0.3
    adv = torch.randn(bsz, length, generator=gen)
    mask = (torch.rand(bsz, length, generator=gen) < 0.85).float()
    high = 0.2 if clip_upper_bound is None else clip_upper_bound - 1.0
    # clip_ratio_c very large switches veRL's dual clip off (LUFFY's loss has none)
    config = ActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio=0.2,
        clip_ratio_low=0.2,
        clip_ratio_high=high,
        clip_ratio_c=1e9,
    )
    lp_a = lp_base.clone().requires_grad_()
    ref, ref_metrics = compute_policy_loss_vanilla(old, lp_a, adv, mask, "token-mean", config)
    ref.backward()
    lp_b = lp_base.clone().requires_grad_()
    got, metrics = compute_token_on_off_policy_loss(
        old, lp_b, adv, mask, torch.zeros(bsz, dtype=torch.bool), cliprange=0.2, clip_upper_bound=clip_upper_bound
    )
    got.backward()
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(lp_b.grad, lp_a.grad, rtol=1e-6, atol=1e-8)
    assert math.isclose(float(metrics["ppo_kl"]), ref_metrics["actor/ppo_kl"], rel_tol=1e-5, abs_tol=1e-7)
    assert math.isclose(float(metrics["on_pg_clipfrac"]), ref_metrics["actor/pg_clipfrac"], rel_tol=1e-5)


def test_reshape_validation():
    assert Reshape.parse("p_div_p_0.1") == Reshape("p_div_p", 0.1, 1.0, 0.5)
    assert Reshape.parse("pow", weight=0.3, pow_exp=2) == Reshape("pow", None, 0.3, 2.0)
    assert "no_reshape" in ACCEPTED_RESHAPES
    for bad in ("sqrt", "p_div_p_", "p_div_p_-1", "p_div_p_abc", "p_div_p_inf", "", None):
        with pytest.raises(ValueError, match="p_div_p_<gamma>"):
            Reshape.parse(bad)
    with pytest.raises(ValueError, match="pow_exp=nan"):
        Reshape.parse("pow", pow_exp=float("nan"))
    x = torch.zeros(1, 2)
    g = torch.Generator().manual_seed(3)
    lp, old, adv = -torch.rand(3, 4, generator=g), -torch.rand(3, 4, generator=g), torch.randn(3, 4, generator=g)
    off = torch.tensor([True, False, False])
    by_name = compute_token_on_off_policy_loss(
        old, lp, adv, torch.ones(3, 4), off, off_policy_reshape="p_logp", off_policy_reshape_weight=0.3,
        on_policy_reshape="pow", on_policy_reshape_pow_exp=2.0,
    )
    by_object = compute_token_on_off_policy_loss(
        old, lp, adv, torch.ones(3, 4), off, off_policy_reshape=Reshape.parse("p_logp", weight=0.3),
        on_policy_reshape=Reshape.parse("pow", pow_exp=2.0),
    )
    torch.testing.assert_close(by_object[0], by_name[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="off_policy_reshape: a parsed Reshape carries its own weight"):
        compute_token_on_off_policy_loss(
            x, x, x, x, x.bool(), off_policy_reshape=Reshape("logp"), off_policy_reshape_weight=0.1
        )
    with pytest.raises(ValueError, match="on_policy_reshape: .*accepted"):
        compute_token_on_off_policy_loss(x, x, x, x, x.bool(), on_policy_reshape="bogus")
    with pytest.raises(ValueError, match="advantages"):
        compute_token_on_off_policy_loss(x, x, torch.zeros(2, 2), x, x.bool())
    with pytest.raises(ValueError, match="off_policy_mask"):
        compute_token_on_off_policy_loss(x, x, x, x, torch.zeros(3, dtype=torch.bool))
