"""Registers the CPU platform, engine and rollout with veRL.

Cheap and safe in any process: the ``cpu`` platform is only used when ``VERL_PLATFORM=cpu``; the
rollout (``rollout.name=hf_cpu``) is two registry entries whose classes load when a run selects it;
the FSDP engines (a heavy import that resolves the platform) are registered for device ``cpu`` only
when the ``cpu`` platform is selected and already registered; so is the CPU build of veRL's vLLM
replica under ``vllm`` (loaded, with vLLM, only when a run selects ``rollout.name=vllm``).

This module runs while ``verl`` itself is being imported (plugin loading), possibly from inside the
import of another ``luffy.cpu`` module, so it imports no ``luffy.cpu`` module that imports it back.
"""

import logging
import os

from verl.plugin.platform import PlatformRegistry
from verl.workers.rollout.base import _ROLLOUT_REGISTRY
from verl.workers.rollout.replica import RolloutReplicaRegistry

import luffy.cpu.platform  # noqa: F401  (its decorator registers PlatformRegistry "cpu")
from luffy.cpu.names import PLATFORM_NAME, ROLLOUT_NAME

logger = logging.getLogger(__name__)


def _load_hf_cpu_replica():
    from luffy.cpu.rollout import HFCpuReplica

    return HFCpuReplica


def _load_cpu_vllm_replica():
    from luffy.cpu.vllm_rollout import CpuVLLMReplica

    return CpuVLLMReplica


# veRL has no public hook for worker-side rollout adapters: get_rollout_class reads this dict.
_ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = "luffy.cpu.rollout.HFCpuServerAdapter"
RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_hf_cpu_replica)

if os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME:
    if PlatformRegistry.get(PLATFORM_NAME) is not None:
        from luffy.cpu.engine import register_cpu_engines

        register_cpu_engines()
        # veRL's own "vllm" loader is its GPU replica; on this platform "vllm" means vLLM's CPU build
        RolloutReplicaRegistry.register("vllm", _load_cpu_vllm_replica)
    else:  # luffy.cpu.platform was imported before verl; import verl (or luffy.plugin) first
        logger.warning("cpu platform not registered yet; FSDP engines for device cpu were not registered")
