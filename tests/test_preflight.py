"""Checks before Ray starts (luffy.mix_src.preflight): model context, wandb, training targets, attention."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from omegaconf import OmegaConf

from luffy.mix_src import preflight as pf

REPO_ROOT = Path(__file__).resolve().parents[1]


def _model_dir(tmp_path: Path, **config) -> Path:
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2", **config}))
    return folder


def _cfg(model: Path | str = "unused", prompt: int = 1024, response: int = 8192, **sections):
    base = {
        "data": {"max_prompt_length": prompt, "max_response_length": response, "train_files": []},
        "actor_rollout_ref": {"model": {"path": str(model)}, "rollout": {"n_prefix": 1}},
        "trainer": {"logger": ["console"]},
    }
    for key, value in sections.items():
        section, name = key.split("__")
        base.setdefault(section, {})[name] = value
    return OmegaConf.create(base)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"max_position_embeddings": 4096}, 4096),
        ({"max_position_embeddings": 4096, "rope_scaling": None}, 4096),
        # yarn x4 over the original 32k (Qwen2.5's long-context recipe)
        ({"max_position_embeddings": 32768, "rope_scaling": {"type": "yarn", "factor": 4.0,
                                                              "original_max_position_embeddings": 32768}}, 131072),
        # Llama 3.1: the config already states the scaled length
        ({"max_position_embeddings": 131072, "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                                                               "original_max_position_embeddings": 8192}}, 131072),
        # transformers 5 naming, no original length given
        ({"max_position_embeddings": 4096, "rope_parameters": {"rope_type": "linear", "factor": 2.0}}, 8192),
        # a rope_theta-only parameter block does not scale
        ({"max_position_embeddings": 16384, "rope_parameters": {"rope_type": "default", "rope_theta": 40000}}, 16384),
        ({"text_config": {"max_position_embeddings": 2048}}, 2048),
        ({}, None),
    ],
)
def test_model_context(config, expected):
    assert pf.model_context(config) == expected


def test_context_too_short_names_both_numbers_and_the_fix(tmp_path):
    model = _model_dir(tmp_path, max_position_embeddings=4096)
    with pytest.raises(ValueError) as err:
        pf.check_context_length(_cfg(model, 1024, 8192))
    message = str(err.value)
    assert "1024" in message and "8192" in message and "9216" in message and "4096" in message
    assert "16k" in message and "RESPONSE_LEN" in message and "\n" not in message
    pf.check_context_length(_cfg(model, 1024, 3072))  # exactly fits
    with pytest.raises(ValueError, match="4097 tokens"):
        pf.check_context_length(_cfg(model, 1024, 3073))


def test_unreadable_model_path_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"actor_rollout_ref.model.path=.*cannot read") as err:
        pf.check_context_length(_cfg(tmp_path / "missing"))
    assert "\n" not in str(err.value)


@pytest.fixture
def no_wandb_env(tmp_path, monkeypatch) -> Path:
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_wandb_asked_without_credentials_fails(no_wandb_env):
    with pytest.raises(ValueError, match=r"asks for wandb, but no wandb credentials") as err:
        pf.check_logger(_cfg(trainer__logger=["console", "wandb"]))
    assert "WANDB_MODE=offline" in str(err.value) and "\n" not in str(err.value)
    pf.check_logger(_cfg(trainer__logger=["console", "file"]))  # not asked: fine


@pytest.mark.parametrize("how", ["api_key", "netrc", "offline"])
def test_wandb_credentials_found(no_wandb_env, monkeypatch, how):
    if how == "api_key":
        monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    elif how == "netrc":
        netrc_file = no_wandb_env / ".netrc"
        netrc_file.write_text("machine api.wandb.ai\n  login user\n  password " + "x" * 40 + "\n")
        netrc_file.chmod(0o600)
    else:
        monkeypatch.setenv("WANDB_MODE", "offline")
    assert pf.wandb_credentials() is not None
    pf.check_logger(_cfg(trainer__logger="wandb"))


def _parquet(path: Path, **columns) -> Path:
    pq.write_table(pa.table({"prompt": ["p0", "p1", "p2"], **columns}), path)
    return path


def test_training_file_without_target_fails_only_with_n_prefix(tmp_path):
    no_target = _parquet(tmp_path / "eval.parquet")
    with pytest.raises(ValueError, match=r"eval.parquet has no 'target' column .*n_prefix=1"):
        pf.check_training_targets(_cfg(data__train_files=[str(no_target)]))
    pf.check_training_targets(_cfg(data__train_files=str(no_target), actor_rollout_ref__rollout={"n_prefix": 0}))


def test_training_file_with_a_blank_target_names_the_row(tmp_path):
    targets = [[{"role": "assistant", "content": "a"}], [{"role": "assistant", "content": " "}], []]
    bad = _parquet(tmp_path / "bad.parquet", target=targets)
    with pytest.raises(ValueError, match=r"row 1 of .*bad.parquet: 'target' has a null or blank trace \(2 bad"):
        pf.check_training_targets(_cfg(data__train_files=str(bad)))
    pf.check_training_targets(_cfg(data__train_files=str(bad), data__target_validation="skip"))
    with pytest.raises(ValueError, match="does not exist"):
        pf.check_training_targets(_cfg(data__train_files=str(tmp_path / "none.parquet")))


def test_attention_falls_back_to_sdpa_without_flash_attn(monkeypatch, capsys):
    real_find_spec = pf.importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "flash_attn" else real_find_spec(name, *args)

    monkeypatch.setattr(pf.importlib.util, "find_spec", find_spec)
    cfg = _cfg()
    assert pf.choose_attention(cfg) == "sdpa"
    assert cfg.actor_rollout_ref.model.override_config.attn_implementation == "sdpa"
    assert "flash-attn is not installed" in capsys.readouterr().out
    explicit = _cfg(actor_rollout_ref__model={"path": "m", "override_config": {"attn_implementation": "eager"}})
    assert pf.choose_attention(explicit) == "eager"

    monkeypatch.setattr(pf.importlib.util, "find_spec", lambda name, *a: object())  # flash_attn importable
    cfg = _cfg()
    assert pf.choose_attention(cfg) == "flash_attention_2"
    assert "override_config" not in cfg.actor_rollout_ref.model


@pytest.mark.slow  # starts the entry point or Ray in a subprocess
@pytest.mark.parametrize("case", ["context", "wandb", "targets", "gpu"])
def test_entry_point_refuses_before_ray(case, tiny_model_dir, tmp_path):
    """The refusals as a user meets them: one line on stderr, non-zero exit, no Ray ("gpu": this machine's
    own CPU build of torch, asked for the default GPUs)."""
    eval_file = _parquet(tmp_path / "valid.parquet", data_source=["a", "b", "c"])
    args = [
        f"actor_rollout_ref.model.path={tiny_model_dir}",
        f"data.train_files={eval_file}",
        f"data.val_files={eval_file}",
        "data.max_prompt_length=512",
        "data.max_response_length=512",
        "trainer.logger=[console]",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env.update(HOME=str(tmp_path), HYDRA_FULL_ERROR="0")
    if case == "context":
        args += ["data.max_prompt_length=1024", "data.max_response_length=8192"]
        expected = "= 9216 tokens exceed the context"
    elif case == "wandb":
        args += ["trainer.logger=[console,wandb]"]
        expected = "asks for wandb, but no wandb credentials"
    elif case == "gpu":
        if torch.version.cuda is not None:
            pytest.skip("torch here is a CUDA build")
        args += ["actor_rollout_ref.rollout.n_prefix=0"]
        env.pop("VERL_PLATFORM", None)
        expected = "trainer.n_gpus_per_node=8 asks for GPUs, but torch"
    else:
        expected = "valid.parquet has no 'target' column"
    proc = subprocess.run(
        [sys.executable, "-m", "luffy.mix_src.main_mix_ppo", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: LUFFY cannot start:") and expected in lines[-1], proc.stderr[-2000:]
    assert "ray init" not in (proc.stdout + proc.stderr).lower()
