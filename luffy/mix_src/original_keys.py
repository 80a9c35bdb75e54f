"""LUFFY's original command-line keys: translated to this project's keys, or refused with what to use.

LUFFY's scripts (``exp_scripts/train.sh`` and its siblings in the original repository) pass keys of its
own veRL fork. :func:`translate_overrides` rewrites a hydra override list before hydra sees it
(``main_mix_ppo`` calls it on ``sys.argv``):

* same meaning, other name: renamed (``off_policy_max_clip`` -> ``off_max_clip``, ``rollout.n_val`` ->
  ``rollout.val_kwargs.n``, ...), with LUFFY's ``-1 = off`` turned into ``null``;
* ``use_off_policy_loss``: accepted when it agrees with ``use_sft_multitask_loss`` (which picks the loss
  here) and dropped; both losses at once is refused, as in LUFFY;
* a switch for a feature this project does not have: accepted at LUFFY's default (the feature off) and
  dropped; any other value is refused with a one-line message naming the replacement, or saying the
  feature is not supported;
* every other key passes through unchanged (the keys LUFFY and veRL 0.9.1 share, and LUFFY's keys that
  keep their names here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

ACTOR = "actor_rollout_ref.actor."
ROLLOUT = "actor_rollout_ref.rollout."
REF = "actor_rollout_ref.ref."

Handler = Callable[[str, str], list[str]]


def _value(text: str) -> Any:
    """A command-line value as hydra would read it, for comparisons: bool, None, int, float or str."""
    raw = text.strip().strip("'\"")
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none", "~"):
        return None
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def _rename(new_key: str, minus_one_is_null: bool = False) -> Handler:
    def handle(key: str, value: str) -> list[str]:
        if minus_one_is_null and _value(value) == -1:
            value = "null"
        return [f"{new_key}={value}"]

    return handle


def _only_default(default: Any, instead: str) -> Handler:
    """Accepted (and dropped) at LUFFY's default, which leaves the feature off; refused otherwise."""

    def handle(key: str, value: str) -> list[str]:
        if _value(value) == default:
            return []
        raise ValueError(f"{key}={value} is not supported: {instead} (only its default {default!r} is accepted)")

    return handle


def _clip_upper_bound(key: str, value: str) -> list[str]:
    bound = _value(value)
    if isinstance(bound, int | float) and not isinstance(bound, bool) and bound <= 1.0:
        return []  # max(bound, 1 + clip_ratio) = 1 + clip_ratio: no effect, as in LUFFY
    if isinstance(bound, int | float) and not isinstance(bound, bool):
        raise ValueError(
            f"{key}={value}: use {ACTOR}clip_ratio_high={bound - 1:g} (the on-policy upper clip bound is "
            "1 + clip_ratio_high)"
        )
    raise ValueError(f"{key}={value} must be a number")


def _n_prefix(key: str, value: str) -> list[str]:
    if _value(value) == -1:
        raise ValueError(
            f"{key}=-1 (every sample guided) is not supported: a group needs on-policy samples; set "
            f"{ROLLOUT}n_prefix to the number of off-policy samples per prompt, below {ROLLOUT}n"
        )
    return [f"{key}={value}"]


def _reward_impl_version(key: str, value: str) -> list[str]:
    if _value(value) == 3:
        return []  # LUFFY's math-verify reward, which is this project's reward (luffy.mix_src.reward)
    raise ValueError(
        f"{key}={value} is not supported: the reward is luffy.mix_src.reward (math-verify on the answer after "
        "the reasoning, LUFFY's reward_impl_version=3); set reward.custom_reward_function for another one"
    )


def _use_ref(key: str, value: str) -> list[str]:
    if _value(value) is False:
        return []  # veRL builds no reference model unless a KL term needs one
    raise ValueError(
        f"{key}={value}: veRL builds the reference model when {ACTOR}use_kl_loss=true or "
        "algorithm.use_kl_in_reward=true; drop this key"
    )


def _resume_from_path(key: str, value: str) -> list[str]:
    return [] if _value(value) is False else [f"{key}={value}"]


RULES: dict[str, Handler] = {
    # data
    "data.reward_impl_version": _reward_impl_version,
    "data.filter_targets": _only_default(False, "targets are filtered by data/prepare_train.py"),
    "data.sample_target_ratio": _only_default(1.0, "every prompt carries its target"),
    "data.filter_accuracy": _only_default(False, "accuracy filtering is not implemented"),
    "data.accuracy_lower_bound": _only_default(0.0, "accuracy filtering is not implemented"),
    "data.accuracy_upper_bound": _only_default(1.0, "accuracy filtering is not implemented"),
    "data.add_tgt_with_acc": _only_default(False, "targets are added to every training prompt"),
    "data.add_tgt_acc_upper_bound": _only_default(0.5, "targets are added to every training prompt"),
    "data.disable_truncation_advantage": _only_default(False, "not implemented"),
    # actor: the loss
    ACTOR + "off_policy_max_clip": _rename(ACTOR + "off_max_clip", minus_one_is_null=True),
    ACTOR + "off_policy_min_clip": _rename(ACTOR + "off_min_clip", minus_one_is_null=True),
    ACTOR + "all_max_clip": _rename(ACTOR + "all_max_clip", minus_one_is_null=True),
    ACTOR + "clip_upper_bound": _clip_upper_bound,
    ACTOR + "off_policy_loss_impl": _only_default("token", "only the token-level loss exists"),
    ACTOR + "off_policy_normalize": _only_default(False, "not implemented"),
    ACTOR + "use_off_policy_probs": _only_default(False, "the data carries no teacher token probabilities"),
    ACTOR + "use_off_policy_clip": _only_default(
        False, f"bound the shaped ratio with {ACTOR}off_max_clip/off_min_clip"
    ),
    ACTOR + "off_policy_cliprange": _only_default(0.2, f"bound the shaped ratio with {ACTOR}off_max_clip/off_min_clip"),
    ACTOR + "use_sft_prefix_reward": _only_default(False, "prefix rewards are not implemented"),
    ACTOR + "use_sft_reward": _only_default(False, "prefix rewards are not implemented"),
    ACTOR + "sft_prefix_reward_weight": _only_default(1.0, "prefix rewards are not implemented"),
    ACTOR + "use_ppo_kl_loss": _only_default(False, f"use {ACTOR}use_kl_loss (a KL to the reference model)"),
    ACTOR + "ppo_kl_loss_coef": _only_default(0.01, f"use {ACTOR}use_kl_loss (a KL to the reference model)"),
    ACTOR + "use_adaptive_temperature": _only_default(False, "adaptive entropy coefficients are not implemented"),
    ACTOR + "use_adaptive_temperature_fixed": _only_default(False, "adaptive entropy coefficients are not implemented"),
    ACTOR + "adaptive_temperature_clip": _only_default(-1, "adaptive entropy coefficients are not implemented"),
    ACTOR + "adaptive_temperature_target_entropy": _only_default(
        1.0, "adaptive entropy coefficients are not implemented"
    ),
    ACTOR + "alpha_lr": _only_default(0.01, "adaptive entropy coefficients are not implemented"),
    ACTOR + "debug": _only_default(False, "no debug mode"),
    ACTOR + "use_target_lst": _rename(ROLLOUT + "use_target_lst"),
    ACTOR + "fsdp_config.grad_offload": _only_default(
        False, f"use {ACTOR}fsdp_config.param_offload / optimizer_offload (veRL 0.9.1 has no grad_offload)"
    ),
    REF + "use_ref": _use_ref,
    # rollout
    ROLLOUT + "val_temperature": _rename(ROLLOUT + "val_kwargs.temperature"),
    ROLLOUT + "n_val": _rename(ROLLOUT + "val_kwargs.n"),
    ROLLOUT + "n_prefix": _n_prefix,
    ROLLOUT + "prefix_lienar_max_var": _rename(ROLLOUT + "prefix_linear_max_var"),
    ROLLOUT + "prefix_reward_strategy": _only_default("all", "prefix rewards are not implemented"),
    ROLLOUT + "prefix_reward_weight_alpha": _only_default(1.0, "prefix rewards are not implemented"),
    ROLLOUT + "prefix_reward_weight_beta": _only_default(1.0, "prefix rewards are not implemented"),
    # algorithm
    "algorithm.surprisal_base": _only_default(0.0, "not implemented"),
    # trainer
    "trainer.max_optim_to_keep": _rename("trainer.max_actor_ckpt_to_keep"),
    "trainer.resume_from_path": _resume_from_path,
    "trainer.rejection_sample": _only_default(False, "use veRL's algorithm.filter_groups (DAPO dynamic sampling)"),
    "trainer.rejection_sample_multiplier": _only_default(2, "use veRL's algorithm.filter_groups"),
    "trainer.debug": _only_default(False, "no debug mode"),
    "trainer.add_full_target_when_none": _only_default(False, "not implemented"),
    "trainer.skip_valid_mask": _only_default(False, "not implemented"),
    "trainer.acc_rebatch": _only_default(False, "not implemented"),
    "trainer.skip_by_step": _only_default(False, "not implemented"),
}
# Keys LUFFY's scripts add with '+' that veRL 0.9.1's config already has ('+' would be an error).
_ALREADY_PRESENT = ("trainer.val_before_train",)


def _use_off_policy_loss(key: str, value: str, sft_multitask: bool) -> list[str]:
    """LUFFY's switch between its off-policy loss and the SFT multitask loss: one of the two, dropped."""
    wanted = _value(value)
    if wanted is (not sft_multitask):
        return []  # the loss this project picks from use_sft_multitask_loss
    if wanted is True:
        raise ValueError(
            f"{key}=True together with {ACTOR}use_sft_multitask_loss=True: one loss or the other (LUFFY refuses "
            "both too); drop this key for the SFT multitask loss"
        )
    if wanted is False:
        raise ValueError(
            f"{key}=False is not supported without {ACTOR}use_sft_multitask_loss=True: off-policy tokens use "
            f"LUFFY's loss; {ROLLOUT}n_prefix=0 gives plain GRPO"
        )
    raise ValueError(f"{key}={value} must be True or False")


def translate_overrides(overrides: Sequence[str]) -> list[str]:
    """Rewrite LUFFY's original keys in a hydra override list (other arguments pass through).

    Args:
        overrides: command-line arguments, e.g. ``sys.argv[1:]``.

    Returns:
        The overrides hydra should see.

    Raises:
        ValueError: for an original key whose value this project cannot honour, naming the key and what
            to use instead.
    """
    out: list[str] = []
    sft_multitask = any(
        arg.split("=", 1)[0].lstrip("+") == ACTOR + "use_sft_multitask_loss" and _value(arg.split("=", 1)[1]) is True
        for arg in overrides
        if "=" in arg
    )
    for arg in overrides:
        if arg.startswith("-") or "=" not in arg or arg.startswith("~"):
            out.append(arg)
            continue
        key, value = arg.split("=", 1)
        bare = key.lstrip("+")
        if bare == ACTOR + "use_off_policy_loss":
            out.extend(_use_off_policy_loss(bare, value, sft_multitask))
        elif bare in RULES:
            out.extend(RULES[bare](bare, value))
        elif bare in _ALREADY_PRESENT:
            out.append(f"{bare}={value}")
        else:
            out.append(arg)
    return out
