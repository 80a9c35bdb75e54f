"""Reading, normalising and filtering training/evaluation data into veRL's RL parquet schema.

Modules, one job each:

- ``errors``   ``LuffyDataError``.
- ``schema``   the output schema (columns, arrow types), prompt building, target normalisation.
- ``readers``  parquet / jsonl / json / ``save_to_disk`` folders / hub names into numbered rows.
- ``normalize`` one input row (raw OpenR1-Math or already prepared) into a candidate or a skip reason.
- ``filters``  token budget, answer verification and duplicate filters over many candidates.
- ``pipeline`` the whole preparation (read, normalise, filter, shuffle/split, write, report).
- ``eval_rows`` evaluation rows (benchmark-style prompts, multiple-choice rendering, copies).
"""

from luffy.data.errors import LuffyDataError

__all__ = ["LuffyDataError"]
