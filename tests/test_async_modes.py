"""LUFFY's pieces for veRL's async V1 modes, without a training run.

The trainer classes each mode builds, the metrics over generated samples (checked against plain loops on
random inputs and by hand), the CPU's ``gloo_cpu`` checkpoint engine (a real gloo group between two
threads), the CPU replay buffers' mode checks and LUFFY's config check. The end-to-end runs are in
``test_train_async_cpu.py``.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading

import pytest
import torch
from _compose import compose_luffy

import luffy.plugin  # noqa: F401  (registrations, as every veRL process has them)
from luffy.mix_src.config_check import check_luffy_config
from luffy.mix_src.metrics import advantage_by_kind, on_policy_staleness_metrics
from luffy.mix_src.mix_trainer import MIX_TRAINERS, MixTrainerHooks, use_mix_trainer

# -- trainers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", sorted(MIX_TRAINERS))
def test_each_mode_builds_luffys_trainer_with_the_modes_own_hooks(mode, monkeypatch):
    from verl.trainer.ppo.v1 import trainer_base

    for name in list(trainer_base.TRAINER_REGISTRY):  # restored after the test
        monkeypatch.setitem(trainer_base.TRAINER_REGISTRY, name, trainer_base.TRAINER_REGISTRY[name])
    verl_cls = trainer_base.get_trainer_cls(mode)
    use_mix_trainer()
    luffy_cls = trainer_base.get_trainer_cls(mode)
    assert luffy_cls is MIX_TRAINERS[mode] and issubclass(luffy_cls, verl_cls)
    # LUFFY's overrides come first; everything else (weight sync, sampling, partial rollouts) is the mode's
    for name in ("_compute_advantage", "_next_train_batch", "_init_resource_pool_mgr"):
        assert getattr(luffy_cls, name) is getattr(MixTrainerHooks, name)
    for name in ("on_step_end", "on_sample_end", "on_init_end", "get_llm_client", "_compute_old_log_prob"):
        assert getattr(luffy_cls, name) is getattr(verl_cls, name)


def test_separate_async_runs_a_worker_that_saves_weights_on_the_host():
    from verl.experimental.separation.engine_workers import DetachActorWorker

    from luffy.cpu.worker import CpuMixDetachActorWorker
    from luffy.mix_src.mix_worker import MixActorRolloutRefWorker
    from luffy.mix_src.worker_registry import actor_worker_class

    for device in ("cuda", "cpu"):
        detach = actor_worker_class(device, detach=True)
        assert issubclass(detach, DetachActorWorker) and issubclass(detach, MixActorRolloutRefWorker)
        assert not issubclass(actor_worker_class(device), DetachActorWorker)
    assert actor_worker_class("cpu", detach=True) is CpuMixDetachActorWorker
    assert MIX_TRAINERS["separate_async"].detach_worker and not MIX_TRAINERS["colocate_async"].detach_worker


@pytest.mark.parametrize("mode", ["colocate_async", "separate_async"])
def test_config_check_accepts_the_async_modes(mode):
    check_luffy_config(compose_luffy(f"trainer.v1.trainer_mode={mode}"))


def test_cpu_replay_buffers_name_the_one_for_the_mode():
    from omegaconf import OmegaConf

    from luffy.cpu.replay_buffer import FastPollReplayBuffer, FastPollReplayBufferAsync

    common = dict(
        trainer_config=OmegaConf.create({}),
        max_off_policy_threshold=2,
        max_off_policy_strategy="drop",
        sampler_kwargs={"poll_interval_s": 0.01},
    )
    with pytest.raises(ValueError, match="FastPollReplayBufferAsync"):
        FastPollReplayBuffer(trainer_mode="colocate_async", **common)
    with pytest.raises(ValueError, match="custom_sampler.name=FastPollReplayBuffer"):
        FastPollReplayBufferAsync(trainer_mode="sync", **common)
    buffer = FastPollReplayBufferAsync(trainer_mode="separate_async", **common)
    assert buffer.poll_interval == 0.01 and buffer.max_off_policy_threshold == 2


# -- metrics over generated samples --------------------------------------------------------------


def _staleness_reference(tags, generated, valid, step):
    lags, worst = [], []
    for tag, gen, ok in zip(tags, generated, valid):
        if gen and ok:
            lags.append(step - 1 - tag["max_global_steps"])
            worst.append(step - 1 - tag["min_global_steps"])
    return lags, worst


def test_on_policy_staleness_matches_a_loop_on_random_batches():
    rng = random.Random(0)
    for _ in range(50):
        step = rng.randint(1, 20)
        size = rng.randint(1, 12)
        tags = []
        for _ in range(size):
            lo = rng.randint(0, step - 1)
            tags.append({"min_global_steps": lo, "max_global_steps": rng.randint(lo, step - 1)})
        generated = torch.tensor([rng.random() < 0.7 for _ in range(size)])
        valid = torch.tensor([rng.random() < 0.9 for _ in range(size)])
        got = on_policy_staleness_metrics(tags, generated, valid, step)
        lags, worst = _staleness_reference(tags, generated.tolist(), valid.tolist(), step)
        if not lags:
            assert got == {}
            continue
        assert got["luffy/on_policy_staleness/mean"] == pytest.approx(sum(lags) / len(lags))
        assert got["luffy/on_policy_staleness/max"] == max(lags)
        assert got["luffy/on_policy_staleness_worst/max"] == max(worst)


def test_on_policy_staleness_by_hand_ignores_targets():
    # step 5 trains weights version 4. A target tagged with an old submission step (version 1) does not
    # count; the generated samples lag 0 and 2 versions (one resumed across versions 1..4: worst 3).
    tags = [
        {"min_global_steps": 1, "max_global_steps": 1},  # the target
        {"min_global_steps": 1, "max_global_steps": 4},
        {"min_global_steps": 2, "max_global_steps": 2},
    ]
    got = on_policy_staleness_metrics(tags, torch.tensor([False, True, True]), torch.ones(3, dtype=torch.bool), 5)
    assert got == {
        "luffy/on_policy_staleness/mean": 1.0,
        "luffy/on_policy_staleness/max": 2.0,
        "luffy/on_policy_staleness_worst/max": 3.0,
    }


def test_advantage_by_kind_matches_a_loop():
    g = torch.Generator().manual_seed(1)
    batch, width = 9, 7
    lengths = torch.randint(1, width + 1, (batch,), generator=g)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()  # (B, T)
    seq_adv = torch.randn(batch, generator=g)
    advantages = seq_adv[:, None] * mask  # (B, T), GRPO's layout
    off = torch.tensor([i % 3 == 0 for i in range(batch)])
    valid = torch.tensor([i != 4 for i in range(batch)])
    got = advantage_by_kind(advantages, mask, off, valid)
    off_ref = [float(seq_adv[i]) for i in range(batch) if off[i] and valid[i]]
    on_ref = [float(seq_adv[i]) for i in range(batch) if not off[i] and valid[i]]
    assert got["luffy/advantage_off_policy"] == pytest.approx(sum(off_ref) / len(off_ref), abs=1e-6)
    assert got["luffy/advantage_on_policy"] == pytest.approx(sum(on_ref) / len(on_ref), abs=1e-6)


# -- the CPU's checkpoint engine ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_gloo_cpu_engine_delivers_every_tensor_to_every_rollout_worker():
    from verl.checkpoint_engine import CheckpointEngineRegistry

    from luffy.cpu.checkpoint_engine import BACKEND

    g = torch.Generator().manual_seed(2)
    weights = [
        ("model.embed_tokens.weight", torch.randn(11, 4, generator=g)),
        ("model.layers.0.mlp.up_proj.weight", torch.randn(3, 5, generator=g).to(torch.bfloat16)),
        ("model.norm.weight", torch.randn(4, generator=g)),
        ("lm_head.weight", torch.randn(11, 4, generator=g).t()),  # non-contiguous
    ]
    cls = CheckpointEngineRegistry.get(BACKEND)
    sender, idle_sender = cls(is_master=True), cls(is_master=False)
    receivers = [cls(), cls()]
    assert set(sender.prepare()) == {"host", "port"} and receivers[0].prepare() == {}
    master = {"host": "127.0.0.1", "port": _free_port()}
    actor_kwargs, rollout_kwargs = cls.build_topology(2, len(receivers), [master, {}, {}, {}])
    assert actor_kwargs["rank"] == [0, -1] and rollout_kwargs["rank"] == [1, 2]

    received: dict[int, list] = {}
    drained: list[str] = []

    def shards():  # another trainer rank: its generator must be drained (gathering shards is collective)
        for name, tensor in weights:
            drained.append(name)
            yield name, tensor

    def actor(rank_index: int, engine):
        engine.init_process_group(**{k: v[rank_index] for k, v in actor_kwargs.items()})
        source = iter(weights) if rank_index == 0 else shards()
        asyncio.run(engine.send_weights(source, global_steps=3))
        engine.finalize()

    def rollout(index: int, engine):
        engine.init_process_group(**{k: v[index] for k, v in rollout_kwargs.items()})
        received[index] = list(engine.receive_weights(global_steps=3))
        engine.finalize()

    threads = [threading.Thread(target=actor, args=(0, sender)), threading.Thread(target=actor, args=(1, idle_sender))]
    threads += [threading.Thread(target=rollout, args=(i, e)) for i, e in enumerate(receivers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert drained == [n for n, _ in weights]
    for index in range(len(receivers)):
        got = received[index]
        assert [n for n, _ in got] == [n for n, _ in weights]
        for (_, want), (_, tensor) in zip(weights, got):
            assert tensor.dtype == want.dtype and torch.equal(tensor, want)
