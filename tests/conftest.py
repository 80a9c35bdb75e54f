"""Shared fixtures: the read-only ``../shared`` folder and a tiny offline model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"

# Tests never reach a hub: fail fast instead of waiting on a network that is not there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# veRL first, as every veRL process imports it: its plugin loading registers luffy's names before any
# test module imports a luffy module that itself imports veRL (see luffy/plugin.py).
import verl  # noqa: E402,F401


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the checkout; tests that need it skip with the reason when it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared material not found at {SHARED_DIR}")
    return SHARED_DIR


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random-weight 2-layer Qwen2 model and its byte-level BPE tokenizer, built offline once."""
    from luffy.tiny import build_tiny_checkpoint

    corpus = [SHARED_DIR / "data" / "openr1_sample.jsonl"] if SHARED_DIR.is_dir() else []
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_model"), corpus_files=corpus)
