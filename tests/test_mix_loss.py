"""The worker's LUFFY loss on a micro-batch shaped as veRL's engine hands it to the loss function."""

from __future__ import annotations

import math

import pytest
import torch
from _compose import compose_luffy
from tensordict import NonTensorStack, TensorDict
from verl.trainer.ppo.core_algos import agg_loss
from verl.utils import tensordict_utils as tu
from verl.utils.config import omega_conf_to_dataclass

import luffy.plugin  # noqa: F401
from luffy.mix_src import mix_loss
from luffy.mix_src.core_algos import compute_token_on_off_policy_loss
from luffy.mix_src.mix_fields import OFF_POLICY_KEY, PREFIX_LEN_KEY, PROGRESS_FIELD
from luffy.mix_src.mix_loss import luffy_policy_loss, luffy_ppo_loss
from luffy.mix_src.reshape import Reshape
from luffy.mix_src.sft_loss import assign_sft_counts

PROMPT_LENS = [3, 5, 2, 4]
RESPONSE_LENS = [6, 4, 5, 3]
# sample 0: whole target (off-policy); 1: 2-token target prefix then generated; 2, 3: generated
EXTRA = [
    {OFF_POLICY_KEY: True, PREFIX_LEN_KEY: 6},
    {OFF_POLICY_KEY: True, PREFIX_LEN_KEY: 2},
    {OFF_POLICY_KEY: False, PREFIX_LEN_KEY: 0},
    {OFF_POLICY_KEY: False, PREFIX_LEN_KEY: 0},
]
GLOBAL_TOKENS = 40  # tokens in the whole mini-batch across ranks (this micro-batch holds 18)


def _compose_actor(*overrides: str):
    """LUFFY's actor dataclass config from mix_ppo_trainer.yaml with micro-batches of 4 and ``overrides``."""
    cfg = compose_luffy("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4", *overrides)
    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


def _actor_config(*overrides: str):
    return _compose_actor("actor_rollout_ref.actor.off_policy_reshape=p_div_p_0.1", *overrides)


def _value(metric) -> float:
    return float(metric.aggregate()) if hasattr(metric, "aggregate") else float(metric)


def _nested(rows: list[torch.Tensor]) -> torch.Tensor:
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


def _micro_batch(seed: int = 0, rollout_is_weights: bool = False):
    """(data, model_output, padded reference tensors) as veRL's FSDP engine builds them."""
    g = torch.Generator().manual_seed(seed)
    seq_lens = [p + r for p, r in zip(PROMPT_LENS, RESPONSE_LENS)]
    # the engine returns log-probs for every position of every unpadded sequence, (total_nnz,)
    log_probs = (-torch.rand(sum(seq_lens), generator=g) * 3).requires_grad_(True)
    entropy = torch.rand(sum(seq_lens), generator=g) * 2
    old, adv, weights = [], [], []
    for r in RESPONSE_LENS:
        old.append(-torch.rand(r, generator=g) * 3)
        adv.append(torch.full((r,), float(torch.randn(1, generator=g))))
        weights.append(0.5 + torch.rand(r, generator=g))
    fields = {
        "prompts": _nested([torch.ones(p, dtype=torch.long) for p in PROMPT_LENS]),
        "responses": _nested([torch.ones(r, dtype=torch.long) for r in RESPONSE_LENS]),
        "response_mask": _nested([torch.ones(r, dtype=torch.long) for r in RESPONSE_LENS]),
        "old_log_probs": _nested(old),
        "advantages": _nested(adv),
    }
    if rollout_is_weights:
        fields["rollout_is_weights"] = _nested(weights)
    data = TensorDict(fields, batch_size=len(RESPONSE_LENS))
    data["extra_fields"] = NonTensorStack(*EXTRA)
    tu.assign_non_tensor_data(data, "dp_size", 1)
    tu.assign_non_tensor_data(data, "batch_num_tokens", GLOBAL_TOKENS)
    tu.assign_non_tensor_data(data, "global_batch_size", 8)

    # padded reference: response log-probs are the model outputs shifted left by one position
    t_max = max(RESPONSE_LENS)
    ref = {k: torch.zeros(len(RESPONSE_LENS), t_max) for k in ("logp", "old", "adv", "mask", "off", "ent", "w")}
    ref["w"] += 1.0
    starts = torch.tensor([0, *seq_lens]).cumsum(0)
    for i, (p, r) in enumerate(zip(PROMPT_LENS, RESPONSE_LENS)):
        sl = slice(starts[i] + p - 1, starts[i] + p - 1 + r)
        ref["logp"][i, :r] = log_probs.detach()[sl]
        ref["ent"][i, :r] = entropy[sl]
        ref["old"][i, :r], ref["adv"][i, :r], ref["mask"][i, :r] = old[i], adv[i], 1.0
        ref["off"][i, : EXTRA[i][PREFIX_LEN_KEY]] = 1.0
        ref["w"][i, :r] = weights[i]
    model_output = {"log_probs": _nested(list(log_probs.split(seq_lens))), "entropy": None}
    return data, model_output, log_probs, entropy, seq_lens, ref


def _expected_pg(config, ref, advantages=None):
    loss, raw = compute_token_on_off_policy_loss(
        old_log_prob=ref["old"],
        log_prob=ref["logp"],
        advantages=ref["adv"] if advantages is None else advantages,
        response_mask=ref["mask"],
        off_policy_mask=ref["off"].bool(),
        cliprange=0.2,
        clip_upper_bound=1.2,
        off_policy_reshape="p_div_p_0.1",
        loss_remove_token_mean=config.loss_remove_token_mean,
        loss_remove_clip=config.loss_remove_clip,
    )
    return loss, raw


def test_loss_matches_core_loss_with_global_token_normalisation():
    config = _actor_config("actor_rollout_ref.actor.entropy_coeff=0.0")
    data, model_output, log_probs, _, _, ref = _micro_batch()
    loss, metrics = luffy_ppo_loss(config, model_output, data)
    expected, raw = _expected_pg(config, ref)
    # micro-batch token mean -> sum over the micro-batch / tokens of the global mini-batch
    n_local = ref["mask"].sum()
    torch.testing.assert_close(loss, expected * n_local / GLOBAL_TOKENS)
    assert _value(metrics["actor/off_pg_loss"]) == pytest.approx(float(raw["off_pg_loss"]), rel=1e-5)
    assert _value(metrics["actor/off_policy_prob"]) == pytest.approx(float(raw["off_policy_prob"]), rel=1e-5)
    loss.backward()
    assert torch.isfinite(log_probs.grad).all() and log_probs.grad.abs().sum() > 0


def test_remove_token_mean_is_verls_seq_mean_token_sum_norm_over_the_configured_length():
    config = _actor_config(
        "actor_rollout_ref.actor.entropy_coeff=0.0",
        "actor_rollout_ref.actor.loss_remove_token_mean=true",
        "actor_rollout_ref.actor.loss_remove_clip=true",
        "data.max_response_length=32",
    )
    assert (config.loss_agg_mode, config.loss_scale_factor) == ("seq-mean-token-sum-norm", 32)
    data, model_output, _, _, _, ref = _micro_batch(seed=1)
    loss, _ = luffy_ppo_loss(config, model_output, data)
    _, raw = _expected_pg(config, ref)
    token_sum = (raw["on_pg_loss"] * raw["on_token_count"] + raw["off_pg_loss"] * raw["off_token_count"]).float()
    # sum(m L) / (global_batch_size 8 * configured length 32), not / this micro-batch's width 6
    torch.testing.assert_close(loss, token_sum / (8 * 32))


def test_loss_scale_factor_overrides_the_configured_length():
    config = _actor_config(
        "actor_rollout_ref.actor.loss_remove_token_mean=true", "actor_rollout_ref.actor.loss_scale_factor=100"
    )
    assert config.loss_scale_factor == 100


def test_entropy_term_is_verls_token_mean():
    config = _actor_config("actor_rollout_ref.actor.entropy_coeff=0.01")
    data, model_output, _, entropy, seq_lens, ref = _micro_batch(seed=2)
    without, _ = luffy_ppo_loss(config, model_output, data)
    model_output["entropy"] = _nested(list(entropy.split(seq_lens)))
    with_entropy, metrics = luffy_ppo_loss(config, model_output, data)
    ent = agg_loss(ref["ent"], ref["mask"], "token-mean", dp_size=1, batch_num_tokens=GLOBAL_TOKENS)
    torch.testing.assert_close(with_entropy, without - 0.01 * ent)
    on = ref["mask"].bool() & ~ref["off"].bool()
    assert _value(metrics["actor/entropy_on_policy"]) == pytest.approx(float(ref["ent"][on].mean()), rel=1e-5)
    assert _value(metrics["actor/entropy_off_policy"]) == pytest.approx(
        float(ref["ent"][ref["off"].bool()].mean()), rel=1e-5
    )


def test_rollout_is_weights_apply_to_on_policy_tokens_only():
    config = _actor_config("actor_rollout_ref.actor.entropy_coeff=0.0")
    data, model_output, _, _, _, ref = _micro_batch(seed=3, rollout_is_weights=True)
    loss, _ = luffy_ppo_loss(config, model_output, data)
    weighted_adv = torch.where(ref["off"].bool(), ref["adv"], ref["adv"] * ref["w"])
    expected, _ = _expected_pg(config, ref, advantages=weighted_adv)
    torch.testing.assert_close(loss, expected * ref["mask"].sum() / GLOBAL_TOKENS)


def test_worker_path_passes_the_parsed_reshapes_without_parsing_per_micro_batch(monkeypatch):
    config = _actor_config(
        "actor_rollout_ref.actor.entropy_coeff=0.0",
        "actor_rollout_ref.actor.on_policy_reshape=pow",
        "actor_rollout_ref.actor.on_policy_reshape_pow_exp=2.0",
    )
    assert config.off_reshape == Reshape("p_div_p", 0.1, 0.1, 0.5)
    assert config.on_reshape == Reshape("pow", None, 0.1, 2.0)
    seen = []
    real_loss = mix_loss.compute_token_on_off_policy_loss

    def spy(**kwargs):
        seen.append((kwargs["off_policy_reshape"], kwargs["on_policy_reshape"]))
        return real_loss(**kwargs)

    def no_parse(*args, **kwargs):
        raise AssertionError("a reshape was parsed on a micro-batch")

    monkeypatch.setattr(mix_loss, "compute_token_on_off_policy_loss", spy)
    monkeypatch.setattr(Reshape, "parse", no_parse)
    for seed in (0, 1):
        data, model_output, _, _, _, _ = _micro_batch(seed=seed)
        luffy_ppo_loss(config, model_output, data)
    assert len(seen) == 2 and all(off is config.off_reshape and on is config.on_reshape for off, on in seen)


def test_policy_loss_refuses_to_run_without_the_mask():
    config = _actor_config()
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="off-policy mask"):
        luffy_policy_loss(x, x, x, torch.ones(2, 3), config=config)


# ---- the SFT multitask loss (actor.use_sft_multitask_loss) ----

SFT_COEF = 0.7


def _sft_config(*overrides: str):
    return _compose_actor(
        "actor_rollout_ref.actor.use_sft_multitask_loss=true",
        f"actor_rollout_ref.actor.sft_loss_coef={SFT_COEF}",
        "actor_rollout_ref.actor.entropy_coeff=0.0",
        *overrides,
    )


def test_sft_multitask_loss_is_ppo_on_on_policy_tokens_plus_coef_times_target_nll():
    # this micro-batch belongs to a mini-batch of 20 target tokens, 30 on-policy tokens in 6 responses
    config = _sft_config()
    data, model_output, log_probs, _, seq_lens, ref = _micro_batch(seed=5)
    tu.assign_non_tensor(data, luffy_target_tokens=20, luffy_on_policy_tokens=30, luffy_on_policy_samples=6)
    loss, metrics = luffy_ppo_loss(config, model_output, data)
    loss.backward()

    # slow reference on a copy of the model output: clipped PPO over on-policy tokens / 30 + coef * NLL / 20
    x = log_probs.detach().clone().requires_grad_(True)
    pg = nll = 0.0
    on_tokens, on_losses = 0, []
    start = 0
    for i, (p_len, r_len) in enumerate(zip(PROMPT_LENS, RESPONSE_LENS)):
        for t in range(r_len):
            logp = x[start + p_len - 1 + t]
            if t < EXTRA[i][PREFIX_LEN_KEY]:
                nll = nll - logp
                continue
            a, old = float(ref["adv"][i, t]), float(ref["old"][i, t])
            r = (logp - old).exp()
            token_loss = torch.maximum(-a * r, -a * r.clamp(0.8, 1.2))
            pg = pg + token_loss
            on_losses.append(float(token_loss))
            on_tokens += 1
        start += seq_lens[i]
    expected = pg / 30 + SFT_COEF * nll / 20
    expected.backward()
    torch.testing.assert_close(loss, expected.float())
    torch.testing.assert_close(log_probs.grad, x.grad)
    assert _value(metrics["actor/pg_loss"]) == pytest.approx(float(pg) / 30, rel=1e-5)
    assert _value(metrics["actor/sft_loss"]) == pytest.approx(float(nll) / 20, rel=1e-5)
    assert _value(metrics["actor/on_pg_loss"]) == pytest.approx(sum(on_losses) / on_tokens, rel=1e-5)
    target_p = ref["logp"][ref["off"].bool()].exp().mean()
    assert _value(metrics["actor/off_policy_prob"]) == pytest.approx(float(target_p), rel=1e-5)
    assert "actor/off_pg_loss" not in metrics and "actor/off_ratio_mean" not in metrics


def _target_and_sample_batch() -> tuple[torch.Tensor, TensorDict]:
    """Log-probs (4,) of two [prompt, response] sequences of one token each (the target's response token
    p = 0.5, the sample's ratio 1 and advantage 2) and their micro-batch (extra_fields set by the caller)."""
    logp = torch.tensor([math.log(0.5), -1.0, -1.5, -3.0], dtype=torch.float64, requires_grad=True)
    data = TensorDict(
        {
            "prompts": _nested([torch.ones(1, dtype=torch.long)] * 2),
            "responses": _nested([torch.ones(1, dtype=torch.long)] * 2),
            "response_mask": _nested([torch.ones(1, dtype=torch.long)] * 2),
            "old_log_probs": _nested([torch.tensor([-7.0]), torch.tensor([-1.5])]),
            "advantages": _nested([torch.tensor([5.0]), torch.tensor([2.0])]),
        },
        batch_size=2,
    )
    return logp, data


def test_sft_multitask_loss_hand_computed():
    # one whole-target response of 1 token (p = 0.5) and one on-policy token with ratio 1 and advantage 2:
    # token mean of PPO = -2 * 1 / 1, SFT = -log 0.5; d/dlog p: -2 (on-policy), -coef (target)
    config = _sft_config()
    logp, data = _target_and_sample_batch()
    data["extra_fields"] = NonTensorStack({OFF_POLICY_KEY: True, PREFIX_LEN_KEY: 1}, {OFF_POLICY_KEY: False})
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=2, global_batch_size=2)
    assert assign_sft_counts(data) == (1, 1, 1)
    # sequences [prompt, response]: the response token's log-prob sits at the prompt's position
    loss, _ = luffy_ppo_loss(config, {"log_probs": _nested(list(logp.split([2, 2])))}, data)
    loss.backward()
    assert float(loss) == pytest.approx(-2.0 + SFT_COEF * math.log(2.0), rel=1e-6)
    assert logp.grad.tolist() == pytest.approx([-SFT_COEF, 0.0, -2.0, 0.0])


@pytest.mark.parametrize("progress", [0.0, 0.5, 1.0])
def test_chord_settings_hand_computed(progress):
    # the hand-computed case above with CHORD's knobs: mu = 0.2 + 0.6 (1 + cos(pi t)) / 2 (peak 0.8, valley 0.2,
    # no warm-up) from the samples' recorded progress t; PPO weighted 1 - mu; the target token's NLL
    # weighted p (1 - p) = 0.25 (detached, so its gradient is -mu * 0.25)
    config = _compose_actor(
        "actor_rollout_ref.actor.use_sft_multitask_loss=true", "actor_rollout_ref.actor.sft_loss_coef=0.8",
        "actor_rollout_ref.actor.entropy_coeff=0.0", "actor_rollout_ref.actor.sft_token_weight=p_one_minus_p",
        "actor_rollout_ref.actor.sft_loss_coef_schedule=warmup_cosine",
        "actor_rollout_ref.actor.sft_loss_coef_valley=0.2",
        "actor_rollout_ref.actor.sft_rl_complement=true",
    )
    logp, data = _target_and_sample_batch()
    data["extra_fields"] = NonTensorStack(
        {OFF_POLICY_KEY: True, PREFIX_LEN_KEY: 1, PROGRESS_FIELD: progress},
        {OFF_POLICY_KEY: False, PROGRESS_FIELD: progress},
    )
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=2, global_batch_size=2)
    assign_sft_counts(data)
    loss, metrics = luffy_ppo_loss(config, {"log_probs": _nested(list(logp.split([2, 2])))}, data)
    loss.backward()
    mu = 0.2 + 0.6 * (1 + math.cos(math.pi * progress)) / 2
    assert _value(metrics["actor/sft_loss_coef"]) == pytest.approx(mu)
    assert float(loss) == pytest.approx((1 - mu) * -2.0 + mu * 0.25 * math.log(2.0), rel=1e-6)
    assert logp.grad.tolist() == pytest.approx([-mu * 0.25, 0.0, -2.0 * (1 - mu), 0.0])


def test_sft_multitask_loss_refuses_to_run_without_the_mini_batch_counts():
    config = _sft_config()
    data, model_output, *_ = _micro_batch(seed=6)
    with pytest.raises(ValueError, match="needs the mini-batch's target and on-policy counts"):
        luffy_ppo_loss(config, model_output, data)


def test_counts_of_a_mini_batch():
    data, *_ = _micro_batch(seed=7)
    # targets: 6 + 2 tokens; on-policy: 2 left of sample 1, 5 + 3 of samples 2 and 3, in 3 responses
    assert assign_sft_counts(data) == (8, 10, 3)
    assert tu.get_non_tensor_data(data, key="luffy_target_tokens", default=None) == 8


def test_a_mini_batch_without_targets_reports_no_sft_loss():
    # V1 hands samples over in completion order, so a whole mini-batch can be on-policy samples only
    config = _sft_config()
    data, model_output, *_ = _micro_batch(seed=8)
    data["extra_fields"] = NonTensorStack(*[{OFF_POLICY_KEY: False}] * len(RESPONSE_LENS))
    assert assign_sft_counts(data) == (0, sum(RESPONSE_LENS), len(RESPONSE_LENS))
    loss, metrics = luffy_ppo_loss(config, model_output, data)
    assert "actor/sft_loss" not in metrics and "actor/off_policy_prob" not in metrics
    assert float(loss) == pytest.approx(_value(metrics["actor/pg_loss"]), rel=1e-6)
