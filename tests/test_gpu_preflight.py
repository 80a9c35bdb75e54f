"""The GPU checks before Ray starts (``luffy.mix_src.gpu_preflight``): each refusal and warning in one line.

Only the device facts are made up (torch's CUDA build, driver, device count and memory, free disk, which
optional packages import); the estimates are the real ones, on Qwen2.5-Math-7B's sizes.
"""

from __future__ import annotations

import json

import pytest
from _compose import compose_luffy
from test_gpu_budget import H100_GIB, H200_GIB, QWEN_MATH_7B

from luffy.mix_src import gpu_preflight as gp

H100 = gp.DeviceFacts("2.11.0+cu130", "13.0", True, 8, "580.95.05", H100_GIB, "NVIDIA H100 80GB HBM3")
H200 = gp.DeviceFacts("2.11.0+cu130", "13.0", True, 8, "580.95.05", H200_GIB, "NVIDIA H200")
OLD_DRIVER = gp.DeviceFacts("2.11.0+cu130", "13.0", False, 0, "570.86.15")
CPU_TORCH = gp.DeviceFacts("2.13.0+cpu", None, False, 0, None)
HALF_NODE = gp.DeviceFacts("2.11.0+cu130", "13.0", True, 4, "580.95.05", H100_GIB)
ALL_IMPORT: dict[str, str] = {}
PLENTY = 10**13  # bytes of free disk


@pytest.fixture
def recipe(tmp_path, monkeypatch):
    """A composed config with train.sh's memory settings (8 GPUs, vLLM at 0.8, 32768 tokens per GPU)."""
    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    model = tmp_path / "Qwen2.5-Math-7B-16k"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(QWEN_MATH_7B))

    def make(*extra: str):
        return compose_luffy(
            f"actor_rollout_ref.model.path={model}",
            "actor_rollout_ref.model.enable_gradient_checkpointing=true",
            "actor_rollout_ref.actor.use_dynamic_bsz=true",
            "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=32768",
            "actor_rollout_ref.rollout.name=vllm",
            "actor_rollout_ref.rollout.gpu_memory_utilization=0.8",
            "trainer.n_gpus_per_node=8",
            "trainer.save_freq=50",
            "trainer.max_actor_ckpt_to_keep=2",
            f"trainer.default_local_dir={tmp_path / 'ckpt'}",
            *extra,
        )

    return make


def _refusal(config, facts, packages=ALL_IMPORT, free=PLENTY) -> str:
    with pytest.raises(ValueError) as err:
        gp.check_gpu_run(config, facts, packages, free, log=lambda line: None)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_no_usable_cuda_names_torch_cuda_driver_and_the_floor(recipe):
    message = _refusal(recipe(), OLD_DRIVER)
    assert "trainer.n_gpus_per_node=8" in message and "torch 2.11.0+cu130 is built for CUDA 13.0" in message
    assert "NVIDIA driver 570.86.15" in message and "driver is too old: CUDA 13 builds need driver >= 580" in message
    no_driver = _refusal(recipe(), gp.DeviceFacts("2.11.0+cu130", "13.0", False, 0, None))
    assert "driver not found" in no_driver and "need driver >= 580" in no_driver
    assert "is a CPU build" in _refusal(recipe(), CPU_TORCH)


def test_fewer_devices_than_asked(recipe, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    message = _refusal(recipe(), HALF_NODE)
    assert "only 4 are visible" in message and "CUDA_VISIBLE_DEVICES=0,1,2,3" in message and "N_GPUS=4" in message


def test_memory_over_an_80gb_card_is_refused_with_settings_that_fit(recipe):
    message = _refusal(recipe(), H100)
    assert message.startswith("per-GPU memory during rollout is estimated at vLLM (0.8 x 79.6) 63.7 +")
    assert "= 76.4 GiB" in message and "NVIDIA H100 80GB HBM3" in message
    assert "optimizer_offload=true (OPTIM_OFFLOAD=true)" in message and "ROLLOUT_GPU_MEM=0.75" in message
    # each suggested fix passes
    for fix in ("actor_rollout_ref.actor.fsdp_config.optimizer_offload=true",
                "actor_rollout_ref.rollout.gpu_memory_utilization=0.75"):
        gp.check_gpu_run(recipe(fix), H100, ALL_IMPORT, PLENTY, log=lambda line: None)
    gp.check_gpu_run(recipe(), H200, ALL_IMPORT, PLENTY, log=lambda line: None)  # 141 GB: room without offload
    training = _refusal(recipe("actor_rollout_ref.model.enable_gradient_checkpointing=false",
                               "actor_rollout_ref.actor.fsdp_config.optimizer_offload=true"), H100)
    assert training.startswith("per-GPU memory during training") and "enable_gradient_checkpointing=true" in training


def test_missing_packages_warn_with_their_cost(recipe):
    lines = []
    packages = {"flash_attn": "not installed", "torchcodec": "installed but does not import (OSError: libavutil)"}
    gp.check_gpu_run(recipe("actor_rollout_ref.actor.fsdp_config.optimizer_offload=true"), H100, packages, PLENTY,
                     log=lines.append)
    assert len(lines) == 2 and all("\n" not in line and line.startswith("[luffy] warning: ") for line in lines)
    assert "flash_attn not installed: the actor runs sdpa" in lines[0] and "chunked fp32" in lines[0]
    assert "torchcodec installed but does not import (OSError: libavutil)" in lines[1] and "FFmpeg" in lines[1]
    broken = _refusal(recipe(), H100, {"flash_attn": "installed but does not import (ImportError: undefined symbol)"})
    assert "would fail loading attn_implementation=flash_attention_2" in broken


def test_short_disk_warns(recipe):
    lines = []
    config = recipe("actor_rollout_ref.actor.fsdp_config.optimizer_offload=true")
    gp.check_gpu_run(config, H100, ALL_IMPORT, 100 * 10**9, log=lines.append)
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "checkpoints need 183 GB" in lines[0] and "91 GB each" in lines[0] and "100 GB are free" in lines[0]
    lines.clear()
    gp.check_gpu_run(config, H100, ALL_IMPORT, 200 * 10**9, log=lines.append)
    assert lines == []


def test_probes_run_here_and_cpu_runs_are_not_checked(recipe, monkeypatch):
    facts = gp.probe_devices()  # whatever this machine has: a CPU build here, a GPU build on a GPU node
    assert facts.cuda_available == (facts.device_count > 0)
    assert set(gp.probe_packages(("luffy", "no_such_package_xyz"))) == {"no_such_package_xyz"}
    assert gp.gpu_run_requested(recipe())
    assert not gp.gpu_run_requested(recipe("trainer.device=cpu"))
    assert not gp.gpu_run_requested(recipe("trainer.n_gpus_per_node=0"))
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    assert not gp.gpu_run_requested(recipe())
    gp.check_gpu_run(recipe(), CPU_TORCH, ALL_IMPORT, 0)  # the CPU platform: nothing to check
