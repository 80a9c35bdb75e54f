"""The toy's in-process training loop (luffy/toy/lab.py): its advantage and loss calls against plain
references on small batches, data order, and seeded determinism of a whole run."""

from __future__ import annotations

import math

import pytest
import torch

from luffy.toy.lab import ARMS, LabConfig, advantages, data_order, policy_loss, run_arm, step_prompts
from luffy.toy.task import make_data


def _batch(seed: int, groups: int = 3, n: int = 4, width: int = 6, off_slots: int = 1):
    """A random batch: ``groups`` x ``n`` rows, the first ``off_slots`` of each group off-policy."""
    g = torch.Generator().manual_seed(seed)
    rows = groups * n
    lengths = torch.randint(2, width + 1, (rows,), generator=g)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()  # (B, T)
    old = -torch.rand(rows, width, generator=g) * 2  # (B, T)
    lp = (old + torch.randn(rows, width, generator=g) * 0.3).clamp(max=-1e-3)  # (B, T)
    rewards = torch.randint(0, 2, (rows,), generator=g).float()
    group = torch.arange(groups).repeat_interleave(n)
    off = torch.tensor([j < off_slots for _ in range(groups) for j in range(n)])
    return mask, old, lp, rewards, group, off


def _reference_advantages(rewards, group, off, estimator):
    """GRPO without std: reward minus the group's mean, the mean over every member (grpo) or the
    on-policy ones (grpo_split); a group with fewer than two such members has mean 0."""
    out = []
    for i in range(len(rewards)):
        members = [j for j in range(len(rewards)) if group[j] == group[i] and (estimator == "grpo" or not off[j])]
        mean = sum(float(rewards[j]) for j in members) / len(members) if len(members) >= 2 else 0.0
        out.append(float(rewards[i]) - mean)
    return out


@pytest.mark.parametrize("estimator", ["grpo", "grpo_split"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_advantages_match_a_group_loop(estimator, seed):
    mask, _, _, rewards, group, off = _batch(seed)
    adv = advantages(rewards, off, group, mask, estimator)
    expected = _reference_advantages(rewards, group, off, estimator)
    for i in range(len(rewards)):
        assert adv[i][mask[i].bool()].tolist() == pytest.approx([expected[i]] * int(mask[i].sum()), abs=1e-6)
        assert adv[i][~mask[i].bool()].abs().sum() == 0


def test_advantages_hand_computed():
    # one group of 4: a trace (reward 1) and three failed samples
    mask = torch.ones(4, 2, dtype=torch.long)
    rewards, group = torch.tensor([1.0, 0, 0, 0]), torch.zeros(4, dtype=torch.long)
    off = torch.tensor([True, False, False, False])
    assert advantages(rewards, off, group, mask, "grpo")[:, 0].tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])
    assert advantages(rewards, off, group, mask, "grpo_split")[:, 0].tolist() == pytest.approx([1.0, 0, 0, 0])


def _reference_loss(old, lp, adv, mask, off, arm, max_response):
    """Plain loops: per token -A r, r = exp(lp - old) on sampled tokens and p/(p+0.1) on trace tokens
    (``p_div_p_0.1``), each row's token sum, divided by rows x max_response; SFT: mean NLL of trace tokens;
    RL with an SFT loss: the on-policy part over on-policy rows only, plus that NLL."""
    rows, width = lp.shape
    gamma = 0.1
    total_on, on_rows, nll, n_target = 0.0, 0, 0.0, 0
    total_mixed = 0.0
    for b in range(rows):
        row_on, row_mixed = 0.0, 0.0
        for t in range(width):
            if not mask[b, t]:
                continue
            a = adv[b, t]
            if off[b]:
                p = torch.exp(lp[b, t])
                row_mixed += -a * p / (p + gamma)
                nll += -lp[b, t]
                n_target += 1
            else:
                r = torch.exp(lp[b, t] - old[b, t])
                row_on += -a * r
                row_mixed += -a * r
        total_mixed = total_mixed + row_mixed
        if not off[b]:
            total_on = total_on + row_on
            on_rows += 1
    if arm == "sft":
        return nll / n_target
    if arm == "rl_sft_loss":
        return total_on / (on_rows * max_response) + nll / n_target
    return total_mixed / (rows * max_response)


@pytest.mark.parametrize("arm", ["luffy", "luffy_split", "grpo", "sft", "rl_sft_loss"])
@pytest.mark.parametrize("seed", [0, 3])
def test_policy_loss_and_gradient_match_a_token_loop(arm, seed):
    mask, old, lp0, rewards, group, off = _batch(seed, off_slots=4 if arm == "sft" else 0 if arm == "grpo" else 1)
    cfg = LabConfig(max_response=8)
    adv = advantages(rewards, off, group, mask, ARMS[arm].adv_estimator)
    off_tokens = off[:, None].expand_as(mask) & mask.bool()
    lp = lp0.clone().requires_grad_(True)
    loss = policy_loss(old, lp, adv, mask, off_tokens, ARMS[arm], cfg)
    loss.backward()
    ref_lp = lp0.clone().requires_grad_(True)
    ref = _reference_loss(old, ref_lp, adv, mask, off, arm, cfg.max_response)
    ref.backward()
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-5, abs=1e-7)
    assert torch.allclose(lp.grad, ref_lp.grad, rtol=1e-5, atol=1e-7)


def test_data_order_is_a_seeded_permutation_and_steps_wrap():
    data = make_data(20, 1, seed=0)
    order = data_order(data.train, 1)
    assert sorted(order, key=str) == sorted(data.train, key=str)
    assert data_order(data.train, 1) == order and data_order(data.train, 2) != order
    assert step_prompts(order, 0, 8) == order[:8]
    assert step_prompts(order, 2, 8) == order[16:] + order[:4]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from luffy.toy.base_model import build_base_model

    out = tmp_path_factory.mktemp("toy_base")
    data = make_data(16, 3, seed=0)
    build_base_model(out, data.excluded(), q=0.5, hidden_size=32, steps=30, batch_size=16, progress=False)
    return out, data


def test_a_run_is_seeded(tiny_base):
    from luffy.toy.evaluate import EvalSettings

    base, data = tiny_base
    cfg = LabConfig(steps=2, batch=2, mini_batch=1, n=3, lr=1e-3, eval_every=2, max_response=48)
    settings = EvalSettings(k=2, max_new_tokens=48)
    runs = [run_arm(arm, base, data, seed, cfg, settings) for arm, seed in
            (("luffy", 0), ("luffy", 0), ("luffy", 1), ("sft_rl", 0))]
    assert runs[0]["eval"] == runs[1]["eval"] and runs[0]["train"] == runs[1]["train"]
    assert runs[0]["eval"][2] != runs[2]["eval"][2]  # another seed: other prompts and samples
    assert runs[0]["eval"][0] == runs[3]["eval"][0]  # every arm of a seed starts from the same model
    assert set(runs[0]["eval"]) == {0, 2}
    for run in runs:
        for metrics in run["eval"].values():
            assert all(math.isfinite(v) for v in metrics.values())


def test_sft_steps_make_the_traces_more_likely(tiny_base):
    from luffy.toy.evaluate import EvalSettings

    base, data = tiny_base
    cfg = LabConfig(steps=4, batch=4, mini_batch=4, n=2, lr=3e-3, eval_every=4, max_response=48)
    run = run_arm("sft", base, data, 0, cfg, EvalSettings(k=1, max_new_tokens=48))
    assert run["eval"][4]["trace_logprob"] > run["eval"][0]["trace_logprob"]


@pytest.mark.parametrize("progress", [0.0, 0.05, 0.6, 1.0])
def test_chord_arm_loss_and_gradient_match_a_token_loop(progress):
    # CHORD: (1 - mu) x the on-policy PPO part + mu x the p(1-p)-weighted NLL of the trace tokens (weight detached)
    mask, old, lp0, rewards, group, off = _batch(5)
    arm, cfg = ARMS["chord"], LabConfig(max_response=8)
    adv = advantages(rewards, off, group, mask, arm.adv_estimator)
    off_tokens = off[:, None].expand_as(mask) & mask.bool()
    lp = lp0.clone().requires_grad_(True)
    policy_loss(old, lp, adv, mask, off_tokens, arm, cfg, progress).backward()
    t, w = progress, arm.sft_coef_warmup
    mu = arm.sft_loss_coef * t / w if t < w else arm.sft_coef_valley + (arm.sft_loss_coef - arm.sft_coef_valley) * (
        1 + math.cos(math.pi * (t - w) / (1 - w))) / 2
    ref_lp = lp0.clone().requires_grad_(True)
    rows, width = lp0.shape
    on_total, on_rows, nll, n_target = 0.0, 0, 0.0, 0
    for b in range(rows):
        for t_ in range(width):
            if mask[b, t_] and off[b]:
                p = float(torch.exp(lp0[b, t_]))
                nll = nll - p * (1 - p) * ref_lp[b, t_]
                n_target += 1
            elif mask[b, t_]:
                on_total = on_total - adv[b, t_] * torch.exp(ref_lp[b, t_] - old[b, t_])
        on_rows += int(not off[b])
    ref = (1 - mu) * on_total / (on_rows * cfg.max_response) + mu * nll / n_target
    ref.backward()
    assert torch.allclose(lp.grad, ref_lp.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("arm", ["hpt", "bread"])
def test_gated_arms_drop_the_traces_of_unguided_groups(arm):
    from luffy.toy.lab import gated_advantages

    mask, _, _, rewards, group, off = _batch(2, groups=4, n=5)
    rewards[group == 0] = 0.0  # a failing group: guided by both gates
    rewards[(group == 1) & ~off] = 1.0  # a solved group: guided by neither
    adv, keep, stats = gated_advantages(rewards, off, group, mask, ARMS[arm])
    assert keep[group == 0].all() and not keep[(group == 1) & off].any() and keep[~off].all()
    assert adv[~keep].abs().sum() == 0
    assert 0.0 < stats["luffy/guided_group_frac"] <= 0.75
