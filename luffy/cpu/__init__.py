"""What veRL 0.9.1 lacks to train on a machine without a GPU: platform, engine, rollout server."""
