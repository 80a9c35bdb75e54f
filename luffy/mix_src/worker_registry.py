"""Which actor worker class LUFFY's trainer runs, per veRL device name.

The default is :class:`luffy.mix_src.mix_worker.MixActorRolloutRefWorker`; a platform package registers
its own subclass (``luffy.cpu`` registers one for ``cpu``), so LUFFY's code never imports a platform
package. Entries are ``"module:Class"`` strings: registering imports nothing (it runs during plugin
loading, while ``verl`` is still being imported).
"""

from __future__ import annotations

import importlib

DEFAULT_WORKER = "luffy.mix_src.mix_worker:MixActorRolloutRefWorker"
_WORKERS: dict[str, str] = {}


def register_actor_worker(device: str, class_path: str) -> None:
    """Run ``class_path`` (``"module:Class"``) as LUFFY's actor worker on veRL device ``device``."""
    _WORKERS[device] = class_path


def actor_worker_class(device: str) -> type:
    """The actor worker class for ``device`` (the default when none is registered)."""
    module_name, _, name = _WORKERS.get(device, DEFAULT_WORKER).partition(":")
    return getattr(importlib.import_module(module_name), name)
