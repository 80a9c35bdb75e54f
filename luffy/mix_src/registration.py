"""Registers LUFFY algorithm pieces (advantage estimator, agent loop) with veRL."""
