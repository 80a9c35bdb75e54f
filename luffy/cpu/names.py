"""Names luffy's CPU pieces are registered under in veRL (no imports: safe from any module)."""

PLATFORM_NAME = "cpu"
"""``PlatformRegistry`` name and torch device type; selected with ``VERL_PLATFORM=cpu``."""

ROLLOUT_NAME = "hf_cpu"
"""``actor_rollout_ref.rollout.name`` of the transformers rollout server."""
