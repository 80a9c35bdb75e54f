"""luffy's CPU pieces are in veRL's registries after ``import verl`` and map to luffy's objects."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

# Runs in a fresh interpreter with VERL_PLATFORM=cpu: plugin loading happens inside `import verl`,
# and the platform singleton / engine registration depend on the variable being set first.
_CHECK_SCRIPT = textwrap.dedent(
    """
    import json
    import verl
    from verl.plugin.platform import PlatformRegistry, get_platform
    from verl.utils.device import get_device_name, get_nccl_backend, get_resource_name
    from verl.workers.engine import EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead
    from verl.workers.rollout.base import get_rollout_class
    from verl.workers.rollout.replica import get_rollout_replica_class

    from luffy.cpu.platform import CpuPlatform
    from luffy.cpu.rollout import HFCpuReplica, HFCpuServerAdapter
    from luffy.cpu.worker import prepare_cpu_process_group

    # the worker's fix: a plain gloo group first (twice: idempotent), then veRL's own init is a no-op
    import torch.distributed as dist
    from verl.utils.distributed import initialize_global_process_group_ray

    prepare_cpu_process_group()
    prepare_cpu_process_group()
    initialize_global_process_group_ray(timeout_second=None)
    backend = dist.get_backend()
    dist.destroy_process_group()

    print(json.dumps({
        "process_group": backend,
        "platform_registered": PlatformRegistry.get("cpu") is CpuPlatform,
        "platform_selected": isinstance(get_platform(), CpuPlatform),
        "device": get_device_name(),
        "backend": get_nccl_backend(),
        "resource": get_resource_name(),
        "lm_engine": all(
            EngineRegistry.get_engine_cls("language_model", b) is FSDPEngineWithLMHead for b in ("fsdp", "fsdp2")
        ),
        "value_engine": EngineRegistry.get_engine_cls("value_model", "fsdp2") is FSDPEngineWithValueHead,
        "adapter": get_rollout_class("hf_cpu", "async") is HFCpuServerAdapter,
        "replica": get_rollout_replica_class("hf_cpu") is HFCpuReplica,
    }))
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # starts the entry point or Ray in a subprocess
def test_registrations_after_import_verl_on_cpu_platform():
    """Plugin loading registers everything; the worker's gloo group lets veRL's own init pass."""
    env = {
        **os.environ,
        "VERL_PLATFORM": "cpu",
        "VERL_USE_EXTERNAL_MODULES": "luffy.plugin",
        # what Ray's worker group sets for each rank
        "RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
    }
    proc = subprocess.run(
        [sys.executable, "-c", _CHECK_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {
        "process_group": "gloo",
        "platform_registered": True,
        "platform_selected": True,
        "device": "cpu",
        "backend": "gloo",
        "resource": "GPU",
        "lm_engine": True,
        "value_engine": True,
        "adapter": True,
        "replica": True,
    }


def test_registration_is_harmless_without_cpu_platform():
    """Without VERL_PLATFORM=cpu the platform is registered but never auto-detected."""
    import verl  # noqa: F401  (plugin loading)
    from verl.plugin.platform import PlatformRegistry
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY

    from luffy.cpu.platform import CpuPlatform

    assert PlatformRegistry.get("cpu") is CpuPlatform
    assert CpuPlatform().is_platform_available(use_smi_check=True) is False
    assert _ROLLOUT_REGISTRY[("hf_cpu", "async")] == "luffy.cpu.rollout.HFCpuServerAdapter"


@pytest.mark.skipif(os.environ.get("VERL_PLATFORM") == "cpu", reason="checks the non-cpu platform path")
def test_prepare_cpu_process_group_is_a_no_op_off_cpu():
    import torch.distributed as dist

    from luffy.cpu.worker import prepare_cpu_process_group

    prepare_cpu_process_group()  # no RANK/WORLD_SIZE needed: it returns before reading them
    assert not dist.is_initialized()


def test_device_module_answers_cuda_calls_on_cpu():
    from luffy.cpu.platform import CpuPlatform

    platform = CpuPlatform()
    dev = platform.device_module
    assert platform.current_device() == "cpu" and dev.current_device() == "cpu"
    assert dev.get_device_name() == "cpu" and dev.is_available() and dev.device_count() == 1
    free, total = dev.mem_get_info()
    assert 0 < free <= total
    assert dev.memory_allocated() == dev.max_memory_reserved() == 0
    dev.reset_peak_memory_stats()
    dev.synchronize()
    dev.empty_cache()
    state = dev.get_rng_state()
    a = torch.rand(3)
    dev.set_rng_state(state)
    torch.testing.assert_close(torch.rand(3), a)
    assert dev.Stream is torch.cpu.Stream  # everything else falls back to torch.cpu


@pytest.mark.parametrize("interval, ok", [(0.01, True), (0.0, False)])
def test_fast_poll_replay_buffer_interval(interval, ok):
    from omegaconf import OmegaConf

    from luffy.cpu.replay_buffer import FastPollReplayBuffer

    kwargs = dict(
        trainer_mode="sync",
        trainer_config=OmegaConf.create({}),
        max_off_policy_threshold=None,
        max_off_policy_strategy="drop",
        sampler_kwargs=OmegaConf.create({"poll_interval_s": interval}),
    )
    if ok:
        assert FastPollReplayBuffer(**kwargs).poll_interval == interval
    else:
        with pytest.raises(ValueError, match="poll_interval_s"):
            FastPollReplayBuffer(**kwargs)


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_actor_threads_refuses_a_bad_value(monkeypatch, value):
    from luffy.cpu.worker import ACTOR_THREADS_ENV, apply_actor_threads

    monkeypatch.setenv(ACTOR_THREADS_ENV, value)
    with pytest.raises(ValueError, match=ACTOR_THREADS_ENV):
        apply_actor_threads()


def test_actor_threads_sets_torch_threads(monkeypatch):
    import torch

    from luffy.cpu.worker import ACTOR_THREADS_ENV, apply_actor_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(ACTOR_THREADS_ENV, "2")
        assert apply_actor_threads() == 2 == torch.get_num_threads()
        monkeypatch.delenv(ACTOR_THREADS_ENV)
        assert apply_actor_threads() == 2  # unset: torch's setting stays
    finally:
        torch.set_num_threads(before)


def test_a_bad_actor_threads_stops_the_run_script_before_ray(tmp_path):
    import os
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "exp_scripts" / "train_tiny_cpu.sh"
    env = {**os.environ, "ACTOR_THREADS": "two", "OUT_DIR": str(tmp_path)}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: ACTOR_THREADS=two: must be a positive integer"
    assert not any(tmp_path.iterdir())  # nothing built, nothing started
