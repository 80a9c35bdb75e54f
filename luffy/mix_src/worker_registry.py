"""Which actor worker class LUFFY's trainer runs, per veRL device name.

The default is :class:`luffy.mix_src.mix_worker.MixActorRolloutRefWorker`; a platform package registers
its own subclass (``luffy.cpu`` registers one for ``cpu``), so LUFFY's code never imports a platform
package. Entries are ``"module:Class"`` strings: registering imports nothing (it runs during plugin
loading, while ``verl`` is still being imported).
"""

from __future__ import annotations

import importlib

DEFAULT_WORKER = "luffy.mix_src.mix_worker:MixActorRolloutRefWorker"
# separate_async's trainer ranks: LUFFY's worker with veRL's DetachActorWorker (weights saved on the host)
DEFAULT_DETACH_WORKER = "luffy.mix_src.mix_worker:MixDetachActorWorker"
_WORKERS: dict[str, str] = {}
_DETACH_WORKERS: dict[str, str] = {}


def register_actor_worker(device: str, class_path: str, detach_class_path: str | None = None) -> None:
    """Run ``class_path`` (``"module:Class"``) as LUFFY's actor worker on veRL device ``device``, and
    ``detach_class_path`` (the same worker with veRL's ``DetachActorWorker``) in ``separate_async`` mode."""
    _WORKERS[device] = class_path
    if detach_class_path is not None:
        _DETACH_WORKERS[device] = detach_class_path


def actor_worker_class(device: str, detach: bool = False) -> type:
    """The actor worker class for ``device`` (the default when none is registered); ``detach``: the
    ``separate_async`` variant."""
    path = _DETACH_WORKERS.get(device, DEFAULT_DETACH_WORKER) if detach else _WORKERS.get(device, DEFAULT_WORKER)
    module_name, _, name = path.partition(":")
    return getattr(importlib.import_module(module_name), name)
