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
from verl.workers.rollout.replica import RolloutReplicaRegistry

import luffy.cpu.platform  # noqa: F401  (its decorator registers PlatformRegistry "cpu")
from luffy.cpu.names import PLATFORM_NAME, ROLLOUT_NAME
from luffy.mix_src.worker_registry import register_actor_worker
from luffy.verl_compat import register_rollout_adapter

logger = logging.getLogger(__name__)


def _load_hf_cpu_replica():
    from luffy.cpu.rollout import HFCpuReplica

    return HFCpuReplica


def _load_cpu_vllm_replica():
    from luffy.cpu.vllm_rollout import CpuVLLMReplica

    return CpuVLLMReplica


register_rollout_adapter(ROLLOUT_NAME, "async", "luffy.cpu.rollout.HFCpuServerAdapter")
# LUFFY's trainer runs this actor worker on the cpu platform (the CPU worker extends LUFFY's)
register_actor_worker(
    PLATFORM_NAME, "luffy.cpu.worker:CpuMixActorRolloutRefWorker", "luffy.cpu.worker:CpuMixDetachActorWorker"
)
RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_hf_cpu_replica)

if os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME:
    if PlatformRegistry.get(PLATFORM_NAME) is not None:
        from luffy.cpu.engine import register_cpu_engines

        register_cpu_engines()
        # veRL's own "vllm" loader is its GPU replica; on this platform "vllm" means vLLM's CPU build
        RolloutReplicaRegistry.register("vllm", _load_cpu_vllm_replica)
    else:  # luffy.cpu.platform was imported before verl; import verl (or luffy.plugin) first
        logger.warning("cpu platform not registered yet; FSDP engines for device cpu were not registered")
