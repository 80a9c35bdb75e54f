"""A veRL platform for machines without an accelerator: torch on the CPU, gloo for collectives.

veRL resolves its platform once per process (``VERL_PLATFORM`` or auto-detection). This one is only
chosen explicitly (``VERL_PLATFORM=cpu``): it never claims to be detected, so registering it is
harmless on a GPU machine. Ray's logical ``GPU`` resources stand in for devices, so the single
controller can place one rank per logical GPU while everything runs on the CPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry

from luffy.cpu.names import PLATFORM_NAME

logger = logging.getLogger(__name__)


def _host_memory() -> tuple[int, int]:
    """(free, total) bytes of host memory, the CPU counterpart of ``torch.cuda.mem_get_info``."""
    try:
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.available), int(vm.total)
    except ImportError:  # pragma: no cover - psutil ships with ray
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return pages * page_size, pages * page_size


class CpuDeviceModule(ModuleType):
    """Stand-in for ``torch.cuda`` where veRL calls ``get_torch_device().<fn>``.

    ``torch.cpu`` lacks most of the memory, RNG and naming functions veRL calls on its device module;
    they are answered here (memory counters are 0: host memory is not tracked per device) and every
    other attribute falls back to ``torch.cpu`` (``Stream``, ``stream``, ``current_stream``, ``Event``).
    """

    def __init__(self) -> None:
        super().__init__("luffy_cpu_device")

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cpu, name)

    # -- device ----------------------------------------------------------------------------------
    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def current_device() -> str:
        return PLATFORM_NAME

    @staticmethod
    def set_device(device: Any) -> None:
        """No-op: there is one CPU device."""

    @staticmethod
    def get_device_name(device: Any = None) -> str:
        return PLATFORM_NAME

    @staticmethod
    def synchronize(device: Any = None) -> None:
        """No-op: CPU kernels run synchronously."""

    # -- memory ----------------------------------------------------------------------------------
    @staticmethod
    def mem_get_info(device: Any = None) -> tuple[int, int]:
        return _host_memory()

    @staticmethod
    def memory_allocated(device: Any = None) -> int:
        return 0

    @staticmethod
    def memory_reserved(device: Any = None) -> int:
        return 0

    @staticmethod
    def max_memory_allocated(device: Any = None) -> int:
        return 0

    @staticmethod
    def max_memory_reserved(device: Any = None) -> int:
        return 0

    @staticmethod
    def reset_peak_memory_stats(device: Any = None) -> None:
        """No-op: no per-device memory counters on the CPU."""

    @staticmethod
    def empty_cache() -> None:
        """No-op: the CPU allocator has no cache to release."""

    @staticmethod
    def ipc_collect() -> None:
        """No-op: no CUDA IPC handles on the CPU."""

    @staticmethod
    def set_per_process_memory_fraction(fraction: float, device: Any = None) -> None:
        """No-op: host memory is not partitioned."""

    # -- random number generator -----------------------------------------------------------------
    @staticmethod
    def get_rng_state(device: Any = None) -> torch.Tensor:
        return torch.get_rng_state()

    @staticmethod
    def set_rng_state(state: torch.Tensor, device: Any = None) -> None:
        torch.set_rng_state(state)

    @staticmethod
    def manual_seed(seed: int) -> None:
        torch.manual_seed(seed)

    @staticmethod
    def manual_seed_all(seed: int) -> None:
        torch.manual_seed(seed)


@PlatformRegistry.register(platform=PLATFORM_NAME)
class CpuPlatform(PlatformBase):
    """veRL platform ``cpu``: device ``"cpu"``, backend ``gloo``, Ray resource ``GPU`` (logical)."""

    _device_module = CpuDeviceModule()

    @property
    def device_name(self) -> str:
        return PLATFORM_NAME

    @property
    def vendor_name(self) -> str:
        return "generic"

    @property
    def device_module(self) -> ModuleType:
        return self._device_module

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        """Never auto-detected: only ``VERL_PLATFORM=cpu`` selects this platform."""
        return False

    def current_device(self) -> str:  # type: ignore[override]
        # A string, not 0: veRL builds torch devices from it and an integer reads as cuda:0.
        return PLATFORM_NAME

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        """No-op: there is one CPU device."""

    def synchronize(self, device_index: int | None = None) -> None:
        """No-op: CPU kernels run synchronously."""

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        """No-op: allocator settings (expandable segments) are CUDA-only."""

    def empty_cache(self) -> None:
        """No-op: the CPU allocator has no cache to release."""

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        # Ray sets this for the logical GPUs it hands out; torch's CPU build ignores it.
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str) -> Iterator[None]:
        yield

    def profiler_start(self) -> None:
        """No-op: no device profiler."""

    def profiler_stop(self) -> None:
        """No-op: no device profiler."""

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None
