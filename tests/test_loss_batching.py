"""One mini-batch, cut into micro-batches the ways veRL's engine cuts it: the same loss and gradient.

The mini-batch is laid out as veRL's FSDP engine hands it over (nested prompts/responses with
remove-padding, or veRL's padded layout with every response padded to the configured length; per-sample
``extra_fields``; the global batch information the engine assigns), and split with veRL's own
``prepare_micro_batches`` (fixed micro-batch sizes, or dynamic token-budget batches that regroup and
reorder samples). The reference is a loop over tokens written from docs/algorithm.md's formulas. The SFT
multitask loss (``use_sft_multitask_loss``) gets the same treatment, its counts added to the mini-batch as
LUFFY's worker adds them.
"""

from __future__ import annotations

import math

import pytest
import torch
from _compose import compose_luffy
from tensordict import NonTensorStack, TensorDict
from verl.utils import tensordict_utils as tu
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.engine.utils import prepare_micro_batches

import luffy.plugin  # noqa: F401
from luffy.mix_src.mix_fields import OFF_POLICY_KEY, PREFIX_LEN_KEY
from luffy.mix_src.mix_loss import luffy_ppo_loss
from luffy.mix_src.sft_loss import assign_sft_counts

MAX_RESPONSE = 12  # data.max_response_length: the constant T of loss_remove_token_mean
ENTROPY_SCALE = 40  # actor.entropy_loss_scale_factor
ENTROPY_COEFF = 0.05
GAMMA = 0.1
PROMPT_LENS = [3, 5, 2, 4, 6, 2, 3, 4]
RESPONSE_LENS = [12, 4, 9, 3, 7, 1, 11, 5]
PREFIX_LENS = [12, 0, 0, 3, 0, 0, 4, 0]  # whole target, generated, ..., 4-token target prefix


SFT_COEF = 0.7


def _config(remove_token_mean: bool, sft: bool = False):
    overrides = [
        f"data.max_response_length={MAX_RESPONSE}",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.actor.off_policy_reshape=" + ("no_reshape" if sft else f"p_div_p_{GAMMA}"),
        f"actor_rollout_ref.actor.use_sft_multitask_loss={str(sft).lower()}",
        f"actor_rollout_ref.actor.sft_loss_coef={SFT_COEF}",
        f"actor_rollout_ref.actor.entropy_coeff={ENTROPY_COEFF}",
        f"actor_rollout_ref.actor.entropy_loss_scale_factor={ENTROPY_SCALE}",
        f"actor_rollout_ref.actor.loss_remove_token_mean={str(remove_token_mean).lower()}",
        f"actor_rollout_ref.actor.loss_remove_clip={str(remove_token_mean).lower()}",
    ]
    cfg = compose_luffy(*overrides)
    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


def _nested(rows):
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


def _inputs(seed: int):
    """Per-sequence leaves (model log-probs and entropy over prompt + response) and the batch fields."""
    g = torch.Generator().manual_seed(seed)
    seq_lens = [p + r for p, r in zip(PROMPT_LENS, RESPONSE_LENS)]
    leaves = [(-torch.rand(n, generator=g, dtype=torch.float64) * 2).requires_grad_(True) for n in seq_lens]
    entropy = [torch.rand(n, generator=g, dtype=torch.float64) * 3 for n in seq_lens]
    old = [-torch.rand(r, generator=g, dtype=torch.float64) * 2 for r in RESPONSE_LENS]
    adv = [torch.full((r,), float(torch.randn(1, generator=g)), dtype=torch.float64) for r in RESPONSE_LENS]
    return leaves, entropy, old, adv


def _right_pad(rows, width):
    return torch.stack([torch.nn.functional.pad(r, (0, width - len(r))) for r in rows])


def _mini_batch(old, adv, *, dynamic: bool, fixed_width: bool) -> TensorDict:
    prompts = [torch.ones(p, dtype=torch.long) for p in PROMPT_LENS]
    responses = [torch.ones(r, dtype=torch.long) for r in RESPONSE_LENS]
    masks = [torch.ones(r, dtype=torch.long) for r in RESPONSE_LENS]
    if fixed_width:
        # veRL's padded layout: prompts left-padded, responses right-padded to the configured length
        p_max = max(PROMPT_LENS)
        prompt_pad = torch.stack([torch.nn.functional.pad(p, (p_max - len(p), 0)) for p in prompts])
        prompt_mask = torch.stack([torch.nn.functional.pad(torch.ones_like(p), (p_max - len(p), 0)) for p in prompts])
        response_mask = _right_pad(masks, MAX_RESPONSE)
        fields = {
            "prompts": prompt_pad,
            "responses": _right_pad(responses, MAX_RESPONSE),
            "attention_mask": torch.cat([prompt_mask, response_mask], dim=1),
            "response_mask": response_mask,
            "old_log_probs": _right_pad(old, MAX_RESPONSE),
            "advantages": _right_pad(adv, MAX_RESPONSE),
        }
        fields["input_ids"] = torch.cat([fields["prompts"], fields["responses"]], dim=1)
    else:
        fields = {
            "prompts": _nested(prompts),
            "responses": _nested(responses),
            "input_ids": _nested([torch.cat([p, r]) for p, r in zip(prompts, responses)]),
            "response_mask": _nested(masks),
            "old_log_probs": _nested(old),
            "advantages": _nested(adv),
        }
    data = TensorDict({**fields, "index": torch.arange(len(RESPONSE_LENS))}, batch_size=len(RESPONSE_LENS))
    data["extra_fields"] = NonTensorStack(*[{OFF_POLICY_KEY: k > 0, PREFIX_LEN_KEY: k} for k in PREFIX_LENS])
    # what veRL's engine assigns before splitting (forward_backward_batch) and the trainer's extra_info
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=sum(RESPONSE_LENS), global_batch_size=len(RESPONSE_LENS))
    tu.assign_non_tensor(data, use_dynamic_bsz=dynamic, max_token_len_per_gpu=24, micro_batch_size_per_gpu=2)
    return data


def _run(config, leaves, entropy, old, adv, *, dynamic: bool, fixed_width: bool, micro: int = 2):
    """Sum of luffy_ppo_loss over veRL's micro-batches; gradients land on ``leaves``."""
    data = _mini_batch(old, adv, dynamic=dynamic, fixed_width=fixed_width)
    if not dynamic:
        tu.assign_non_tensor(data, micro_batch_size_per_gpu=micro)
    if config.use_sft_multitask_loss:
        assign_sft_counts(data)  # what LUFFY's worker does to each mini-batch
    micro_batches, _ = prepare_micro_batches(data, dp_group=None, same_micro_num_in_dp=False)
    total, widths = 0.0, []
    for mb in micro_batches:
        idx = mb["index"].tolist()
        model_output = {
            "log_probs": _nested([leaves[i] for i in idx]),
            "entropy": _nested([entropy[i] for i in idx]),
        }
        loss, _ = luffy_ppo_loss(config, model_output, mb)
        loss.backward()
        total += float(loss)
        widths.append(max(RESPONSE_LENS[i] for i in idx))
    return total, [leaf.grad.clone() for leaf in leaves], widths


def _reference(leaves, entropy, old, adv, remove_token_mean: bool, sft: bool = False):
    """docs/algorithm.md's objective, token by token: policy term minus entropy_coeff times the entropy term.

    ``sft``: the SFT multitask loss: PPO over on-policy tokens (normalised by their own token / response
    counts) plus SFT_COEF times the mean NLL of the target tokens.
    """
    xs = [leaf.detach().clone().requires_grad_(True) for leaf in leaves]
    policy = entropy_sum = nll = 0.0
    n_target = n_on = 0
    on_seqs = set()
    n_tok = sum(RESPONSE_LENS)
    for i, (p_len, r_len) in enumerate(zip(PROMPT_LENS, RESPONSE_LENS)):
        for t in range(r_len):
            logp = xs[i][p_len - 1 + t]  # the model output is shifted by one position
            a = float(adv[i][t])
            entropy_sum += float(entropy[i][p_len - 1 + t])
            if t < PREFIX_LENS[i] and sft:
                nll = nll - logp
                n_target += 1
                continue
            if t < PREFIX_LENS[i]:
                p = logp.exp()
                loss_t = -a * p / (p + GAMMA)
            else:
                r = (logp - float(old[i][t])).clamp(-20, 20).exp()
                loss_t = -a * r if remove_token_mean else torch.maximum(-a * r, -a * r.clamp(0.8, 1.2))
                n_on += 1
                on_seqs.add(i)
            policy = policy + loss_t
    n_seq = len(RESPONSE_LENS)
    if remove_token_mean:
        pg = policy / ((len(on_seqs) if sft else n_seq) * MAX_RESPONSE)
        loss = pg - ENTROPY_COEFF * entropy_sum / (n_seq * ENTROPY_SCALE)
    else:
        loss = policy / (n_on if sft else n_tok) - ENTROPY_COEFF * entropy_sum / n_tok
    if sft:
        loss = loss + SFT_COEF * nll / n_target
    loss.backward()
    return float(loss.detach()), [x.grad for x in xs]


@pytest.mark.parametrize("sft", [False, True], ids=["mixed", "sft_multitask"])
@pytest.mark.parametrize("remove_token_mean", [True, False])
def test_same_loss_and_gradient_however_the_mini_batch_is_cut(remove_token_mean, sft):
    config = _config(remove_token_mean, sft)
    leaves, entropy, old, adv = _inputs(seed=3)
    expected_loss, expected_grads = _reference(leaves, entropy, old, adv, remove_token_mean, sft)
    splits = {
        "fixed 1": dict(dynamic=False, fixed_width=False, micro=1),
        "fixed 2": dict(dynamic=False, fixed_width=False, micro=2),
        "fixed 8 (one micro-batch)": dict(dynamic=False, fixed_width=False, micro=8),
        "dynamic, 24-token budget": dict(dynamic=True, fixed_width=False),
        "fixed 4, padded to the configured length": dict(dynamic=False, fixed_width=True, micro=4),
        "dynamic, padded to the configured length": dict(dynamic=True, fixed_width=True),
    }
    seen_widths = set()
    for name, kwargs in splits.items():
        for leaf in leaves:
            leaf.grad = None
        loss, grads, widths = _run(config, leaves, entropy, old, adv, **kwargs)
        seen_widths.update(widths)
        assert loss == pytest.approx(expected_loss, rel=1e-9, abs=1e-12), name
        for got, want in zip(grads, expected_grads):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12, msg=name)
    assert len(seen_widths) > 3  # the splits really produced micro-batches of different widths


def test_entropy_weight_relative_to_policy_does_not_depend_on_batching():
    # per token, d(entropy term)/d(policy term) weights: coeff * MAX_RESPONSE / ENTROPY_SCALE under
    # loss_remove_token_mean, whatever the micro-batch holds (checked through the loss values)
    config = _config(True)
    leaves, entropy, old, adv = _inputs(seed=4)
    zero_adv = [torch.zeros_like(a) for a in adv]
    loss_1, _, _ = _run(config, leaves, entropy, old, zero_adv, dynamic=False, fixed_width=False, micro=1)
    loss_8, _, _ = _run(config, leaves, entropy, old, zero_adv, dynamic=False, fixed_width=False, micro=8)
    entropy_sum = sum(float(e[p - 1 : p - 1 + r].sum()) for e, p, r in zip(entropy, PROMPT_LENS, RESPONSE_LENS))
    expected = -ENTROPY_COEFF * entropy_sum / (len(RESPONSE_LENS) * ENTROPY_SCALE)
    assert math.isclose(loss_1, expected, rel_tol=1e-9) and math.isclose(loss_8, expected, rel_tol=1e-9)
