"""MIXRayPPOTrainer's hooks on a mixed batch stored in a real TransferQueue (local Ray).

The batch is laid out as V1's agent-loop workers store it (one key ``{uid}_{session}_0`` per sample,
nested per-sample tensors, ``extra_fields`` dicts); the trainer's ``_compute_advantage`` (advantages,
rollout correction, the on-policy rollout-vs-actor diagnostics, LUFFY's metrics) then runs exactly as
inside ``fit()``.
"""

from __future__ import annotations

import pytest
import torch
from _compose import compose_luffy
from tensordict import NonTensorStack, TensorDict

import luffy.plugin  # noqa: F401
from luffy.mix_src.mix_fields import OFF_POLICY_KEY, PREFIX_LEN_KEY
from luffy.mix_src.mix_trainer import MIX_TRAINERS, MIXRayPPOTrainer

pytestmark = pytest.mark.slow  # a local Ray cluster and TransferQueue for the module (~25 s to start)

N, N_PREFIX = 4, 1
# 3 prompts x 4 sessions; session 0 is the target (prompt 2's target keeps only a 2-token prefix)
REWARDS = {"a": [1, 0, 0, 1], "b": [1, 0, 0, 0], "c": [0, 1, 1, 1]}
PREFIX = {"a": None, "b": None, "c": 2}  # None = whole trace


@pytest.fixture(scope="module")
def tq_session():
    ray = pytest.importorskip("ray")
    import transfer_queue as tq

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    cfg = compose_luffy("transfer_queue.backend.SimpleStorage.num_data_storage_units=1")
    tq.init(cfg.transfer_queue)
    yield tq
    tq.close()
    ray.shutdown()


def _trainer(*overrides: str, cls: type = MIXRayPPOTrainer, global_steps: int = 1) -> MIXRayPPOTrainer:
    cfg = compose_luffy(
        f"actor_rollout_ref.rollout.n={N}", f"actor_rollout_ref.rollout.n_prefix={N_PREFIX}", *overrides
    )
    trainer = object.__new__(cls)  # the hooks need only the config and the step (no workers)
    trainer.config = cfg
    trainer.global_steps = global_steps
    return trainer


def _put_batch(tq, partition: str, seed: int = 0, n_prefix: int = N_PREFIX, versions: dict | None = None):
    """Store a mixed batch; returns (KVBatchMeta, per-sample reference data)."""
    from transfer_queue import KVBatchMeta

    g = torch.Generator().manual_seed(seed)
    keys, rows, tags = [], [], []
    for uid, rewards in REWARDS.items():
        for session, reward in enumerate(rewards):
            length = 5 + session
            off = session < n_prefix
            prefix_len = (PREFIX[uid] or length) if off else 0
            old = -torch.rand(length, generator=g) * 2
            # rollout log-probs: the server's (close to the actor's) on generated tokens, filler 0.0 on targets
            rollout = old + 0.01 * torch.randn(length, generator=g)
            rollout[:prefix_len] = 0.0
            scores = torch.zeros(length)
            scores[-1] = float(reward)
            keys.append(f"{uid}_{session}_0")
            rows.append(
                {
                    "uid": uid,
                    "response_mask": torch.ones(length, dtype=torch.int64),
                    "rm_scores": scores,
                    "old_log_probs": old,
                    "rollout_log_probs": rollout,
                    "entropy": torch.rand(length, generator=g),
                    "responses": torch.ones(length, dtype=torch.int64),
                    "extra_fields": {OFF_POLICY_KEY: off, PREFIX_LEN_KEY: prefix_len},
                }
            )
            lo, hi = (versions or {}).get((uid, session), (0, 0))
            tags.append({"status": "success", "global_steps": 1, "min_global_steps": lo, "max_global_steps": hi})
    fields = {
        k: torch.nested.as_nested_tensor([r[k] for r in rows], layout=torch.jagged)
        for k in ("response_mask", "rm_scores", "old_log_probs", "rollout_log_probs", "entropy", "responses")
    }
    td = TensorDict(fields, batch_size=len(rows))
    td["uid"] = NonTensorStack(*[r["uid"] for r in rows])
    td["extra_fields"] = NonTensorStack(*[r["extra_fields"] for r in rows])
    tq.kv_batch_put(keys=keys, partition_id=partition, fields=td, tags=tags)
    return KVBatchMeta(partition_id=partition, keys=keys, tags=tags), rows


def _advantages(tq, batch) -> torch.Tensor:
    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["advantages"])
    return torch.stack([row[0] for row in data["advantages"].unbind()])  # (B,) first-token advantage


def _sequence_scores() -> torch.Tensor:
    return torch.tensor([float(r) for rewards in REWARDS.values() for r in rewards])


@pytest.mark.parametrize("mode", sorted(MIX_TRAINERS))
def test_grpo_normalises_over_the_whole_mixed_group(tq_session, mode):
    trainer = _trainer("algorithm.adv_estimator=grpo", "algorithm.grpo_use_std=false", cls=MIX_TRAINERS[mode])
    batch, _ = _put_batch(tq_session, f"adv_grpo_{mode}")
    metrics: dict = {}
    trainer._compute_advantage(batch, metrics)
    adv = _advantages(tq_session, batch).view(3, N)
    scores = _sequence_scores().view(3, N)
    # A_i = s_i - mean over all n samples of the group, off-policy target included (no std)
    torch.testing.assert_close(adv, scores - scores.mean(dim=1, keepdim=True))
    assert metrics["luffy/off_policy_sample_share"] == pytest.approx(N_PREFIX / N)
    assert metrics["luffy/reward_off_policy"] == pytest.approx(2 / 3)
    assert metrics["luffy/reward_on_policy"] == pytest.approx(4 / 9)
    # on-policy samples only: group a has one correct, b none, c all correct
    assert metrics["luffy/groups_all_correct"] == pytest.approx(1 / 3)
    assert metrics["luffy/groups_all_wrong"] == pytest.approx(1 / 3)
    # mean advantage by kind: targets (1, 1, 0) against their group means (1/2, 1/4, 3/4)
    assert metrics["luffy/advantage_off_policy"] == pytest.approx((1 / 2 + 3 / 4 - 3 / 4) / 3)


@pytest.mark.parametrize("mode", sorted(MIX_TRAINERS))
def test_grpo_split_takes_statistics_from_on_policy_samples(tq_session, mode):
    trainer = _trainer("algorithm.adv_estimator=grpo_split", "algorithm.grpo_use_std=false", cls=MIX_TRAINERS[mode])
    batch, _ = _put_batch(tq_session, f"adv_split_{mode}")
    trainer._compute_advantage(batch, {})
    adv = _advantages(tq_session, batch).view(3, N)
    # by hand, session 0 is the target and the mean comes from sessions 1-3:
    # a [1,0,0,1]: mean 1/3; b [1,0,0,0]: mean 0; c [0,1,1,1]: mean 1 (the wrong target gets -1)
    expected = torch.tensor([[2 / 3, -1 / 3, -1 / 3, 2 / 3], [1.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(adv, expected)


def test_guidance_gate_drops_the_traces_of_groups_that_succeed(tq_session):
    # BREAD's gate, k = 0: only b's generated samples all fail, so only b keeps its target
    trainer = _trainer("algorithm.adv_estimator=grpo", "algorithm.grpo_use_std=false",
                       "algorithm.guidance_gate=successes", "algorithm.guidance_max_successes=0")
    batch, _ = _put_batch(tq_session, "adv_gate")
    metrics: dict = {}
    trainer._compute_advantage(batch, metrics)
    adv = _advantages(tq_session, batch).view(3, N)
    # a: target dropped, mean of [0, 0, 1]; b: mean of all four [1, 0, 0, 0]; c: target dropped, mean of [1, 1, 1]
    expected = torch.tensor([[0.0, -1 / 3, -1 / 3, 2 / 3], [0.75, -0.25, -0.25, -0.25], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(adv, expected)
    data = tq_session.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["response_mask"])
    kept = torch.tensor([bool(row.sum() > 0) for row in data["response_mask"].unbind()]).view(3, N)
    assert kept.tolist() == [[False, True, True, True], [True] * 4, [False, True, True, True]]
    assert metrics["luffy/guided_group_frac"] == pytest.approx(1 / 3)
    assert metrics["luffy/trace_kept_frac"] == pytest.approx(1 / 3)


def test_batch_without_targets_runs_verls_advantage_phase(tq_session, monkeypatch):
    from verl.trainer.ppo.v1 import PPOTrainerSync

    calls = []
    real = PPOTrainerSync._compute_advantage

    def spy(self, batch, metrics):
        calls.append(batch.partition_id)
        return real(self, batch, metrics)

    monkeypatch.setattr(PPOTrainerSync, "_compute_advantage", spy)
    trainer = _trainer("actor_rollout_ref.rollout.n_prefix=0", "algorithm.grpo_use_std=false", *ROLLOUT_CORRECTION)
    batch, _ = _put_batch(tq_session, "no_targets", n_prefix=0)
    metrics: dict = {}
    trainer._compute_advantage(batch, metrics)
    assert calls == ["no_targets"]
    # by hand: group [1,0,0,1] -> mean 0.5 -> [0.5,-0.5,-0.5,0.5] (no std)
    torch.testing.assert_close(_advantages(tq_session, batch).view(3, N)[0], torch.tensor([0.5, -0.5, -0.5, 0.5]))
    assert metrics["luffy/off_policy_sample_share"] == 0.0 and "rollout_corr/kl" in metrics


# token-level IS weights and rejection, so both halves of rollout correction run
ROLLOUT_CORRECTION = (
    "algorithm.rollout_correction.rollout_is=token",
    "algorithm.rollout_correction.rollout_rs=token_k1",
    "algorithm.rollout_correction.rollout_rs_threshold=0.5_2.0",
)


def test_rollout_correction_sees_on_policy_tokens_only(tq_session):
    trainer = _trainer(*ROLLOUT_CORRECTION)
    batch, rows = _put_batch(tq_session, "corr")
    metrics: dict = {}
    trainer._compute_advantage(batch, metrics)
    # targets' filler log-prob 0.0 would give a KL of ~1 per token if it were counted
    assert abs(metrics["rollout_corr/kl"]) < 0.05
    data = tq_session.kv_batch_get(
        keys=batch.keys, partition_id=batch.partition_id, select_fields=["response_mask", "rollout_is_weights"]
    )
    for i, row in enumerate(rows):
        k = row["extra_fields"][PREFIX_LEN_KEY]
        mask, weights = data["response_mask"][i], data["rollout_is_weights"][i]
        assert mask[:k].eq(1).all()  # rejection never drops target tokens
        assert weights[:k].eq(1.0).all()  # targets are not importance-weighted
        assert torch.isfinite(weights).all()


def test_rollout_probs_diff_diagnostics_cover_on_policy_tokens_only(tq_session):
    trainer = _trainer()
    batch, rows = _put_batch(tq_session, "diag")
    # what veRL's old-log-prob phase logged a moment earlier: the same keys over every token
    metrics: dict = {"training/rollout_probs_diff_max": 0.97}
    trainer._compute_advantage(batch, metrics)
    # server and actor log-probs differ by ~0.01 on generated tokens; targets (prob 1 filler) would add ~0.9
    assert metrics["training/rollout_probs_diff_valid"] == 1
    assert metrics["training/rollout_probs_diff_max"] < 0.1
    # loop reference: the largest |p_actor - p_rollout| over on-policy tokens
    expected = 0.0
    for row in rows:
        diff = (row["old_log_probs"].exp() - row["rollout_log_probs"].exp()).abs()  # (T_i,)
        for value in diff[row["extra_fields"][PREFIX_LEN_KEY] :].tolist():  # on-policy tokens
            expected = max(expected, value)
    assert metrics["training/rollout_probs_diff_max"] == pytest.approx(expected, rel=1e-5)


def test_advantage_phase_reads_transfer_queue_once(tq_session, monkeypatch):
    import transfer_queue as tq

    calls = []
    real_get = tq.kv_batch_get

    def counting_get(*args, **kwargs):
        calls.append(kwargs.get("select_fields"))
        return real_get(*args, **kwargs)

    monkeypatch.setattr(tq, "kv_batch_get", counting_get)
    trainer = _trainer(*ROLLOUT_CORRECTION)
    batch, _ = _put_batch(tq_session, "one_fetch")
    metrics: dict = {}
    trainer._compute_advantage(batch, metrics)
    assert len(calls) == 1, calls
    # diagnostics, rollout correction and LUFFY's metrics all came from that fetch
    assert {"training/rollout_probs_diff_max", "rollout_corr/kl", "luffy/off_policy_prob"} <= set(metrics)


def test_bypass_mode_skips_rollout_correction_and_diagnostics_as_verl_does(tq_session):
    trainer = _trainer(
        "actor_rollout_ref.rollout.n_prefix=0",
        "algorithm.rollout_correction.rollout_is=token",
        "algorithm.rollout_correction.bypass_mode=true",
    )
    batch, _ = _put_batch(tq_session, "bypass")
    metrics: dict = {}
    trainer._compute_advantage(batch, metrics)
    assert not any(k.startswith(("rollout_corr/", "training/rollout_probs_diff")) for k in metrics)
    assert "luffy/off_policy_sample_share" in metrics


def test_staleness_of_generated_samples_leaves_targets_out(tq_session):
    # step 4 trains weights version 3; the targets carry their prompt's old submission tags (version 0)
    versions = {(uid, s): (1, 3) if s == 1 else (2, 2) for uid in REWARDS for s in range(N_PREFIX, N)}
    versions["c", 0] = (2, 2)  # c's target is a 2-token prefix the server continued: a generated sample
    trainer = _trainer("algorithm.adv_estimator=grpo", cls=MIX_TRAINERS["colocate_async"], global_steps=4)
    batch, _ = _put_batch(tq_session, "staleness", versions=versions)
    metrics: dict = {}
    trainer._compute_advantage(batch, metrics)
    # generated: per group one sample lagging 0 (resumed from version 1 to 3) and two lagging 1, plus c's
    # prefix-guided sample lagging 1: (2 + 2 + 3) / 10
    assert metrics["luffy/on_policy_staleness/mean"] == pytest.approx(0.7)
    assert metrics["luffy/on_policy_staleness/max"] == 1.0
    assert metrics["luffy/on_policy_staleness_worst/max"] == 2.0  # not 3: the targets' tags are left out


def test_a_stale_group_is_dropped_whole_target_included_and_replaced(tq_session):
    """LUFFY's rule for staleness: veRL's async replay buffer judges a group by its prompt's submission
    step and evicts it whole, target and generated samples together, then refills with a fresh prompt."""
    from omegaconf import OmegaConf

    from luffy.cpu.replay_buffer import FastPollReplayBufferAsync

    tq = tq_session

    def put_group(uid: str, step: int) -> None:
        keys = [f"{uid}_{s}_0" for s in range(N)]
        tags = [{"status": "success", "global_steps": step, "min_global_steps": step - 1, "max_global_steps": step - 1}]
        tq.kv_batch_put(keys=keys, partition_id="train", tags=tags * N)
        tq.kv_batch_put(
            keys=[uid], partition_id="train", tags=[{"is_prompt": True, "status": "finished", "global_steps": step}]
        )

    refills: list[int] = []

    def refill(count: int) -> int:
        refills.append(count)
        for i in range(count):
            put_group(f"refill{len(refills)}x{i}", 3)
        return count

    put_group("stale", 1)  # submitted at step 1: spans 3 versions at step 3
    put_group("fresh", 3)
    buffer = FastPollReplayBufferAsync(
        trainer_mode="colocate_async",
        trainer_config=OmegaConf.create({}),
        max_off_policy_threshold=2,
        max_off_policy_strategy="drop",
        sampler_kwargs={"poll_interval_s": 0.01},
        refill_fn=refill,
    )
    batch, metrics = buffer.sample(global_steps=3, partition_id="train", batch_size=2)
    assert refills == [1]
    assert sorted({key.split("_")[0] for key in batch.keys}) == ["fresh", "refill1x0"]
    assert len(batch.keys) == 2 * N
    remaining = tq.kv_list().get("train", {})
    assert not [key for key in remaining if key.startswith("stale")]  # the target (session 0) went too
    assert metrics["training/off_policy/evicted_samples"] == 1
    assert metrics["training/off_policy/evicted_samples_staleness/max"] == 3
    tq.kv_clear(keys=list(remaining), partition_id="train")
