"""LUFFY's hydra config: composition over veRL's ppo_trainer, dataclass homes, early errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _compose import compose_luffy
from omegaconf import OmegaConf

import luffy.plugin  # noqa: F401  (registrations, as every veRL process has them)
from luffy.mix_src.config_check import check_luffy_config
from luffy.mix_src.mix_config import LuffyActorConfig, LuffyAlgoConfig, LuffyRolloutConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
# what veRL's own dataclasses need before they build (set by every run script)
BUILDABLE = (
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.rollout.name=hf_cpu",
)


def test_defaults_are_luffys_and_valid():
    cfg = compose_luffy()
    rollout, actor, algo = cfg.actor_rollout_ref.rollout, cfg.actor_rollout_ref.actor, cfg.algorithm
    assert (rollout.n, rollout.n_prefix, rollout.prefix_strategy) == (8, 1, "random")
    assert (rollout.min_prefix_ratio, rollout.max_prefix_ratio, rollout.max_prefix_len) == (0.0, 1.0, 8192)
    assert (rollout.prefix_steps, rollout.prefix_linear_max_ratio, rollout.use_target_lst) == (1000, 0.8, True)
    assert actor.off_policy_reshape_weight == 0.1 and actor.on_policy_reshape_weight == 0.1
    assert rollout.prefix_share_across_samples is False
    assert rollout.agent.default_agent_loop == "luffy_mix_agent"
    assert actor.off_policy_reshape == "no_reshape" and actor.policy_loss.loss_mode == "luffy_mixed"
    assert actor.loss_remove_token_mean is False and actor.loss_remove_clip is False
    assert algo.adv_estimator == "grpo" and algo.grpo_use_std is True
    assert cfg.reward.custom_reward_function.path == "pkg://luffy.mix_src.reward"
    # veRL's own keys are still there (composition, not replacement)
    assert cfg.trainer.use_v1 is True and cfg.trainer.v1.trainer_mode == "sync"
    check_luffy_config(cfg)


def test_grpo_use_std_drives_verls_key():
    cfg = compose_luffy("algorithm.grpo_use_std=false")
    assert cfg.algorithm.norm_adv_by_std_in_grpo is False
    check_luffy_config(cfg)


def test_nodes_build_luffy_dataclasses():
    from verl.utils.config import omega_conf_to_dataclass

    cfg = compose_luffy(
        *BUILDABLE, "actor_rollout_ref.actor.off_policy_reshape=p_div_p_0.1", "actor_rollout_ref.rollout.n_prefix=2"
    )
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    rollout = omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
    algo = omega_conf_to_dataclass(cfg.algorithm)
    assert isinstance(actor, LuffyActorConfig) and actor.off_policy_reshape == "p_div_p_0.1"
    assert isinstance(rollout, LuffyRolloutConfig) and rollout.n_prefix == 2
    assert isinstance(algo, LuffyAlgoConfig) and algo.grpo_use_std is True


def test_dataclass_rejects_bad_value_too():
    from verl.utils.config import omega_conf_to_dataclass

    cfg = compose_luffy(*BUILDABLE)
    node = OmegaConf.merge(cfg.actor_rollout_ref.actor, {"off_max_clip": -1.0})
    with pytest.raises(Exception, match="off_max_clip"):
        omega_conf_to_dataclass(node)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("actor_rollout_ref.actor.off_policy_reshape=bogus", "off_policy_reshape"),
        ("actor_rollout_ref.actor.on_policy_reshape=p_div_p_x", "on_policy_reshape"),
        ("actor_rollout_ref.rollout.n_prefix=9", "n_prefix"),  # n = 8
        ("actor_rollout_ref.rollout.n_prefix=8", "no generated samples"),  # = n, without the SFT loss
        ("actor_rollout_ref.rollout.n_prefix=-1", "n_prefix"),
        ("actor_rollout_ref.rollout.prefix_strategy=cosine", "prefix_strategy"),
        ("actor_rollout_ref.rollout.min_prefix_ratio=0.9", None),  # with max 0.5 below
        ("actor_rollout_ref.rollout.max_prefix_len=0", "max_prefix_len"),
        ("actor_rollout_ref.rollout.prefix_steps=0", "prefix_steps"),
        ("actor_rollout_ref.rollout.prefix_linear_max_ratio=1.5", "prefix_linear_max_ratio"),
        ("actor_rollout_ref.rollout.prefix_strategy=linear_variance", "progress_linear_variance"),
        ("actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean", "loss_agg_mode"),  # with remove token mean
        ("actor_rollout_ref.actor.entropy_loss_scale_factor=0", "entropy_loss_scale_factor"),
        ("actor_rollout_ref.actor.off_min_clip=2.0", "off_min_clip"),  # with off_max_clip 1.0 below
        ("algorithm.adv_estimator=gae", "adv_estimator"),
        ("algorithm.norm_adv_by_std_in_grpo=false", "grpo_use_std"),
        ("algorithm.rollout_correction.bypass_mode=true", "bypass_mode"),
        ("actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent", "default_agent_loop"),
        ("trainer.v1.trainer_mode=fully_async", "trainer_mode"),
        ("algorithm.guidance_gate=hpt", "algorithm.guidance_gate"),
        ("algorithm.guidance_accuracy_threshold=0", "algorithm.guidance_accuracy_threshold"),
        ("algorithm.guidance_max_successes=-1", "algorithm.guidance_max_successes"),
        ("algorithm.guidance_gated_trace_in_stats=maybe", "algorithm.guidance_gated_trace_in_stats"),
        ("actor_rollout_ref.actor.sft_token_weight=phi", "actor_rollout_ref.actor.sft_token_weight"),
        ("actor_rollout_ref.actor.off_policy_token_weight=phi", "actor_rollout_ref.actor.off_policy_token_weight"),
        ("actor_rollout_ref.actor.sft_loss_coef_schedule=cosine", "actor_rollout_ref.actor.sft_loss_coef_schedule"),
        ("actor_rollout_ref.actor.sft_loss_coef_valley=2.0", "actor_rollout_ref.actor.sft_loss_coef_valley"),
        ("actor_rollout_ref.actor.sft_loss_coef_warmup=1.0", "actor_rollout_ref.actor.sft_loss_coef_warmup"),
        ("actor_rollout_ref.actor.sft_token_weight=p", "use_sft_multitask_loss=true"),  # the SFT term is off
    ],
)
def test_bad_values_name_their_key(override, key):
    extra = []
    if "min_prefix_ratio" in override:
        extra, key = ["actor_rollout_ref.rollout.max_prefix_ratio=0.5"], "min_prefix_ratio"
    if "off_min_clip" in override:
        extra = ["actor_rollout_ref.actor.off_max_clip=1.0"]
    if "loss_agg_mode" in override:
        extra = ["actor_rollout_ref.actor.loss_remove_token_mean=true"]
    cfg = compose_luffy(override, *extra)
    with pytest.raises(ValueError, match=key):
        check_luffy_config(cfg)


def test_fixed_prefixes_cannot_be_shared():
    cfg = compose_luffy(
        "actor_rollout_ref.rollout.prefix_strategy=fixed", "actor_rollout_ref.rollout.prefix_share_across_samples=true"
    )
    with pytest.raises(ValueError, match="prefix_share_across_samples"):
        check_luffy_config(cfg)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["actor_rollout_ref.actor.off_policy_reshape=p_div_p_0.1"], "off_policy_reshape='p_div_p_0.1' asks for"),
        (["actor_rollout_ref.actor.off_max_clip=2.0"], "off_max_clip=2.0 asks for"),
        (["actor_rollout_ref.rollout.n_prefix=0"], "needs off-policy targets to train on, but "),
        (["actor_rollout_ref.actor.sft_loss_coef=-1"], "sft_loss_coef=-1 must be a finite number >= 0"),
    ],
)
def test_sft_multitask_loss_refuses_the_off_policy_loss_and_no_targets(overrides, expected):
    cfg = compose_luffy("actor_rollout_ref.actor.use_sft_multitask_loss=true", *overrides)
    with pytest.raises(ValueError, match="use_sft_multitask_loss|sft_loss_coef") as err:
        check_luffy_config(cfg)
    assert expected in str(err.value)


def test_sft_multitask_loss_accepted_with_targets_and_no_shaping():
    cfg = compose_luffy("actor_rollout_ref.actor.use_sft_multitask_loss=true", "algorithm.adv_estimator=grpo_split",
                   *BUILDABLE)
    check_luffy_config(cfg)
    from verl.utils.config import omega_conf_to_dataclass

    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert (actor.use_sft_multitask_loss, actor.sft_loss_coef) == (True, 1.0)


def test_every_slot_a_target_accepted_with_the_sft_loss_only():
    # n_prefix = n: no generated sample, so the SFT term is the whole loss (the toy's SFT run)
    cfg = compose_luffy("actor_rollout_ref.rollout.n_prefix=8", "actor_rollout_ref.actor.use_sft_multitask_loss=true",
                   "algorithm.adv_estimator=grpo_split", *BUILDABLE)
    check_luffy_config(cfg)
    with pytest.raises(ValueError, match="n_prefix=8 equals rollout.n"):
        check_luffy_config(compose_luffy("actor_rollout_ref.rollout.n_prefix=8"))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["algorithm.guidance_gate=accuracy", "actor_rollout_ref.rollout.n_prefix=0"], "it needs 1 <= n_prefix < n"),
        (["algorithm.guidance_gate=successes", "algorithm.guidance_max_successes=7"], "guides every group"),
        (["actor_rollout_ref.actor.use_sft_multitask_loss=true", "actor_rollout_ref.actor.off_policy_token_weight=p"],
         "use actor_rollout_ref.actor.sft_token_weight instead"),
        (["actor_rollout_ref.actor.use_sft_multitask_loss=true", "actor_rollout_ref.actor.sft_rl_complement=true",
          "actor_rollout_ref.actor.sft_loss_coef=1.5"], "must be <= 1"),
    ],
)
def test_successor_settings_that_would_do_nothing_or_harm_are_refused(overrides, expected):
    with pytest.raises(ValueError, match=expected):
        check_luffy_config(compose_luffy(*overrides))


def test_successor_settings_accepted_and_built():
    from verl.utils.config import omega_conf_to_dataclass

    cfg = compose_luffy(
        "algorithm.guidance_gate=accuracy", "algorithm.guidance_accuracy_threshold=0.25",
        "actor_rollout_ref.actor.use_sft_multitask_loss=true", "actor_rollout_ref.actor.sft_token_weight=p_one_minus_p",
        "actor_rollout_ref.actor.sft_loss_coef=0.9", "actor_rollout_ref.actor.sft_loss_coef_schedule=warmup_cosine",
        "actor_rollout_ref.actor.sft_loss_coef_valley=0.05", "actor_rollout_ref.actor.sft_loss_coef_warmup=0.1",
        "actor_rollout_ref.actor.sft_rl_complement=true", "actor_rollout_ref.rollout.prefix_strategy=progress_cosine",
        *BUILDABLE,
    )
    check_luffy_config(cfg)
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    algo = omega_conf_to_dataclass(cfg.algorithm)
    assert (actor.sft_token_weight, actor.sft_loss_coef_schedule, actor.sft_rl_complement) == (
        "p_one_minus_p", "warmup_cosine", True)
    assert (algo.guidance_gate, algo.guidance_accuracy_threshold) == ("accuracy", 0.25)
    check_luffy_config(
        compose_luffy("algorithm.guidance_gate=successes", "actor_rollout_ref.actor.off_policy_token_weight=p")
    )


def test_grpo_split_and_plain_grpo_accepted():
    check_luffy_config(compose_luffy("algorithm.adv_estimator=grpo_split"))
    check_luffy_config(compose_luffy("actor_rollout_ref.rollout.n_prefix=0"))


def _run_main(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, HYDRA_FULL_ERROR="0")
    return subprocess.run(
        [sys.executable, "-m", "luffy.mix_src.main_mix_ppo", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow  # starts the entry point or Ray in a subprocess
def test_entry_point_fails_early_naming_the_key():
    start = time.monotonic()
    proc = _run_main("actor_rollout_ref.actor.off_policy_reshape=bogus")
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    assert "actor_rollout_ref.actor.off_policy_reshape" in proc.stderr
    assert "p_div_p_<gamma>" in proc.stderr  # the accepted forms
    assert "ray init" not in proc.stdout + proc.stderr  # failed before Ray started
    assert elapsed < 240, elapsed  # import of veRL dominates; no Ray, no model


@pytest.mark.slow  # starts the entry point or Ray in a subprocess
def test_entry_point_refuses_sft_multitask_loss_with_shaping_before_ray():
    proc = _run_main(
        "actor_rollout_ref.actor.use_sft_multitask_loss=true", "actor_rollout_ref.actor.off_policy_reshape=p_div_p_0.1"
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: invalid LUFFY run: actor_rollout_ref.actor.use_sft_multitask_loss=true")
    assert "Traceback" not in proc.stderr and "ray init" not in (proc.stdout + proc.stderr).lower()


@pytest.mark.slow  # starts the entry point or Ray in a subprocess
def test_entry_point_rejects_unknown_keys():
    proc = _run_main("actor_rollout_ref.actor.off_policy_reshap=p_div_p_0.1")
    assert proc.returncode != 0
    assert "off_policy_reshap" in proc.stderr


@pytest.mark.slow  # starts the entry point or Ray in a subprocess
def test_entry_point_prints_composed_config():
    proc = _run_main("--cfg", "job")
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = OmegaConf.create(proc.stdout)
    assert cfg.actor_rollout_ref.rollout.n_prefix == 1
    assert cfg.actor_rollout_ref.actor.off_policy_reshape == "no_reshape"


def test_the_tests_compose_helper_gives_what_hydra_composes():
    """``compose_luffy`` (composes once, then applies value overrides) against hydra's own compose."""
    from _compose import _compose_from_scratch

    overrides = (
        "algorithm.grpo_use_std=false", "actor_rollout_ref.rollout.n=abc", "trainer.logger=[console,file]",
        "actor_rollout_ref.actor.off_max_clip=null", "actor_rollout_ref.actor.off_policy_reshape=p_div_p_0.1",
        "+ray_kwargs.ray_init.num_cpus=16", "+trainer.extra_key.inner=1", "++trainer.nnodes=2",
    )
    fast, hydra = compose_luffy(*overrides), _compose_from_scratch(list(overrides))
    assert OmegaConf.to_yaml(fast) == OmegaConf.to_yaml(hydra)
    assert OmegaConf.to_container(fast, resolve=True) == OmegaConf.to_container(hydra, resolve=True)
    with pytest.raises(Exception, match="An item is already at 'trainer.val_before_train'"):  # hydra's own error
        compose_luffy("+trainer.val_before_train=false")
