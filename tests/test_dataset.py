"""LuffyRLHFDataset: veRL's RLHFDataset loading a prepared parquet and yielding a checked target."""

from __future__ import annotations

from pathlib import Path

import _data_fixtures as fixtures
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _data_fixtures import raw_rows, write_jsonl

from luffy.data.errors import LuffyDataError
from luffy.data.pipeline import PrepareOptions, prepare, write_outputs
from luffy.mix_src.dataset import LuffyRLHFDataset, find_bad_targets

# Shared fixtures, registered in this module under their own names.
tiny_tokenizer = fixtures.tiny_tokenizer
tiny_tokenizer_dir = fixtures.tiny_tokenizer_dir



def _config(tmp_path: Path, **extra):
    from omegaconf import OmegaConf

    return OmegaConf.create(
        {
            "max_prompt_length": 1024,
            "cache_dir": str(tmp_path / "cache"),
            "filter_overlong_prompts_workers": 1,
            "custom_cls": {"path": "pkg://luffy.mix_src.dataset", "name": "LuffyRLHFDataset"},
            **extra,
        }
    )


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("prepared")
    result = prepare(str(write_jsonl(raw_rows(), tmp / "in.jsonl")), PrepareOptions(progress=False))
    return write_outputs(result, tmp / "out")["train"]


def test_loads_through_verl_config_and_yields_target(prepared: Path, tiny_tokenizer, tmp_path: Path) -> None:
    from verl.utils.dataset.rl_dataset import collate_fn, get_dataset_class

    config = _config(tmp_path)
    cls = get_dataset_class(config)
    assert cls is LuffyRLHFDataset
    dataset = cls(str(prepared), tiny_tokenizer, config)
    assert len(dataset) == pq.read_metadata(prepared).num_rows
    item = dataset[0]
    assert isinstance(item["target"], list) and item["target"][0]["role"] == "assistant"
    assert item["target"][0]["content"].startswith("<think>")
    assert item["raw_prompt"][1]["role"] == "user"
    batch = collate_fn([dataset[0], dataset[1]])
    assert batch["target"].shape == (2,) and isinstance(batch["target"][0], list)


def _with_bad_targets(prepared: Path, tmp_path: Path) -> Path:
    table = pq.read_table(prepared)
    targets = table.column("target").to_pylist()
    targets[2] = []
    targets[4] = [{"content": "  ", "role": "assistant"}]
    column = pa.array(targets, table.schema.field("target").type)
    table = table.set_column(table.schema.get_field_index("target"), "target", column)
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    return path


def test_bad_target_raises_with_row_and_field(prepared: Path, tiny_tokenizer, tmp_path: Path) -> None:
    bad = _with_bad_targets(prepared, tmp_path)
    with pytest.raises(LuffyDataError, match=r"row 2 .*'target' is an empty list"):
        LuffyRLHFDataset(str(bad), tiny_tokenizer, _config(tmp_path))


def test_bad_target_rows_skipped_when_asked(prepared: Path, tiny_tokenizer, tmp_path: Path) -> None:
    bad = _with_bad_targets(prepared, tmp_path)
    dataset = LuffyRLHFDataset(str(bad), tiny_tokenizer, _config(tmp_path, target_validation="skip"))
    assert [row for row, _ in dataset.skipped_target_rows] == [2, 4]
    assert len(dataset) == pq.read_metadata(bad).num_rows - 2


def test_find_bad_targets_on_other_column_types() -> None:
    table = pa.table({"target": pa.array(["ok", "", None])})
    assert [row for row, _ in find_bad_targets(table)] == [1, 2]
    table = pa.table({"target": pa.array([["a"], [], ["b", None]])})
    assert [row for row, _ in find_bad_targets(table)] == [1, 2]
    with pytest.raises(LuffyDataError, match="no 'target' column"):
        find_bad_targets(pa.table({"x": [1]}))


@pytest.fixture(scope="module")
def eval_parquet(tmp_path_factory) -> Path:
    """An evaluation parquet from data/prepare_eval.py (no ``target`` column, like every benchmark file)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("eval") / "valid.parquet"
    repo = Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, str(repo / "data" / "prepare_eval.py"), "--input", str(repo / "data/sample/eval_sample.jsonl"),
         "--output", str(out)],
        check=True, capture_output=True,
    )
    assert "target" not in pq.read_schema(out).names
    return out


def test_eval_parquet_loads_as_validation_set_through_verl(
    prepared: Path, eval_parquet: Path, tiny_tokenizer, tmp_path: Path
) -> None:
    from verl.trainer.ppo.utils import create_rl_dataset

    config = _config(tmp_path, train_files=str(prepared), val_files=[str(eval_parquet)])
    train = create_rl_dataset(config.train_files, config, tiny_tokenizer, None, is_train=True)
    val = create_rl_dataset(config.val_files, config, tiny_tokenizer, None, is_train=False)
    assert isinstance(val, LuffyRLHFDataset) and val.is_validation and not train.is_validation
    assert len(val) == pq.read_metadata(eval_parquet).num_rows
    assert "target" not in val[0] and val[0]["data_source"]
    assert isinstance(train[0]["target"], list)


def test_training_file_without_target_still_fails(eval_parquet: Path, tiny_tokenizer, tmp_path: Path) -> None:
    # the same evaluation file given as training data (also when it doubles as validation data)
    config = _config(tmp_path, train_files=str(eval_parquet), val_files=str(eval_parquet))
    with pytest.raises(LuffyDataError, match=r"no 'target' column .*prepare_train\.py"):
        LuffyRLHFDataset(str(eval_parquet), tiny_tokenizer, config)
