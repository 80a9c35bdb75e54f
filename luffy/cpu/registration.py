"""Registers the CPU platform, engine and rollout with veRL."""
