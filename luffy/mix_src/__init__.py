"""LUFFY's trainer, worker, agent loop, reward and core algorithms on veRL 0.9.1."""
