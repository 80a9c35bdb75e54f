"""luffy: LUFFY (Learning to reason Under oFF-policY guidance) on veRL 0.9.1."""

__version__ = "0.1.0"
