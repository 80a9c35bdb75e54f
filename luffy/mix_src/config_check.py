"""Early checks of LUFFY's config keys: each failure names the key, the rule and the accepted forms.

:func:`check_luffy_config` runs on the composed hydra config in ``main_mix_ppo`` before Ray starts;
the per-node checks also run in the dataclasses of :mod:`luffy.mix_src.mix_config`, so a worker that
builds its config from an edited node fails the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from luffy.mix_src.core_algos import luffy_loss_agg_mode
from luffy.mix_src.guidance import GUIDANCE_GATES, SFT_COEF_SCHEDULES
from luffy.mix_src.prefix import check_prefix_strategy
from luffy.mix_src.reshape import TOKEN_WEIGHTS, Reshape

LUFFY_AGENT_LOOP = "luffy_mix_agent"
ADV_ESTIMATORS = ("grpo", "grpo_split")
RESHAPE_KEYS = ("off_policy_reshape", "on_policy_reshape")
CLIP_KEYS = ("off_max_clip", "off_min_clip", "all_max_clip")
#: Smallest accepted gamma of ``p_div_p_<gamma>``: below it f(p) = p / (p + gamma) is ~1 for every token
#: the policy can sample and the shaped weight gamma p / (p + gamma)^2 vanishes (and in float32 a gamma
#: under ~1e-38 is 0 outright), so the off-policy term stops training.
MIN_RESHAPE_GAMMA = 1e-6


def _get(node: Any, key: str) -> Any:
    return node.get(key) if isinstance(node, Mapping) or hasattr(node, "get") else getattr(node, key)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_actor_keys(actor: Any, prefix: str = "actor_rollout_ref.actor") -> tuple[Reshape, Reshape]:
    """Validate LUFFY's loss keys on the actor node (DictConfig or dataclass).

    Returns:
        ``(off_reshape, on_reshape)``: the two reshapes parsed once (:meth:`Reshape.parse`).

    Raises:
        ValueError: naming the first bad key and its accepted values.
    """
    reshapes = []
    for key in RESHAPE_KEYS:
        for knob in (f"{key}_weight", f"{key}_pow_exp"):
            if not _is_number(_get(actor, knob)):
                raise ValueError(f"{prefix}.{knob}={_get(actor, knob)!r} must be a finite number")
        try:
            reshapes.append(
                Reshape.parse(_get(actor, key), _get(actor, f"{key}_weight"), _get(actor, f"{key}_pow_exp"))
            )
        except (ValueError, TypeError) as err:
            raise ValueError(f"{prefix}.{key}: {err}") from None
    for key in CLIP_KEYS:
        value = _get(actor, key)
        if value is not None and not (_is_number(value) and value > 0):
            raise ValueError(f"{prefix}.{key}={value!r} must be null (no clip) or a positive number")
    off_min, off_max = _get(actor, "off_min_clip"), _get(actor, "off_max_clip")
    if off_min is not None and off_max is not None and off_min > off_max:
        raise ValueError(f"{prefix}.off_min_clip={off_min} must be <= {prefix}.off_max_clip={off_max}")
    for key in ("loss_remove_token_mean", "loss_remove_clip"):
        if not _is_bool(_get(actor, key)):
            raise ValueError(f"{prefix}.{key}={_get(actor, key)!r} must be true or false")
    try:
        luffy_loss_agg_mode(_get(actor, "loss_agg_mode"), _get(actor, "loss_remove_token_mean"))
    except ValueError as err:
        raise ValueError(f"{prefix}: {err}; leave {prefix}.loss_agg_mode at token-mean") from None
    for key in ("max_response_length", "entropy_loss_scale_factor"):
        value = _get(actor, key)
        if not (_is_number(value) and value > 0):
            raise ValueError(f"{prefix}.{key}={value!r} must be a positive number of tokens")
    check_sft_multitask_keys(actor, prefix)
    off_reshape, on_reshape = reshapes
    return off_reshape, on_reshape


def check_sft_multitask_keys(actor: Any, prefix: str = "actor_rollout_ref.actor") -> None:
    """``use_sft_multitask_loss`` and ``sft_loss_coef``; the SFT loss excludes the off-policy loss's knobs.

    Raises:
        ValueError: naming the key; with the SFT loss on, any setting of the shaped off-policy loss
            (it would silently do nothing).
    """
    use_sft = _get(actor, "use_sft_multitask_loss")
    if not _is_bool(use_sft):
        raise ValueError(f"{prefix}.use_sft_multitask_loss={use_sft!r} must be true or false")
    coef = _get(actor, "sft_loss_coef")
    if not (_is_number(coef) and coef >= 0):
        raise ValueError(f"{prefix}.sft_loss_coef={coef!r} must be a finite number >= 0")
    check_successor_actor_keys(actor, prefix)
    if not use_sft:
        return
    asked = [f"off_policy_reshape={_get(actor, 'off_policy_reshape')!r}"] if _get(
        actor, "off_policy_reshape"
    ) != "no_reshape" else []
    asked += [f"{key}={_get(actor, key)!r}" for key in CLIP_KEYS if _get(actor, key) is not None]
    if asked:
        raise ValueError(
            f"{prefix}.use_sft_multitask_loss=true trains the targets with an SFT loss instead of the shaped "
            f"off-policy loss, but {prefix}.{asked[0]} asks for that loss; leave off_policy_reshape=no_reshape and "
            "off_max_clip/off_min_clip/all_max_clip null, or set use_sft_multitask_loss=false (one loss or the other)"
        )


def check_successor_actor_keys(actor: Any, prefix: str = "actor_rollout_ref.actor") -> None:
    """The token weights and the SFT coefficient's schedule (CHORD; ``docs/successors.md``).

    Raises:
        ValueError: naming the key: an unknown name, a number out of range, or a setting of the SFT
            term without ``use_sft_multitask_loss`` (or of the off-policy term with it), which would do nothing.
    """
    use_sft = _get(actor, "use_sft_multitask_loss")
    for key in ("sft_token_weight", "off_policy_token_weight"):
        if _get(actor, key) not in TOKEN_WEIGHTS:
            raise ValueError(f"{prefix}.{key}={_get(actor, key)!r} is not one of {', '.join(TOKEN_WEIGHTS)}")
    schedule = _get(actor, "sft_loss_coef_schedule")
    if schedule not in SFT_COEF_SCHEDULES:
        raise ValueError(f"{prefix}.sft_loss_coef_schedule={schedule!r} is not one of {', '.join(SFT_COEF_SCHEDULES)}")
    valley, warmup = _get(actor, "sft_loss_coef_valley"), _get(actor, "sft_loss_coef_warmup")
    if not (_is_number(valley) and 0 <= valley <= _get(actor, "sft_loss_coef")):
        raise ValueError(f"{prefix}.sft_loss_coef_valley={valley!r} must be a number in [0, sft_loss_coef]")
    if not (_is_number(warmup) and 0 <= warmup < 1):
        raise ValueError(f"{prefix}.sft_loss_coef_warmup={warmup!r} must be a fraction of training in [0, 1)")
    complement = _get(actor, "sft_rl_complement")
    if not _is_bool(complement):
        raise ValueError(f"{prefix}.sft_rl_complement={complement!r} must be true or false")
    if complement and _get(actor, "sft_loss_coef") > 1:
        raise ValueError(
            f"{prefix}.sft_rl_complement=true weights the PPO term 1 - mu, so {prefix}.sft_loss_coef (the peak mu) "
            f"must be <= 1, got {_get(actor, 'sft_loss_coef')}"
        )
    sft_only = [
        f"{key}={_get(actor, key)!r}"
        for key, default in (("sft_token_weight", "none"), ("sft_loss_coef_schedule", "constant"),
                             ("sft_rl_complement", False))
        if _get(actor, key) != default
    ]
    if sft_only and not use_sft:
        raise ValueError(
            f"{prefix}.{sft_only[0]} shapes the SFT term, which is off; set {prefix}.use_sft_multitask_loss=true"
        )
    if use_sft and _get(actor, "off_policy_token_weight") != "none":
        raise ValueError(
            f"{prefix}.off_policy_token_weight={_get(actor, 'off_policy_token_weight')!r} weights the shaped "
            f"off-policy term, which use_sft_multitask_loss=true replaces; use {prefix}.sft_token_weight instead"
        )


def check_guidance_keys(algorithm: Any, prefix: str = "algorithm") -> None:
    """The per-group guidance gate's keys (``guidance.py``).

    Raises:
        ValueError: naming the key.
    """
    gate = _get(algorithm, "guidance_gate")
    if gate not in GUIDANCE_GATES:
        raise ValueError(f"{prefix}.guidance_gate={gate!r} is not one of {', '.join(GUIDANCE_GATES)}")
    threshold = _get(algorithm, "guidance_accuracy_threshold")
    if not (_is_number(threshold) and 0 < threshold <= 1):
        raise ValueError(
            f"{prefix}.guidance_accuracy_threshold={threshold!r} must be a number in (0, 1] (0 would never guide)"
        )
    k = _get(algorithm, "guidance_max_successes")
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ValueError(f"{prefix}.guidance_max_successes={k!r} must be an integer >= 0")
    if not _is_bool(_get(algorithm, "guidance_gated_trace_in_stats")):
        raise ValueError(
            f"{prefix}.guidance_gated_trace_in_stats={_get(algorithm, 'guidance_gated_trace_in_stats')!r} "
            "must be true or false"
        )


def check_guidance_run(config: Any) -> None:
    """The gate needs trace slots and generated samples to judge them by.

    Raises:
        ValueError: naming ``algorithm.guidance_gate`` and the rollout setting that defeats it.
    """
    gate = config.algorithm.get("guidance_gate", "none")
    if gate == "none":
        return
    rollout = config.actor_rollout_ref.rollout
    generated = rollout.n - rollout.n_prefix
    if rollout.n_prefix == 0 or generated == 0:
        raise ValueError(
            f"algorithm.guidance_gate={gate} judges each group's traces by its generated samples, but "
            f"actor_rollout_ref.rollout.n={rollout.n}, n_prefix={rollout.n_prefix}; it needs 1 <= n_prefix < n"
        )
    if gate == "successes" and config.algorithm.guidance_max_successes >= generated:
        raise ValueError(
            f"algorithm.guidance_max_successes={config.algorithm.guidance_max_successes} guides every group (a group "
            f"has {generated} generated samples); set it below {generated}, or algorithm.guidance_gate=none"
        )


def check_rollout_keys(rollout: Any, prefix: str = "actor_rollout_ref.rollout") -> None:
    """Validate LUFFY's mixing keys on the rollout node (DictConfig or dataclass).

    Raises:
        ValueError: naming the first bad key and its accepted values.
    """
    n, n_prefix = _get(rollout, "n"), _get(rollout, "n_prefix")
    if not isinstance(n_prefix, int) or isinstance(n_prefix, bool) or n_prefix < 0:
        raise ValueError(f"{prefix}.n_prefix={n_prefix!r} must be an integer >= 0 (0 = plain GRPO)")
    if n_prefix > n:
        raise ValueError(
            f"{prefix}.n_prefix={n_prefix} must be <= {prefix}.n={n}; a group holds n - n_prefix "
            "generated samples plus n_prefix off-policy targets"
        )
    strategy = _get(rollout, "prefix_strategy")
    try:
        check_prefix_strategy(strategy)
    except ValueError as err:
        raise ValueError(str(err).replace("actor_rollout_ref.rollout", prefix)) from None
    if strategy == "fixed" and _get(rollout, "prefix_share_across_samples") is True:
        raise ValueError(
            f"{prefix}.prefix_strategy=fixed gives each off-policy slot its own ratio; it cannot be combined "
            f"with {prefix}.prefix_share_across_samples=true (LUFFY refuses it too)"
        )
    steps = _get(rollout, "prefix_steps")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"{prefix}.prefix_steps={steps!r} must be a positive number of training steps")
    cap = _get(rollout, "prefix_linear_max_ratio")
    if not (_is_number(cap) and 0.0 <= cap <= 1.0):
        raise ValueError(f"{prefix}.prefix_linear_max_ratio={cap!r} must be a number in [0, 1]")
    lo, hi = _get(rollout, "min_prefix_ratio"), _get(rollout, "max_prefix_ratio")
    if not (_is_number(lo) and _is_number(hi) and 0.0 <= lo <= hi <= 1.0):
        raise ValueError(
            f"{prefix}.min_prefix_ratio={lo!r}, {prefix}.max_prefix_ratio={hi!r}: need "
            "0 <= min_prefix_ratio <= max_prefix_ratio <= 1 (1.0 = whole trace)"
        )
    max_len = _get(rollout, "max_prefix_len")
    if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 1:
        raise ValueError(f"{prefix}.max_prefix_len={max_len!r} must be a positive number of tokens")
    for key in ("prefix_share_across_samples", "use_target_lst"):
        if not _is_bool(_get(rollout, key)):
            raise ValueError(f"{prefix}.{key}={_get(rollout, key)!r} must be true or false")


def check_algorithm_keys(algorithm: Any, prefix: str = "algorithm") -> None:
    """Validate ``grpo_use_std`` and its agreement with veRL's ``norm_adv_by_std_in_grpo``.

    Raises:
        ValueError: naming the key.
    """
    use_std = _get(algorithm, "grpo_use_std")
    if not _is_bool(use_std):
        raise ValueError(f"{prefix}.grpo_use_std={use_std!r} must be true or false")
    if _get(algorithm, "norm_adv_by_std_in_grpo") != use_std:
        raise ValueError(
            f"{prefix}.norm_adv_by_std_in_grpo disagrees with {prefix}.grpo_use_std={use_std}; "
            f"set {prefix}.grpo_use_std only (the veRL key follows it)"
        )
    check_guidance_keys(algorithm, prefix)


def _int_at_least(node: Any, key: str, prefix: str, low: int) -> None:
    value = _get(node, key)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{prefix}.{key}={value!r} must be an integer >= {low}")


def check_types_and_ranges(config: Any) -> None:
    """Types and ranges of the LUFFY keys whose legal-looking values are certainly wrong.

    Runs before the rule checks below, so a string or a fraction where an integer belongs is named
    here instead of failing inside a comparison: ``rollout.n`` an integer >= 1; reshape weights and
    ``pow`` exponents finite and > 0 (0 switches the term off, a negative exponent explodes as p -> 0);
    ``p_div_p_<gamma>`` with gamma >= ``MIN_RESHAPE_GAMMA``.

    Raises:
        ValueError: naming the key, its value and the accepted range.
    """
    arr = config.actor_rollout_ref
    _int_at_least(arr.rollout, "n", "actor_rollout_ref.rollout", 1)
    _int_at_least(arr.rollout, "n_prefix", "actor_rollout_ref.rollout", 0)
    actor, prefix = arr.actor, "actor_rollout_ref.actor"
    for side in ("off", "on"):
        for key in (f"{side}_policy_reshape_weight", f"{side}_policy_reshape_pow_exp"):
            value = _get(actor, key)
            if not (_is_number(value) and value > 0):
                raise ValueError(f"{prefix}.{key}={value!r} must be a finite number > 0")
        name = _get(actor, f"{side}_policy_reshape")
        try:
            reshape = Reshape.parse(name)
        except (ValueError, TypeError):
            continue  # check_actor_keys names the accepted forms
        if reshape.kind == "p_div_p" and reshape.gamma < MIN_RESHAPE_GAMMA:
            raise ValueError(
                f"{prefix}.{side}_policy_reshape={name!r}: gamma must be >= {MIN_RESHAPE_GAMMA:g} (with a "
                "smaller gamma p/(p+gamma) is ~1 for every token and the shaped gradient vanishes)"
            )


@dataclass(frozen=True)
class Field:
    """A veRL key LUFFY's run reads as a number: its type, its bounds and whether null means "unset"."""

    key: str
    kind: type  # int or float (an int is accepted where a float belongs)
    low: float
    high: float | None = None
    nullable: bool = False
    low_open: bool = False  # low itself is refused
    note: str = ""

    def problem(self, value: Any) -> str | None:
        """Why ``value`` does not fit, or None."""
        if value is None and self.nullable:
            return None
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if self.kind is int and not is_int or self.kind is float and not _is_number(value):
            return f"must be {'an integer' if self.kind is int else 'a finite number'}{self._range()}"
        if value < self.low or (self.low_open and value == self.low) or (self.high is not None and value > self.high):
            return f"is out of range: it must be {self._range().strip()}"
        return None

    def _range(self) -> str:
        low = f" > {self.low:g}" if self.low_open else f" >= {self.low:g}"
        text = f" in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]" if self.high is not None else low
        return text + (" or null" if self.nullable else "") + (f" ({self.note})" if self.note else "")


#: veRL keys whose value LUFFY's run computes with before or soon after Ray starts. A string, a fraction
#: where an integer belongs, or a zero or negative batch size is refused here, naming the key, instead of
#: ending in a TypeError or in veRL's own traceback later.
RUN_FIELDS = (
    Field("data.max_prompt_length", int, 1),
    Field("data.max_response_length", int, 1),
    Field("data.train_batch_size", int, 1),
    Field("data.val_batch_size", int, 1, nullable=True),
    Field("data.gen_batch_size", int, 1, nullable=True),
    Field("actor_rollout_ref.actor.ppo_mini_batch_size", int, 1),
    Field("actor_rollout_ref.actor.ppo_micro_batch_size", int, 1, nullable=True),
    Field("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", int, 1, nullable=True),
    Field("actor_rollout_ref.actor.ppo_max_token_len_per_gpu", int, 1),
    Field("actor_rollout_ref.actor.ppo_epochs", int, 1),
    Field("actor_rollout_ref.rollout.log_prob_micro_batch_size", int, 1, nullable=True),
    Field("actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu", int, 1, nullable=True),
    Field("actor_rollout_ref.ref.log_prob_micro_batch_size", int, 1, nullable=True),
    Field("actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu", int, 1, nullable=True),
    Field("actor_rollout_ref.rollout.val_kwargs.n", int, 1),
    Field("trainer.total_epochs", int, 1),
    Field("trainer.total_training_steps", int, 1, nullable=True),
    Field("trainer.nnodes", int, 1),
    Field("trainer.n_gpus_per_node", int, 1),
    Field("trainer.save_freq", int, -1, note="-1 = never"),
    Field("trainer.test_freq", int, -1, note="-1 = never"),
    Field("actor_rollout_ref.actor.optim.lr", float, 0.0),
    Field("actor_rollout_ref.actor.clip_ratio", float, 0.0, low_open=True),
    Field("actor_rollout_ref.rollout.temperature", float, 0.0),
    Field("actor_rollout_ref.rollout.top_p", float, 0.0, 1.0, low_open=True),
)
_ABSENT = object()


def check_run_fields(config: Any, fields: tuple[Field, ...] = RUN_FIELDS) -> None:
    """Type and range of each of ``fields`` present in ``config`` (a key this veRL lacks is skipped).

    Raises:
        ValueError: ``<key>=<value> must be ...``, for the first field that does not fit.
    """
    for spec in fields:
        try:
            value = OmegaConf.select(config, spec.key, default=_ABSENT)
        except Exception as err:  # noqa: BLE001 - an interpolation that cannot resolve
            raise ValueError(f"{spec.key} cannot be read ({type(err).__name__}: {str(err).splitlines()[0]})") from None
        if value is _ABSENT:
            continue
        problem = spec.problem(value)
        if problem:
            raise ValueError(f"{spec.key}={value!r} {problem}")


def check_validation_files(config: Any) -> None:
    """``data.val_files`` must name something: veRL's V1 trainer builds the validation set at start.

    Raises:
        ValueError: naming the key and what to set.
    """
    files = OmegaConf.select(config, "data.val_files", default=None)
    listed = [files] if isinstance(files, str) else list(files or [])
    if not [f for f in listed if str(f).strip()]:
        raise ValueError(
            f"data.val_files={files!r}: veRL's V1 trainer builds the validation set when it starts, even with "
            "trainer.val_before_train=false and trainer.test_freq=-1; point it at an evaluation parquet "
            "(data/prepare_eval.py) or at the training file"
        )


# veRL's V1 trainer modes; LUFFY's trainer composes each (mix_trainer.MIX_TRAINERS, docs/async.md)
TRAINER_MODES = ("sync", "colocate_async", "separate_async")


def check_luffy_config(config: Any) -> None:
    """Validate every LUFFY key and the veRL settings LUFFY depends on, before anything starts.

    Args:
        config: the composed ``mix_ppo_trainer`` config (DictConfig).

    Raises:
        ValueError: naming the first bad key, the rule it broke and how to fix it.
    """
    check_run_fields(config)
    check_validation_files(config)
    check_types_and_ranges(config)
    arr = config.actor_rollout_ref
    check_rollout_keys(arr.rollout)
    check_actor_keys(arr.actor)
    check_algorithm_keys(config.algorithm)
    estimator = config.algorithm.adv_estimator
    if estimator not in ADV_ESTIMATORS:
        raise ValueError(
            f"algorithm.adv_estimator={estimator!r}; LUFFY's trainer accepts {', '.join(ADV_ESTIMATORS)} "
            "(grpo: statistics over the whole mixed group; grpo_split: from on-policy samples only)"
        )
    if not config.trainer.get("use_v1", True):
        raise ValueError("trainer.use_v1=false: LUFFY runs on veRL's V1 trainer only; set trainer.use_v1=true")
    mode = config.trainer.v1.trainer_mode
    if mode not in TRAINER_MODES:
        raise ValueError(f"trainer.v1.trainer_mode={mode!r}: LUFFY trains in veRL's modes {', '.join(TRAINER_MODES)}")
    check_guidance_run(config)
    if arr.actor.use_sft_multitask_loss and arr.rollout.n_prefix == 0:
        raise ValueError(
            "actor_rollout_ref.actor.use_sft_multitask_loss=true needs off-policy targets to train on, but "
            "actor_rollout_ref.rollout.n_prefix=0; set n_prefix >= 1 (LUFFY's recipe: 1, with prefix ratio 1.0)"
        )
    if arr.rollout.n_prefix == arr.rollout.n and not arr.actor.use_sft_multitask_loss:
        # every sample a target: the group's rewards are all equal, so every advantage is 0 and only
        # the SFT loss (use_sft_multitask_loss) has anything to learn from
        raise ValueError(
            f"actor_rollout_ref.rollout.n_prefix={arr.rollout.n_prefix} equals rollout.n: no generated samples, "
            "so every GRPO advantage is 0 and the run learns nothing; set n_prefix < n, or "
            "actor_rollout_ref.actor.use_sft_multitask_loss=true (pure SFT on the targets)"
        )
    if arr.rollout.n_prefix > 0:
        agent = arr.rollout.agent.default_agent_loop
        if agent != LUFFY_AGENT_LOOP:
            raise ValueError(
                f"actor_rollout_ref.rollout.agent.default_agent_loop={agent!r} would never inject off-policy "
                f"targets; use {LUFFY_AGENT_LOOP!r} (or set actor_rollout_ref.rollout.n_prefix=0)"
            )
        corr = config.algorithm.get("rollout_correction") or {}
        if corr.get("bypass_mode", False):
            raise ValueError(
                "algorithm.rollout_correction.bypass_mode=true uses rollout log-probs as old log-probs, but "
                "off-policy targets have none; set it to false (the actor recomputes old log-probs)"
            )
