"""veRL plugin entry point: registers every luffy piece in veRL's registries.

Loaded in every process that imports ``verl`` (entry point ``verl.plugins`` -> ``luffy``) and, for
Ray workers started elsewhere, through ``VERL_USE_EXTERNAL_MODULES=luffy.plugin``. veRL swallows a
failing entry point at DEBUG level, so a broken import here is logged loudly before re-raising.

Import ``verl`` (or this module) before luffy's veRL-facing modules: when one of them is the first to
import ``verl``, this plugin runs while that module is still half-imported and cannot register it.
"""

import logging
import sys

logger = logging.getLogger(__name__)


def _half_imported_luffy_modules() -> list[str]:
    """luffy modules still executing their own imports (other than this plugin and its packages)."""
    return [
        name
        for name, module in list(sys.modules.items())
        if name.startswith("luffy.")
        and name != __name__
        and not hasattr(module, "__path__")
        and getattr(getattr(module, "__spec__", None), "_initializing", False)
    ]


try:
    from luffy.cpu import registration as _cpu_registration  # noqa: F401
    from luffy.mix_src import registration as _mix_registration  # noqa: F401
except Exception:  # surfaced to the user, then re-raised
    half_imported = _half_imported_luffy_modules()
    if half_imported:
        logger.error(
            "luffy could not register its veRL plugins: %s imported verl before luffy.plugin ran; "
            "import verl (or luffy.plugin) first",
            ", ".join(half_imported),
        )
    else:
        logger.exception("luffy failed to register its veRL plugins; LUFFY names will be unknown to veRL")
    raise

from luffy import profiling  # noqa: E402  (after registration: wraps nothing unless LUFFY_PROFILE_DIR is set)

profiling.install()
