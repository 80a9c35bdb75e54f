"""LUFFY's successors' pieces (luffy/mix_src/guidance.py, the token weights of reshape.py, the weighted SFT
term, the off-policy token weight, the annealed hint): each against a plain loop on random inputs and a
hand-computed case."""

from __future__ import annotations

import math
import random

import pytest
import torch

from luffy.mix_src.core_algos import compute_token_on_off_policy_loss
from luffy.mix_src.guidance import gate_metrics, gated_grpo_advantage, guidance_gate, sft_coef
from luffy.mix_src.prefix import prefix_ratio
from luffy.mix_src.reshape import TOKEN_WEIGHTS, token_weight
from luffy.mix_src.sft_loss import sft_nll_loss

# ---------------------------------------------------------------- the gate


def _random_batch(seed: int, groups: int = 5, n: int = 6):
    rng = random.Random(seed)
    index, off, scores = [], [], []
    for g in range(groups):
        n_off = rng.randint(0, 2)
        for j in range(n):
            index.append(f"uid-{g}")
            off.append(j < n_off)
            scores.append(float(rng.random() < 0.4))
    perm = list(range(len(index)))
    rng.shuffle(perm)  # groups need not be contiguous
    return ([index[i] for i in perm], torch.tensor([off[i] for i in perm]), torch.tensor([scores[i] for i in perm]))


def _reference_gate(index, off, scores, gate, threshold, k, trace_in_stats, gated_in_stats):
    """Per sample: (kept, in statistics), by looping over each sample's group."""
    keep, stats = [], []
    for i in range(len(index)):
        members = [j for j in range(len(index)) if index[j] == index[i] and not off[j]]
        succ = sum(1 for j in members if scores[j] > 0)
        if gate == "none":
            guided = True
        elif gate == "accuracy":
            guided = len(members) == 0 or succ / len(members) < threshold
        else:
            guided = succ <= k
        if not off[i]:
            keep.append(True)
            stats.append(True)
        else:
            keep.append(guided)
            stats.append(trace_in_stats if guided else gated_in_stats)
    return keep, stats


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("gate", ["none", "accuracy", "successes"])
def test_gate_matches_a_group_loop(seed, gate):
    index, off, scores = _random_batch(seed)
    for threshold, k, in_stats, gated_in_stats in ((0.5, 0, True, False), (0.25, 1, False, True)):
        got = guidance_gate(scores, index, off, gate, threshold, k, in_stats, gated_in_stats)
        keep, stats = _reference_gate(index, off.tolist(), scores.tolist(), gate, threshold, k, in_stats,
                                      gated_in_stats)
        assert got.keep.tolist() == keep
        assert got.stats.tolist() == stats


def _reference_advantages(index, scores, stats, keep, eps=1e-6):
    """GRPO with std over each group's statistics members (veRL's degenerate-group rules), 0 if dropped."""
    out = []
    for i in range(len(index)):
        members = [float(scores[j]) for j in range(len(index)) if index[j] == index[i] and stats[j]]
        if len(members) < 2:
            mean, std = 0.0, 1.0
        elif max(members) == min(members):
            mean, std = members[0], 1.0
        else:
            mean = sum(members) / len(members)
            std = math.sqrt(sum((x - mean) ** 2 for x in members) / (len(members) - 1))
        out.append((float(scores[i]) - mean) / (std + eps) if keep[i] else 0.0)
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("gate", ["accuracy", "successes"])
def test_gated_advantage_matches_a_loop(seed, gate):
    index, off, scores = _random_batch(seed)
    width = 5
    mask = torch.ones(len(index), width)
    mask[::3, 3:] = 0
    rewards = torch.zeros(len(index), width)
    rewards[:, 0] = scores
    settings = {"gate": gate, "accuracy_threshold": 0.5, "max_successes": 1, "trace_in_stats": True,
                "gated_trace_in_stats": False}
    adv, keep, metrics = gated_grpo_advantage(rewards, mask, index, off, settings)
    ref_keep, ref_stats = _reference_gate(index, off.tolist(), scores.tolist(), gate, 0.5, 1, True, False)
    expected = _reference_advantages(index, scores.tolist(), ref_stats, ref_keep)
    assert keep.tolist() == ref_keep
    for i in range(len(index)):
        assert adv[i].tolist() == pytest.approx([expected[i] * float(m) for m in mask[i]], abs=1e-5)
    groups_with_trace = {index[i] for i in range(len(index)) if off[i]}
    if groups_with_trace:
        guided = {index[i] for i in range(len(index)) if off[i] and ref_keep[i]}
        assert metrics["luffy/guided_group_frac"] == pytest.approx(len(guided) / len(groups_with_trace))


def test_gate_hand_computed():
    # group a: trace + 4 samples, 1 success (acc 0.25); group b: trace + 4 samples, 3 successes (acc 0.75)
    index = ["a"] * 5 + ["b"] * 5
    off = torch.tensor([True, False, False, False, False] * 2)
    scores = torch.tensor([1.0, 1, 0, 0, 0, 1, 1, 1, 1, 0])
    rewards, mask = scores.unsqueeze(1), torch.ones(10, 1)
    # HPT, threshold 0.5: a guided (trace kept, in stats under grpo), b plain GRPO without its trace
    settings = {"gate": "accuracy", "accuracy_threshold": 0.5, "max_successes": 0, "trace_in_stats": True,
                "gated_trace_in_stats": False}
    adv, keep, metrics = gated_grpo_advantage(rewards, mask, index, off, settings, norm_adv_by_std=False)
    assert keep.tolist() == [True] * 5 + [False] + [True] * 4
    # a: mean over all 5 = 2/5; b: mean over its 4 samples = 3/4, trace dropped (advantage 0)
    assert adv[:, 0].tolist() == pytest.approx([0.6, 0.6, -0.4, -0.4, -0.4, 0.0, 0.25, 0.25, 0.25, -0.75])
    assert metrics == {"luffy/guided_group_frac": 0.5, "luffy/trace_kept_frac": 0.5}
    # BREAD, k = 0: neither group fails entirely, so both train as plain GRPO
    settings.update(gate="successes", max_successes=0)
    adv, keep, metrics = gated_grpo_advantage(rewards, mask, index, off, settings, norm_adv_by_std=False)
    assert keep.tolist() == [False, True, True, True, True] * 2
    assert adv[:, 0].tolist() == pytest.approx([0.0, 0.75, -0.25, -0.25, -0.25, 0.0, 0.25, 0.25, 0.25, -0.75])
    assert metrics["luffy/guided_group_frac"] == 0.0
    # a dropped trace may still count in the statistics: a's mean becomes 2/5
    settings.update(gated_trace_in_stats=True)
    adv, _, _ = gated_grpo_advantage(rewards, mask, index, off, settings, norm_adv_by_std=False)
    assert adv[1, 0].item() == pytest.approx(0.6) and adv[0, 0].item() == 0.0


def test_padding_samples_are_no_evidence_for_the_gate():
    # group a: a trace, one success and a veRL padding sample (reward 0) copied from a's first sample
    index, scores = ["a"] * 4, torch.tensor([1.0, 1.0, 0.0, 0.0])
    off = torch.tensor([True, False, False, False])
    valid = torch.tensor([True, True, True, False])
    # accuracy 1/2 over the two real samples: not guided at threshold 0.5; 1/3 with the padding: guided
    assert guidance_gate(scores, index, off, "accuracy", 0.5, valid=valid).guided.tolist() == [False]
    assert guidance_gate(scores, index, off, "accuracy", 0.5).guided.tolist() == [True]
    decision = guidance_gate(scores, index, torch.tensor([True, False, False, True]), "none", valid=valid)
    assert gate_metrics(decision, torch.tensor([True, False, False, True]), valid)["luffy/trace_kept_frac"] == 1.0


def test_gate_rejects_unknown_names_and_shapes():
    with pytest.raises(ValueError, match="accuracy"):
        guidance_gate(torch.zeros(2), [0, 0], torch.zeros(2, dtype=torch.bool), "hpt")
    with pytest.raises(ValueError, match="off_samples"):
        guidance_gate(torch.zeros(2), [0, 0], torch.zeros(3, dtype=torch.bool), "none")


# ---------------------------------------------------------------- the SFT coefficient schedule


def test_sft_coef_schedule_hand_computed():
    assert sft_coef("constant", 0.7, 0.5) == 0.5
    # warm-up over the first 20 %: 0 -> peak 1.0, then half cosine to the valley 0.2
    assert sft_coef("warmup_cosine", 0.0, 1.0, 0.2, 0.2) == 0.0
    assert sft_coef("warmup_cosine", 0.1, 1.0, 0.2, 0.2) == pytest.approx(0.5)
    assert sft_coef("warmup_cosine", 0.2, 1.0, 0.2, 0.2) == pytest.approx(1.0)
    assert sft_coef("warmup_cosine", 0.6, 1.0, 0.2, 0.2) == pytest.approx(0.6)  # half-way: (1 + 0.2) / 2
    assert sft_coef("warmup_cosine", 1.0, 1.0, 0.2, 0.2) == pytest.approx(0.2)
    assert sft_coef("warmup_cosine", 0.0, 0.9, 0.05, 0.0) == pytest.approx(0.9)  # no warm-up: starts at the peak
    with pytest.raises(ValueError, match="warmup_cosine"):
        sft_coef("cosine", 0.5, 1.0)


# ---------------------------------------------------------------- token weights


def _rand_logp(seed: int, shape=(4, 7)):
    g = torch.Generator().manual_seed(seed)
    return -(torch.rand(shape, generator=g, dtype=torch.float64) * 3.0)


def _reference_weight(name: str, p: float) -> float:
    return {"none": 1.0, "p": p, "p_one_minus_p": p * (1.0 - p)}[name]


@pytest.mark.parametrize("name", TOKEN_WEIGHTS)
@pytest.mark.parametrize("seed", range(3))
def test_weighted_sft_loss_and_gradient_match_a_token_loop(name, seed):
    lp = _rand_logp(seed).requires_grad_(True)
    g = torch.Generator().manual_seed(100 + seed)
    target = torch.rand(lp.shape, generator=g) < 0.6
    n_tokens = int(target.sum()) + 3  # the mini-batch holds more targets than this micro-batch
    loss = sft_nll_loss(lp, target, n_tokens, token_weight=name)
    loss.backward()
    ref_loss, ref_grad = 0.0, torch.zeros_like(lp)
    for b in range(lp.shape[0]):
        for t in range(lp.shape[1]):
            if target[b, t]:
                p = math.exp(float(lp.detach()[b, t]))
                w = _reference_weight(name, p)
                ref_loss += -w * float(lp.detach()[b, t]) / n_tokens
                ref_grad[b, t] = -w / n_tokens  # w is a constant: d(-w log p)/dlog p = -w
    assert float(loss) == pytest.approx(ref_loss, rel=1e-12)
    assert torch.allclose(lp.grad, ref_grad, rtol=1e-12, atol=0)


def test_token_weight_hand_computed_and_detached():
    p = torch.tensor([0.5, 0.9, 0.0], requires_grad=True)
    assert token_weight("p_one_minus_p", p).tolist() == pytest.approx([0.25, 0.09, 0.0])
    assert token_weight("p", p).tolist() == pytest.approx([0.5, 0.9, 0.0])
    assert token_weight("none", p) is None
    assert not token_weight("p", p).requires_grad
    with pytest.raises(ValueError, match="p_one_minus_p"):
        token_weight("phi", p)


@pytest.mark.parametrize("reshape", ["no_reshape", "p_div_p_0.1", "logp"])
@pytest.mark.parametrize("name", ["p_one_minus_p", "p"])
def test_off_policy_token_weight_matches_a_token_loop(reshape, name):
    lp = _rand_logp(7).requires_grad_(True)
    old = _rand_logp(8)
    g = torch.Generator().manual_seed(9)
    adv = torch.randn(lp.shape, generator=g, dtype=torch.float64)
    mask = torch.ones(lp.shape, dtype=torch.float64)
    mask[0, 5:] = 0
    off = torch.rand(lp.shape, generator=g) < 0.5
    loss, _ = compute_token_on_off_policy_loss(old, lp, adv, mask, off, off_policy_reshape=reshape,
                                               off_policy_token_weight=name)
    loss.backward()
    base_lp = lp.detach().clone().requires_grad_(True)
    base, _ = compute_token_on_off_policy_loss(old, base_lp, adv, mask, off, off_policy_reshape=reshape)
    base.backward()
    # per token: the weighted loss is w(p) times the unweighted off-policy token loss, on-policy tokens as before
    n = float(mask.sum())
    lpd = lp.detach()

    def h(b, t):  # the shaped off-policy ratio of token (b, t)
        q = math.exp(float(lpd[b, t]))
        return {"no_reshape": q, "p_div_p_0.1": q / (q + 0.1), "logp": math.log(q)}[reshape]

    ref_loss, off_part, ref_grad = 0.0, 0.0, torch.zeros_like(lp)
    for b in range(lp.shape[0]):
        for t in range(lp.shape[1]):
            if not mask[b, t]:
                continue
            w = _reference_weight(name, math.exp(float(lpd[b, t]))) if off[b, t] else 1.0
            if off[b, t]:
                ref_loss += w * -float(adv[b, t]) * h(b, t) / n
                off_part += -float(adv[b, t]) * h(b, t) / n
            ref_grad[b, t] = w * float(base_lp.grad[b, t])
    on_part = float(base) - off_part
    assert float(loss) == pytest.approx(on_part + ref_loss, rel=1e-10, abs=1e-12)
    assert torch.allclose(lp.grad, ref_grad, rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------- hint schedules


@pytest.mark.parametrize("strategy", ["progress_linear", "progress_cosine"])
def test_hint_anneals_from_its_start_to_nothing(strategy):
    def ratio(t):
        return prefix_ratio(strategy, 0.0, 0.8, t, 0, 1, "u", False)

    assert ratio(0.0) == pytest.approx(0.8)
    assert ratio(1.0) == 0.0
    values = [ratio(i / 20) for i in range(21)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # never grows back


def test_cosine_hint_hand_computed():
    # lo + (hi - lo) (1 + cos(pi t)) / 2 with lo 0.2, hi 1.0
    assert prefix_ratio("progress_cosine", 0.2, 1.0, 0.5, 0, 1, "u", False) == pytest.approx(0.6)
    assert prefix_ratio("progress_cosine", 0.2, 1.0, 0.25, 0, 1, "u", False) == pytest.approx(
        0.2 + 0.8 * (1 + math.sqrt(0.5)) / 2)
