"""veRL plugin entry point: registers every luffy piece in veRL's registries.

Loaded in every process that imports ``verl`` (entry point ``verl.plugins`` -> ``luffy``) and, for
Ray workers started elsewhere, through ``VERL_USE_EXTERNAL_MODULES=luffy.plugin``. veRL swallows a
failing entry point at DEBUG level, so a broken import here is logged loudly before re-raising.
"""

import logging

logger = logging.getLogger(__name__)

try:
    from luffy.cpu import registration as _cpu_registration  # noqa: F401
    from luffy.mix_src import registration as _mix_registration  # noqa: F401
except Exception:  # pragma: no cover - surfaced to the user, then re-raised
    logger.exception("luffy failed to register its veRL plugins; LUFFY names will be unknown to veRL")
    raise
