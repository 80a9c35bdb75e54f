"""LUFFY's own command lines compose here; its keys are honoured or refused with the replacement."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _compose import compose_luffy
from verl.utils.config import omega_conf_to_dataclass

import luffy.plugin  # noqa: F401
from luffy.mix_src.config_check import check_luffy_config
from luffy.mix_src.original_keys import translate_overrides

ROOT = Path(__file__).resolve().parents[1]

# The overrides of the original repository's exp_scripts/train.sh (LUFFY's recipe), with its shell
# variables filled in.
ORIGINAL_TRAIN_SH = [
    "algorithm.adv_estimator=grpo",
    "data.train_files=/data/openr1.parquet",
    "data.val_files=/data/valid.parquet",
    "data.train_batch_size=128",
    "data.val_batch_size=512",
    "data.max_prompt_length=1024",
    "data.max_response_length=8192",
    "actor_rollout_ref.model.path=/models/Qwen2.5-Math-7B-16k-think",
    "actor_rollout_ref.actor.optim.lr=1e-6",
    "actor_rollout_ref.model.use_remove_padding=True",
    "actor_rollout_ref.actor.ppo_mini_batch_size=64",
    "actor_rollout_ref.actor.ppo_micro_batch_size=64",
    "actor_rollout_ref.actor.use_dynamic_bsz=True",
    "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=32768",
    "actor_rollout_ref.actor.kl_loss_coef=0.00",
    "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
    "actor_rollout_ref.actor.ulysses_sequence_parallel_size=1",
    "actor_rollout_ref.model.enable_gradient_checkpointing=True",
    "actor_rollout_ref.actor.fsdp_config.param_offload=False",
    "actor_rollout_ref.actor.fsdp_config.grad_offload=False",
    "actor_rollout_ref.actor.fsdp_config.optimizer_offload=False",
    "actor_rollout_ref.rollout.tensor_model_parallel_size=2",
    "actor_rollout_ref.rollout.name=vllm",
    "actor_rollout_ref.rollout.temperature=1.0",
    "actor_rollout_ref.rollout.val_temperature=0.6",
    "actor_rollout_ref.rollout.gpu_memory_utilization=0.80",
    "actor_rollout_ref.rollout.n=8",
    "actor_rollout_ref.rollout.n_val=1",
    "actor_rollout_ref.ref.fsdp_config.param_offload=True",
    "actor_rollout_ref.rollout.max_prefix_len=8192",
    "algorithm.kl_ctrl.kl_coef=0.000",
    "actor_rollout_ref.actor.entropy_coeff=0.001",
    "trainer.critic_warmup=0",
    "trainer.logger=['console','wandb']",
    "trainer.project_name=luffy-math-test",
    "trainer.experiment_name=LUFFY_TEST",
    "+trainer.val_before_train=False",
    "trainer.n_gpus_per_node=8",
    "trainer.nnodes=1",
    "trainer.save_freq=50",
    "trainer.test_freq=10",
    "actor_rollout_ref.actor.use_kl_loss=False",
    "actor_rollout_ref.actor.use_sft_prefix_reward=False",
    "actor_rollout_ref.rollout.prefix_share_across_samples=False",
    "actor_rollout_ref.rollout.prefix_strategy=random",
    "actor_rollout_ref.rollout.n_prefix=1",
    "actor_rollout_ref.rollout.min_prefix_ratio=1.0",
    "actor_rollout_ref.rollout.max_prefix_ratio=1.0",
    "actor_rollout_ref.rollout.prefix_reward_weight_alpha=1.0",
    "actor_rollout_ref.ref.use_ref=False",
    "actor_rollout_ref.actor.use_off_policy_loss=True",
    "actor_rollout_ref.actor.off_policy_normalize=False",
    'actor_rollout_ref.actor.off_policy_reshape="p_div_p_0.1"',
    "actor_rollout_ref.actor.off_policy_loss_impl=token",
    "algorithm.grpo_use_std=False",
    "actor_rollout_ref.actor.loss_remove_token_mean=True",
    "actor_rollout_ref.actor.loss_remove_clip=True",
    "data.reward_impl_version=3",
    "trainer.max_optim_to_keep=2",
    "data.shuffle=True",
    "trainer.default_hdfs_dir=null",
    "trainer.total_epochs=30",
]

# The original's exp_scripts/train_rl_sft_loss.sh: the same command line with grpo_split advantages, no
# off-policy loss keys, and the SFT multitask loss switched on.
_OFF_POLICY_LOSS_KEYS = ("off_policy_normalize", "off_policy_reshape", "off_policy_loss_impl", "use_off_policy_loss")
ORIGINAL_TRAIN_RL_SFT_LOSS_SH = [
    "algorithm.adv_estimator=grpo_split" if o.startswith("algorithm.adv_estimator=") else o
    for o in ORIGINAL_TRAIN_SH
    if o.split("=")[0].rsplit(".", 1)[-1] not in _OFF_POLICY_LOSS_KEYS
] + ["actor_rollout_ref.actor.use_off_policy_loss=False", "actor_rollout_ref.actor.use_sft_multitask_loss=True"]


def _compose(overrides):
    return compose_luffy(*translate_overrides(overrides))


def test_the_original_recipe_command_line_composes_and_passes_the_checks():
    cfg = _compose(ORIGINAL_TRAIN_SH)
    check_luffy_config(cfg)
    actor = cfg.actor_rollout_ref.actor
    assert actor.off_policy_reshape == "p_div_p_0.1" and actor.entropy_coeff == 0.001
    assert cfg.actor_rollout_ref.rollout.val_kwargs.temperature == 0.6
    assert cfg.actor_rollout_ref.rollout.val_kwargs.n == 1
    assert cfg.trainer.max_actor_ckpt_to_keep == 2 and cfg.trainer.val_before_train is False
    # loss_remove_token_mean: veRL's seq-mean-token-sum-norm over the configured 8192 tokens
    built = omega_conf_to_dataclass(actor)
    assert (built.loss_agg_mode, built.loss_scale_factor) == ("seq-mean-token-sum-norm", 8192)
    assert built.off_policy_reshape_weight == 0.1  # LUFFY's default


def test_the_original_rl_with_sft_loss_command_line_composes_and_passes_the_checks():
    cfg = _compose(ORIGINAL_TRAIN_RL_SFT_LOSS_SH)
    check_luffy_config(cfg)
    built = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    assert (built.use_sft_multitask_loss, built.sft_loss_coef, built.off_policy_reshape) == (True, 1.0, "no_reshape")
    assert cfg.algorithm.adv_estimator == "grpo_split" and cfg.actor_rollout_ref.rollout.n_prefix == 1
    assert (built.loss_agg_mode, built.loss_scale_factor) == ("seq-mean-token-sum-norm", 8192)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["actor_rollout_ref.actor.use_off_policy_loss=True", "actor_rollout_ref.actor.use_sft_multitask_loss=True"],
         "one loss or the other"),
        (["actor_rollout_ref.actor.use_off_policy_loss=False"], "not supported without"),
    ],
)
def test_use_off_policy_loss_must_agree_with_the_sft_switch(overrides, message):
    with pytest.raises(ValueError, match=message) as err:
        translate_overrides(overrides)
    assert "actor_rollout_ref.actor.use_off_policy_loss" in str(err.value)
    assert translate_overrides(["actor_rollout_ref.actor.use_off_policy_loss=True"]) == []


def test_the_original_on_policy_command_line_composes():
    # exp_scripts/train_on_policy.sh: one guided slot with a zero-length prefix, i.e. all generated
    lines = [o for o in ORIGINAL_TRAIN_SH if "prefix_ratio" not in o and "loss_remove_clip" not in o]
    lines += ["actor_rollout_ref.rollout.min_prefix_ratio=0.0", "actor_rollout_ref.rollout.max_prefix_ratio=0.0"]
    check_luffy_config(_compose(lines))


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("actor_rollout_ref.actor.off_policy_max_clip=-1", "off_max_clip", None),
        ("actor_rollout_ref.actor.off_policy_max_clip=2.5", "off_max_clip", 2.5),
        ("actor_rollout_ref.actor.off_policy_min_clip=0.1", "off_min_clip", 0.1),
        ("actor_rollout_ref.actor.all_max_clip=-1", "all_max_clip", None),
        ("actor_rollout_ref.actor.all_max_clip=0.9", "all_max_clip", 0.9),
    ],
)
def test_minus_one_means_off(override, key, expected):
    cfg = _compose([override])
    assert cfg.actor_rollout_ref.actor[key] == expected
    check_luffy_config(cfg)


def test_original_prefix_keys_reach_the_rollout():
    cfg = _compose(
        [
            "actor_rollout_ref.rollout.prefix_strategy=linear_max",
            "actor_rollout_ref.rollout.prefix_steps=300",
            "actor_rollout_ref.rollout.prefix_linear_max_ratio=0.5",
            "actor_rollout_ref.actor.use_target_lst=False",
        ]
    )
    rollout = cfg.actor_rollout_ref.rollout
    assert (rollout.prefix_strategy, rollout.prefix_steps, rollout.prefix_linear_max_ratio) == ("linear_max", 300, 0.5)
    assert rollout.use_target_lst is False
    check_luffy_config(cfg)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("actor_rollout_ref.actor.off_policy_loss_impl=seq", "only the token-level loss"),
        ("actor_rollout_ref.actor.use_off_policy_clip=True", "off_max_clip/off_min_clip"),
        ("actor_rollout_ref.actor.clip_upper_bound=1.28", "clip_ratio_high=0.28"),
        ("actor_rollout_ref.rollout.n_prefix=-1", "n_prefix=-1 (every sample guided) is not supported"),
        ("data.reward_impl_version=0", "reward_impl_version=3"),
        ("actor_rollout_ref.ref.use_ref=True", "use_kl_loss=true"),
        ("actor_rollout_ref.actor.fsdp_config.grad_offload=True", "optimizer_offload"),
    ],
)
def test_unsupported_original_values_are_refused_with_the_replacement(override, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        translate_overrides([override])
    assert override.split("=")[0] in str(err.value)


def test_hydra_flags_and_plain_keys_pass_through():
    args = ["--cfg", "job", "trainer.total_epochs=1", "~trainer.logger", "+data.extra=1"]
    assert translate_overrides(args) == args


@pytest.mark.slow  # starts the entry point or Ray in a subprocess
def test_refusal_happens_before_ray_starts():
    result = subprocess.run(
        [sys.executable, "-m", "luffy.mix_src.main_mix_ppo", "actor_rollout_ref.actor.use_off_policy_probs=True"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 2
    expected = "error: invalid LUFFY run: actor_rollout_ref.actor.use_off_policy_probs=True is not supported"
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert "ray" not in result.stderr.lower()
