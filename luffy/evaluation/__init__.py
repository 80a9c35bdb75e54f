"""Evaluation support for ``eval_scripts/``: input loading, engines, resumable results, summaries."""
