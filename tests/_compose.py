"""LUFFY's hydra config for tests: ``mix_ppo_trainer.yaml`` (over veRL's ``ppo_trainer``) composed once.

Composing reads ~30 yaml files (~0.5 s on one core); about fifty tests each need the config with a few
values changed. So the defaults are composed once with hydra, and an override that only changes the
value of an existing key is applied the way hydra's own loader applies it after composition
(``OmegaConf.update(cfg, key, value, merge=True)``, the value parsed by hydra's override grammar).
``+a.b=v`` and ``++a.b=v`` add a value as hydra does. Anything else (``~key``, a config group, a sweep,
an override hydra would refuse) is composed from scratch, so hydra itself answers.
The entry-point tests compose through the real command line.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[1] / "luffy" / "mix_src" / "config"
_MISSING = object()


def _compose_from_scratch(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="mix_ppo_trainer", overrides=overrides)


@lru_cache(maxsize=1)
def _defaults() -> DictConfig:
    return _compose_from_scratch([])


def _applies_as_value(override: Override, defaults: DictConfig) -> bool:
    """Whether hydra would apply ``override`` as a value after composition (no config group, no error)."""
    key = override.key_or_group
    if override.is_delete() or override.is_sweep_override() or "/" in key or override.package is not None:
        return False
    current = OmegaConf.select(defaults, key, default=_MISSING, throw_on_missing=False)
    if override.is_add() or override.is_force_add():  # ``+a.b=v`` / ``++a.b=v``; a dot-less key may be a group
        addable = current is _MISSING or current is None or isinstance(override.value(), (dict, list))
        return "." in key and (override.is_force_add() or addable)
    return current is not _MISSING and not isinstance(current, DictConfig)


def compose_luffy(*overrides: str) -> DictConfig:
    """The composed config with ``overrides`` (hydra command-line syntax), as ``compose`` returns it."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    defaults = _defaults()
    if not all(_applies_as_value(o, defaults) for o in parsed):
        return _compose_from_scratch(list(overrides))
    cfg = copy.deepcopy(defaults)
    for o in parsed:
        OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True, force_add=o.is_add() or o.is_force_add())
    return cfg
