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

# The README's test command runs the suite on two workers (`python -m pytest -n 2 tests`; pyproject.toml
# adds `--dist loadfile --no-loadscope-reorder`): each test file goes whole to one worker, in collection
# order, and a worker takes the next file when it is nearly done. The files with the long end-to-end runs
# come first, longest first, so both workers start on them and the many short files fill in at the end
# (xdist's default order, most tests first, left the longest run for last: ~5 min with one worker idle).
# Minutes in the comments: each file alone on the quiet 2-core machine.
LONG_FILES_FIRST = (
    "test_rehearsal.py",  # ~9: train.sh, train_sft_rl.sh on two nodes, train_rl_sft_loss.sh
    "test_toy_reproduction.py",  # ~6.5: toy_reproduction.sh --quick, two trainer runs
    "test_train_tiny_cpu.py",  # ~5.5: the embedded CPU run and its resume
    "test_train_async_cpu.py",  # ~3: LUFFY in colocate_async and in separate_async, 3 steps each
    "test_faults.py",  # ~3: a killed driver, and every script fed bad input in a subprocess
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONG_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: other files keep their order


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
