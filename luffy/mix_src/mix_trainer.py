"""LUFFY's trainers: veRL's three V1 trainers (``sync``, ``colocate_async``, ``separate_async``) with
LUFFY's off-policy mixing.

:class:`MixTrainerHooks` holds LUFFY's overrides; each trainer is that class composed with one of veRL's
(``MIXRayPPOTrainer`` = ``PPOTrainerSync``, ``MixColocateAsyncTrainer``, ``MixSeparateAsyncTrainer``),
so the mode's own hooks (weight sync, partial rollouts, the replay buffer's staleness policy) are veRL's.
One step is veRL's ``PPOTrainer._step_once`` unchanged: rollout (LUFFY's agent loop answers
``n_prefix`` sessions per training prompt with the target), reward (same function for every sample),
old log-probs (veRL's own phase: the actor recomputes them for every token), advantage, actor update
(the worker's LUFFY loss). ``MixTrainerHooks`` overrides only what has to know which tokens are off-policy:

* ``_init_resource_pool_mgr``: the actor role runs :class:`MixActorRolloutRefWorker` (or the subclass
  a platform registers, :mod:`luffy.mix_src.worker_registry`; in ``separate_async`` the variant with
  veRL's ``DetachActorWorker``, which that mode's own override had put there);
* ``_next_train_batch``: training prompts are marked for mixing and carry the training progress
  (validation batches are not marked, so validation never sees targets);
* ``_compute_advantage``: the one place the trainer reads the off-policy record. One TransferQueue
  fetch gives the off-policy token mask and LUFFY's per-step metrics; a batch without target tokens
  (and not ``grpo_split``) then runs veRL's method unchanged. With targets, veRL's steps run in
  ``_mixed_advantage``, each through veRL's own function, with three changes: rollout correction on
  on-policy tokens only, ``grpo_split`` statistics from on-policy samples (or, with
  ``algorithm.guidance_gate``, the statistics and kept traces of ``guidance.py``), and veRL's rollout-vs-actor
  diagnostics (``training/rollout_probs_diff_*``) over on-policy tokens (replacing the all-token
  values veRL's old-log-prob phase wrote a moment earlier).

The sync trainer's name is LUFFY's (its users know it); it is veRL's V1 ``PPOTrainerSync``, not the legacy
``RayPPOTrainer``. Every veRL method overridden here is listed in :mod:`luffy.verl_compat`.

In the async modes a prompt group is trained on a step after the one that submitted it, and its generated
samples may span several weight versions (partial rollouts resumed after a weight update). Targets have
no behaviour policy: rollout correction never sees them (as in sync mode), and LUFFY logs the staleness
of the generated samples alone (``luffy/on_policy_staleness/*``). veRL's staleness policy
(``trainer.v1.sampler.max_off_policy_threshold``) judges a prompt group by the step that submitted it
and evicts the group whole, target included; LUFFY keeps that rule (see ``docs/async.md``).
"""

from __future__ import annotations

import logging

import numpy as np
import ray
import torch
import transfer_queue as tq
from tensordict import TensorDict
from transfer_queue import KVBatchMeta
from verl.protocol import DataProto
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.ray_trainer import apply_kl_penalty
from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_add_to_batch
from verl.trainer.ppo.utils import Role
from verl.trainer.ppo.v1 import PPOTrainer, PPOTrainerColocateAsync, PPOTrainerSeparateAsync, PPOTrainerSync
from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories
from verl.utils import tensordict_utils as tu
from verl.utils.debug.metrics import calculate_debug_metrics
from verl.utils.device import get_device_name
from verl.utils.profiler import simple_timer
from verl.workers.utils.padding import response_to_nested

from luffy.mix_src.advantage import GRPO_SPLIT
from luffy.mix_src.guidance import gate_settings, gated_grpo_advantage
from luffy.mix_src.metrics import advantage_by_kind, compute_mix_metrics, on_policy_staleness_metrics
from luffy.mix_src.mix_agent_loop import PROGRESS_KEY, TRAIN_BATCH_KEY
from luffy.mix_src.mix_fields import as_dict_list, off_policy_flags, off_policy_token_mask
from luffy.mix_src.worker_registry import actor_worker_class
from luffy.verl_compat import use_trainer

logger = logging.getLogger(__name__)

# Fields of the advantage phase: veRL's own, plus what LUFFY's masks and metrics need.
_ADV_FIELDS = [
    "uid",
    "response_mask",
    "rm_scores",
    "rollout_log_probs",
    "old_log_probs",
    "ref_log_prob",
    "values",
    "entropy",
    "extra_fields",
]
# Own timer (seconds, logged as timing_s/adv_luffy): LUFFY's additions inside veRL's "adv" phase.
ADV_LUFFY_TIMER = "adv_luffy"


class MixTrainerHooks(PPOTrainer):
    """LUFFY's overrides of veRL's V1 ``PPOTrainer``; composed first with one of veRL's three trainers."""

    # separate_async's trainer ranks must also save/restore weights on the host (veRL's DetachActorWorker)
    detach_worker = False

    def _init_resource_pool_mgr(self):
        # V1 maps roles to worker classes here, not in the task runner; swap in LUFFY's actor worker.
        super()._init_resource_pool_mgr()
        worker = actor_worker_class(get_device_name(), detach=self.detach_worker)
        for role in (Role.ActorRollout, Role.ActorRolloutRef, Role.Actor):
            if role in self.role_worker_mapping:
                self.role_worker_mapping[role] = ray.remote(worker)

    def _next_train_batch(self, num_prompts: int | None = None) -> TensorDict:
        # The smallest place where only training prompts pass: mark them for the agent loop.
        batch = super()._next_train_batch(num_prompts)
        progress = (self.global_steps - 1) / max(self.total_training_steps - 1, 1)
        tu.assign_non_tensor_data(batch, TRAIN_BATCH_KEY, True)
        tu.assign_non_tensor_data(batch, PROGRESS_KEY, float(min(max(progress, 0.0), 1.0)))
        return batch

    def _compute_advantage(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        # LUFFY's metrics first (one TransferQueue fetch). A batch with no target token that does not
        # ask for grpo_split then goes through veRL's method unchanged (the N_PREFIX=0 baseline is
        # veRL's GRPO, guards included). Otherwise two of veRL's steps must see the off-policy tokens
        # (rollout correction, grpo_split's statistics); they are module-level functions with no hook,
        # so _mixed_advantage runs veRL's steps itself, each one a call to veRL's own function.
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=_ADV_FIELDS)
        nested_mask = data["response_mask"]
        extra_fields = as_dict_list(data.pop("extra_fields"))
        data = DataProto(batch=data.to_padded_tensor())
        data.batch["token_level_scores"] = data.batch["rm_scores"]
        data.non_tensor_batch["uid"] = np.array(data.batch.pop("uid").tolist(), dtype=object)
        response_mask = data.batch["response_mask"]  # (B, T)
        timing = getattr(self, "timing_raw", {})  # set by fit() for each step
        with simple_timer(ADV_LUFFY_TIMER, timing):
            off_tokens = off_policy_token_mask(extra_fields, response_mask)  # (B, T), the step's only build
            off_samples = off_policy_flags(extra_fields)  # (B,)
            valid = torch.tensor([not tag.get("is_padding", False) for tag in batch.tags], dtype=torch.bool)
            metrics.update(
                compute_mix_metrics(
                    scores=data.batch["rm_scores"].sum(dim=-1),
                    response_mask=response_mask,
                    off_tokens=off_tokens,
                    off_samples=off_samples,
                    uids=list(data.non_tensor_batch["uid"]),
                    valid=valid,
                    old_log_probs=data.batch.get("old_log_probs", None),
                    entropy=data.batch.get("entropy", None),
                )
            )
            # staleness of the generated samples alone (targets have no behaviour weights to lag)
            generated = (response_mask.bool() & ~off_tokens).any(dim=-1)  # (B,)
            metrics.update(on_policy_staleness_metrics(batch.tags, generated, valid, self.global_steps))
        if not off_tokens.any() and self.config.algorithm.adv_estimator != GRPO_SPLIT:
            return super()._compute_advantage(batch, metrics)
        return self._mixed_advantage(batch, data, nested_mask, off_tokens, off_samples, metrics)

    def _mixed_advantage(
        self,
        batch: KVBatchMeta,
        data: DataProto,
        nested_mask: torch.Tensor,
        off_tokens: torch.Tensor,
        off_samples: torch.Tensor,
        metrics: dict,
    ) -> KVBatchMeta:
        """veRL's advantage steps on a batch holding targets; writes the results back to TransferQueue.

        Args:
            batch: the step's batch handle.
            data: padded batch with ``token_level_scores``, ``response_mask`` and the log-probs, ``(B, T)``.
            nested_mask: ``response_mask`` as stored (jagged), the layout of every written field.
            off_tokens: ``(B, T)`` bool, off-policy (target) tokens.
            off_samples: ``(B,)`` bool, samples in an off-policy slot.
            metrics: the step's metrics, updated in place.
        """
        algorithm = self.config.algorithm
        response_mask = data.batch["response_mask"]  # (B, T), before any rejection
        on_tokens = response_mask.bool() & ~off_tokens  # (B, T)
        corr_config = algorithm.get("rollout_correction", None)
        # veRL's guards: no rollout correction (and none of its diagnostics) in bypass mode or
        # without rollout log-probs; config_check refuses bypass mode when targets are mixed in
        bypass = bool(corr_config is not None and corr_config.get("bypass_mode", False))
        # a step with no generated token (every slot a target: pure SFT) has nothing to correct or compare
        behaviour_log_probs = "rollout_log_probs" in data.batch and not bypass and bool(on_tokens.any())
        corrects = corr_config is not None and behaviour_log_probs
        written = ["advantages", "returns"]

        # veRL's rollout-vs-actor diagnostics, recomputed over on-policy tokens (targets have no
        # behaviour log-probs): they replace the all-token values of veRL's old-log-prob phase
        if self.config.actor_rollout_ref.rollout.calculate_log_probs and behaviour_log_probs:
            with simple_timer(ADV_LUFFY_TIMER, getattr(self, "timing_raw", {})):
                metrics.update(self._on_policy_debug_metrics(data, on_tokens))

        data.batch["token_level_rewards"] = data.batch["token_level_scores"]
        if algorithm.use_kl_in_reward:  # off in LUFFY's recipe; veRL's step, which replaces the rewards
            data, kl_metrics = apply_kl_penalty(data, kl_ctrl=self.kl_ctrl_in_reward, kl_penalty=algorithm.kl_penalty)
            metrics.update(kl_metrics)
            written.append("token_level_rewards")

        if corrects:  # IS weights and rejection on on-policy tokens only
            metrics.update(self._on_policy_rollout_correction(data, off_tokens, on_tokens, corr_config))
            written += [name for name in ("response_mask", "rollout_is_weights") if name in data.batch]

        valid = torch.tensor([not tag.get("is_padding", False) for tag in batch.tags], dtype=torch.bool)
        gate = gate_settings(algorithm)
        if gate is not None:  # per-group guidance gate (guidance.py): dropped traces leave loss and advantages
            advantages, keep, gate_metrics = gated_grpo_advantage(
                data.batch["token_level_rewards"], response_mask, data.non_tensor_batch["uid"], off_samples, gate,
                norm_adv_by_std=bool(algorithm.get("norm_adv_by_std_in_grpo", True)), valid=valid,
            )
            data.batch["advantages"] = data.batch["returns"] = advantages
            data.batch["response_mask"] = data.batch["response_mask"] * keep.unsqueeze(-1).to(response_mask.dtype)
            written += [] if "response_mask" in written else ["response_mask"]
            metrics.update(gate_metrics)
        elif algorithm.adv_estimator == GRPO_SPLIT:  # statistics from on-policy samples
            advantages, _ = core_algos.get_adv_estimator_fn(GRPO_SPLIT)(
                token_level_rewards=data.batch["token_level_rewards"],
                response_mask=response_mask,
                index=data.non_tensor_batch["uid"],
                config=algorithm,
                off_policy_mask=off_samples,
            )
            data.batch["advantages"] = data.batch["returns"] = advantages
        else:  # veRL's estimators over each uid's whole group, targets included
            norm_by_std = algorithm.get("norm_adv_by_std_in_grpo", True)
            settings = {"gamma": algorithm.gamma, "lam": algorithm.lam, "norm_adv_by_std_in_grpo": norm_by_std}
            data = compute_advantage_for_multi_trajectories(
                data,
                batch_keys=batch.keys,
                adv_estimator=algorithm.adv_estimator,
                num_repeat=self.config.actor_rollout_ref.rollout.n,
                config=algorithm,
                **settings,
            )

        metrics.update(advantage_by_kind(data.batch["advantages"], response_mask, off_samples, valid))
        nested = {name: response_to_nested(data.batch[name], nested_mask) for name in written}  # veRL's layout
        fields = TensorDict(nested, batch_size=len(batch))
        return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=fields)

    @staticmethod
    def _on_policy_debug_metrics(data: DataProto, on_tokens: torch.Tensor) -> dict:
        """veRL's ``calculate_debug_metrics`` restricted to on-policy tokens.

        Args:
            data: batch with ``old_log_probs`` and ``rollout_log_probs`` ``(B, T)``.
            on_tokens: ``(B, T)`` bool, response tokens the policy generated.

        Returns:
            ``training/rollout_probs_diff_*`` and ``training/rollout_actor_probs_pearson_corr``.
        """
        view = TensorDict(
            {
                "old_log_probs": data.batch["old_log_probs"],
                "rollout_log_probs": data.batch["rollout_log_probs"],
                "response_mask": on_tokens,
                "responses": on_tokens,  # read for its width only
            },
            batch_size=len(data),
        )
        return calculate_debug_metrics(DataProto(batch=view))

    @staticmethod
    def _on_policy_rollout_correction(
        data: DataProto, off_tokens: torch.Tensor, on_tokens: torch.Tensor, corr_config
    ) -> dict:
        """veRL's rollout correction seeing on-policy tokens only; updates ``data`` in place.

        Rejection can only drop on-policy tokens (off-policy ones stay in ``response_mask``), and IS
        weights of off-policy tokens are 1.

        Args:
            data: batch with ``old_log_probs``, ``rollout_log_probs``, ``response_mask`` ``(B, T)``.
            off_tokens: ``(B, T)`` bool off-policy token mask.
            on_tokens: ``(B, T)`` bool, response tokens that are not off-policy.
            corr_config: ``algorithm.rollout_correction``.

        Returns:
            veRL's ``rollout_corr/*`` metrics over on-policy tokens.
        """
        response_mask = data.batch["response_mask"]  # (B, T)
        on_policy = DataProto(
            batch=TensorDict(
                {
                    "old_log_probs": data.batch["old_log_probs"],
                    "rollout_log_probs": data.batch["rollout_log_probs"],
                    "response_mask": on_tokens.to(response_mask.dtype),
                },
                batch_size=len(data),
            )
        )
        on_policy, corr_metrics = compute_rollout_correction_and_add_to_batch(on_policy, corr_config)
        kept = on_policy.batch["response_mask"].bool() | off_tokens  # (B, T)
        data.batch["response_mask"] = kept.to(response_mask.dtype)
        if "rollout_is_weights" in on_policy.batch:
            weights = on_policy.batch["rollout_is_weights"]  # (B, T)
            data.batch["rollout_is_weights"] = torch.where(off_tokens, torch.ones_like(weights), weights)
        return corr_metrics


class MIXRayPPOTrainer(MixTrainerHooks, PPOTrainerSync):
    """veRL's V1 synchronous PPO trainer, mixing ``n_prefix`` off-policy targets into each group."""


class MixColocateAsyncTrainer(MixTrainerHooks, PPOTrainerColocateAsync):
    """veRL's ``colocate_async`` trainer (partial rollouts, staleness bound) with LUFFY's mixing."""


class MixSeparateAsyncTrainer(MixTrainerHooks, PPOTrainerSeparateAsync):
    """veRL's ``separate_async`` trainer (standalone rollout replicas) with LUFFY's mixing."""

    detach_worker = True


MIX_TRAINERS: dict[str, type[PPOTrainer]] = {
    "sync": MIXRayPPOTrainer,
    "colocate_async": MixColocateAsyncTrainer,
    "separate_async": MixSeparateAsyncTrainer,
}


def use_mix_trainer() -> None:
    """Make veRL's V1 task runner build LUFFY's trainer for every ``trainer.v1.trainer_mode``, in this process.

    veRL picks the trainer class from ``TRAINER_REGISTRY[trainer.v1.trainer_mode]`` and several code
    paths compare the mode to the strings ``"sync"`` etc., so a new mode name would switch paths;
    ``register_trainer`` refuses to re-register a name and no public hook selects a subclass.
    The task runner therefore maps each mode to LUFFY's trainer in its own process, here only.
    """
    for mode, trainer_cls in MIX_TRAINERS.items():
        use_trainer(mode, trainer_cls)
