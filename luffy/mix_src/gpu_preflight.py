"""Checks of a GPU run before Ray starts: CUDA, optional packages, per-GPU memory, checkpoint disk.

Runs when the run asks for GPUs (``trainer.n_gpus_per_node > 0``, ``trainer.device=cuda``, not the CPU
platform). The device facts (:class:`DeviceFacts`: torch's CUDA version, driver, device count and
memory) and the optional packages' import errors are read once by :func:`probe_devices` /
:func:`probe_packages`; the checks are plain functions of them, so tests pass made-up facts.

- no usable CUDA, or fewer devices than ``n_gpus_per_node``: refused, naming torch's CUDA version, the
  driver and the driver that build needs;
- ``flash_attn`` or ``torchcodec`` missing or not importing: a one-line warning saying what it costs
  (a ``flash_attn`` that is installed but does not import is refused: the actor would fail loading it);
- per-GPU memory over the card (:mod:`luffy.mix_src.gpu_budget`, rollout and training phases): refused
  with the settings that would fit;
- checkpoints (size x how many veRL keeps at once) over the free disk of ``trainer.default_local_dir``:
  a warning.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from luffy.mix_src import gpu_budget as gb

# Oldest Linux driver for each CUDA major version of torch's build (NVIDIA's CUDA toolkit release notes,
# minor-version compatibility: CUDA 11.x >= 450.80.02, 12.x >= 525.60.13, 13.x >= 580).
MIN_DRIVER = {11: 450, 12: 525, 13: 580}
OPTIONAL_PACKAGES = ("flash_attn", "torchcodec")
COSTS = {
    "flash_attn": "the actor runs sdpa, one dense masked attention over each packed micro-batch instead of one per "
    "sequence (slower; see docs/gpu.md), and log-probs from chunked fp32 logits instead of flash-attn's fused kernel; "
    "pip install --no-build-isolation -e '.[flash-attn]' with nvcc for CUDA 13",
    "torchcodec": "vLLM's audio module imports it and can fail at start-up with this error (FFmpeg's shared "
    "libraries missing); install FFmpeg 4-7, or pip uninstall torchcodec (text-only runs do not use it)",
}


@dataclass(frozen=True)
class DeviceFacts:
    """What this node's torch and driver report.

    Attributes:
        torch_version: ``torch.__version__``.
        torch_cuda: ``torch.version.cuda`` (None for a CPU build).
        cuda_available: ``torch.cuda.is_available()``.
        device_count: visible CUDA devices.
        driver: NVIDIA driver version (``/proc/driver/nvidia/version`` or ``nvidia-smi``), None if none found.
        memory_gib: total memory of the smallest visible device, GiB (None without devices).
        device_name: name of that device.
    """

    torch_version: str
    torch_cuda: str | None
    cuda_available: bool
    device_count: int
    driver: str | None
    memory_gib: float | None = None
    device_name: str = "GPU"


def _driver_version() -> str | None:
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
        found = re.search(r"Kernel Module(?: for \S+)?\s+([0-9]+(?:\.[0-9]+)+)", text)
        if found:
            return found.group(1)
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=False,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0] if out else None


def probe_devices() -> DeviceFacts:
    """This node's :class:`DeviceFacts` (torch, the driver, visible devices)."""
    import torch

    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    memory, name = None, "GPU"
    if count:
        props = min((torch.cuda.get_device_properties(i) for i in range(count)), key=lambda p: p.total_memory)
        memory, name = props.total_memory / gb.GIB, props.name
    return DeviceFacts(torch.__version__, torch.version.cuda, available, count, _driver_version(), memory, name)


def probe_packages(names: tuple[str, ...] = OPTIONAL_PACKAGES) -> dict[str, str]:
    """``{package: why it is unusable}`` for each of ``names`` that is missing or fails to import."""
    problems = {}
    for name in names:
        if importlib.util.find_spec(name) is None:
            problems[name] = "not installed"
            continue
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - OSError (missing shared library), ImportError (ABI), ...
            first = str(err).splitlines()[0] if str(err) else ""
            problems[name] = f"installed but does not import ({type(err).__name__}: {first[:160]})"
    return problems


def gpu_run_requested(config: Any) -> bool:
    """``trainer.n_gpus_per_node > 0`` on device ``cuda``, outside luffy's CPU platform."""
    trainer = config.trainer
    device = str(trainer.get("device", "cuda") or "cuda")
    return (
        int(trainer.get("n_gpus_per_node", 0) or 0) > 0
        and device == "cuda"
        and os.environ.get("VERL_PLATFORM", "") != "cpu"
    )


def required_driver(torch_cuda: str | None) -> int | None:
    """The oldest driver major version for torch's CUDA version (None when unknown)."""
    major = _major(torch_cuda)
    return None if major is None else MIN_DRIVER.get(major)


def _major(version: str | None) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def check_cuda(facts: DeviceFacts, n_gpus: int) -> None:
    """Refuse when torch cannot use ``n_gpus`` CUDA devices here.

    Raises:
        ValueError: one line naming torch's CUDA version, the driver and the driver needed.
    """
    asked = f"trainer.n_gpus_per_node={n_gpus} asks for GPUs"
    if facts.torch_cuda is None:
        raise ValueError(
            f"{asked}, but torch {facts.torch_version} is a CPU build (torch.version.cuda is None); install the "
            "GPU stack (pip install -e '.[gpu]' in a fresh venv, see docs/gpu.md), or rehearse on the CPU "
            "(exp_scripts/rehearse_cpu.py)"
        )
    need = required_driver(facts.torch_cuda)
    driver = facts.driver or "not found"
    stack = f"torch {facts.torch_version} is built for CUDA {facts.torch_cuda}, NVIDIA driver {driver}"
    floor = f"CUDA {facts.torch_cuda.split('.')[0]} builds need driver >= {need}" if need else "see NVIDIA's table"
    if not facts.cuda_available or facts.device_count == 0:
        if need and _major(facts.driver) is not None and _major(facts.driver) < need:
            old = f"the driver is too old: {floor}; update it, or install a torch built for an older CUDA"
        else:
            old = f"{floor}; check nvidia-smi and CUDA_VISIBLE_DEVICES"
        raise ValueError(f"{asked}, but torch sees no usable GPU ({stack}); {old}")
    if facts.device_count < n_gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise ValueError(
            f"{asked}, but only {facts.device_count} are visible here ({stack}"
            f"{', CUDA_VISIBLE_DEVICES=' + visible if visible is not None else ''}); set N_GPUS="
            f"{facts.device_count} (trainer.n_gpus_per_node) or free the others"
        )


def package_warnings(problems: dict[str, str]) -> list[str]:
    """One warning line per unusable optional package, with what it costs.

    Raises:
        ValueError: flash_attn installed but not importing (the actor would fail loading flash_attention_2).
    """
    lines = []
    for name, why in problems.items():
        if name == "flash_attn" and why != "not installed":
            raise ValueError(
                f"flash_attn is {why}: the actor would fail loading attn_implementation=flash_attention_2; "
                "rebuild it against the installed torch (pip install --no-build-isolation -e '.[flash-attn]') "
                "or pip uninstall flash-attn to train with sdpa"
            )
        lines.append(f"[luffy] warning: {name} {why}: {COSTS.get(name, 'some features are unavailable')}")
    return lines


def run_settings(config: Any) -> gb.GpuRun:
    """The :class:`~luffy.mix_src.gpu_budget.GpuRun` of a composed config."""
    trainer, arr = config.trainer, config.actor_rollout_ref
    actor, fsdp, rollout = arr.actor, arr.actor.fsdp_config, arr.rollout
    if actor.get("use_dynamic_bsz", False):
        tokens = int(actor.ppo_max_token_len_per_gpu)
    else:
        micro = actor.get("ppo_micro_batch_size_per_gpu") or 1
        tokens = int(micro) * (int(config.data.max_prompt_length) + int(config.data.max_response_length))
    sp = int(actor.get("ulysses_sequence_parallel_size", 1) or 1)
    return gb.GpuRun(
        n_gpus=int(trainer.n_gpus_per_node) * int(trainer.get("nnodes", 1) or 1),
        gpu_memory_utilization=float(rollout.get("gpu_memory_utilization", 0.0) or 0.0)
        if rollout.get("name") in ("vllm", "sglang")
        else 0.0,
        tokens_per_gpu=max(1, tokens // sp),
        fsdp_size=int(fsdp.get("fsdp_size", -1) or -1),
        param_offload=bool(fsdp.get("param_offload", False)),
        optimizer_offload=bool(fsdp.get("optimizer_offload", False)),
        offload_policy=bool(fsdp.get("offload_policy", False)),
        gradient_checkpointing=bool(arr.model.get("enable_gradient_checkpointing", False)),
        free_cache_engine=bool(rollout.get("free_cache_engine", True)),
    )


def _fits(phase: Callable, shape: gb.ModelShape, run: gb.GpuRun, card: float, **change) -> bool:
    from dataclasses import replace

    return phase(shape, replace(run, **change), card).fits


def check_memory(shape: gb.ModelShape, run: gb.GpuRun, card_gib: float, device: str = "GPU") -> None:
    """Refuse a run whose rollout or training phase is estimated over the card (less the headroom).

    Raises:
        ValueError: one line: the phase's parts, the card, and the settings that would fit.
    """
    for phase in (gb.rollout_phase, gb.training_phase):
        est = phase(shape, run, card_gib)
        if est.fits:
            continue
        fixes = []
        offloaded = run.optimizer_offload or run.offload_policy
        if not offloaded and _fits(phase, shape, run, card_gib, optimizer_offload=True):
            fixes.append("actor_rollout_ref.actor.fsdp_config.optimizer_offload=true (OPTIM_OFFLOAD=true)")
        if phase is gb.rollout_phase:
            util = gb.max_gpu_memory_utilization(shape, run, card_gib)
            if util > 0:
                key = "actor_rollout_ref.rollout.gpu_memory_utilization"
                fixes.append(f"{key}={util:.2f} (ROLLOUT_GPU_MEM={util:.2f})")
        else:
            if not run.gradient_checkpointing and _fits(phase, shape, run, card_gib, gradient_checkpointing=True):
                fixes.append("actor_rollout_ref.model.enable_gradient_checkpointing=true")
            tokens = gb.max_tokens_per_gpu(shape, run, card_gib)
            if tokens > 0:
                fixes.append(f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={tokens} (TOKENS_PER_GPU={tokens})")
        raise ValueError(
            f"per-GPU memory during {est.name} is estimated at {est.describe()} for {shape.n_params / 1e9:.2f}B "
            f"parameters sharded over {run.shards} GPUs, over the {est.usable_gib:.1f} GiB usable of a "
            f"{card_gib:.1f} GiB {device} ({gb.HEADROOM:.0%} kept free); set "
            + (" or ".join(fixes) if fixes else "more GPUs, offload, or shorter sequences")
        )


def _free_bytes(path: str) -> int:
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def disk_warning(config: Any, n_params: int, free_bytes: int | None = None) -> str | None:
    """A warning line when the checkpoints veRL keeps at once would not fit the free disk, else None."""
    trainer = config.trainer
    if int(trainer.get("save_freq", -1) or -1) <= 0:
        return None
    contents = OmegaConf.select(config, "actor_rollout_ref.actor.checkpoint.save_contents", default=None) or [
        "model", "optimizer", "extra",
    ]
    one = gb.checkpoint_bytes(n_params, list(contents))
    kept = trainer.get("max_actor_ckpt_to_keep")
    at_once = gb.checkpoints_on_disk(kept)
    path = str(trainer.default_local_dir)
    free = _free_bytes(path) if free_bytes is None else free_bytes
    need = one * (at_once or 2)
    if free >= need and (at_once is not None or one < 10**9):
        return None
    how = (
        f"up to {at_once} at once (trainer.max_actor_ckpt_to_keep={kept})"
        if at_once is not None
        else "every one (trainer.max_actor_ckpt_to_keep=null)"
    )
    if free >= need:
        return (
            f"[luffy] warning: veRL keeps {how} of {one / 1e9:.0f} GB each under {path} ({free / 1e9:.0f} GB free): "
            "set trainer.max_actor_ckpt_to_keep"
        )
    return (
        f"[luffy] warning: checkpoints need {need / 1e9:.0f} GB under {path} ({one / 1e9:.0f} GB each: "
        f"{', '.join(contents)}; {how}) but {free / 1e9:.0f} GB are free; point CKPT_DIR "
        "(trainer.default_local_dir) at a larger disk or lower trainer.max_actor_ckpt_to_keep"
    )


def model_shape_of(config: Any) -> gb.ModelShape | None:
    """The actor model's :class:`~luffy.mix_src.gpu_budget.ModelShape` from its ``config.json`` (None if not dense)."""
    from luffy.mix_src.preflight import actor_model_config  # preflight imports this module

    return gb.model_shape(actor_model_config(config))


def check_gpu_run(
    config: Any,
    facts: DeviceFacts | None = None,
    packages: dict[str, str] | None = None,
    free_disk_bytes: int | None = None,
    log: Callable[[str], None] = lambda line: print(line, flush=True),
) -> None:
    """Every check above, for a run that asks for GPUs (nothing otherwise).

    Args:
        facts, packages, free_disk_bytes: this node's, probed when None.
        log: where warnings go.

    Raises:
        ValueError: the first refusal, one line.
    """
    if not gpu_run_requested(config):
        return
    facts = probe_devices() if facts is None else facts
    check_cuda(facts, int(config.trainer.n_gpus_per_node))
    for line in package_warnings(probe_packages() if packages is None else packages):
        log(line)
    shape = model_shape_of(config)
    if shape is None:
        log("[luffy] the model's config is not a dense decoder this check can size: no memory or disk estimate")
        return
    if facts.memory_gib:
        check_memory(shape, run_settings(config), facts.memory_gib, facts.device_name)
    warning = disk_warning(config, shape.n_params, free_disk_bytes)
    if warning:
        log(warning)
