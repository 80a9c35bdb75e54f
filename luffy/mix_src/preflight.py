"""Checks of the run's inputs and environment before Ray starts, each failing with one line.

:func:`preflight` runs in ``main_mix_ppo`` after the config keys are checked (``config_check``):

- the model's context (``max_position_embeddings``, widened by a rope scaling factor) must hold
  ``data.max_prompt_length + data.max_response_length``;
- ``wandb`` in ``trainer.logger`` needs credentials (``WANDB_API_KEY``, a netrc entry from
  ``wandb login``) or ``WANDB_MODE=offline|disabled``;
- with ``rollout.n_prefix > 0`` every training file needs a usable ``target`` column (the same check,
  and message, as ``LuffyRLHFDataset`` at load time, on that column only);
- the platform packages' own checks (``platform_checks``; e.g. ``rollout.name=vllm`` on the CPU
  platform needs vLLM's CPU build and a head size of 32 or more);
- :func:`check_output_folders` and :func:`check_data_files` (``main_mix_ppo`` runs them first):
  ``trainer.default_local_dir`` is not a file; every data file exists and is a whole parquet from one run;
- a run that asks for GPUs: usable CUDA devices, optional packages, per-GPU memory and checkpoint disk
  (:mod:`luffy.mix_src.gpu_preflight`);
- without the ``flash_attn`` package the actor uses ``sdpa`` instead of veRL's default
  ``flash_attention_2`` (one log line says so).
"""

from __future__ import annotations

import importlib.util
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from omegaconf import OmegaConf, open_dict

from luffy.mix_src.gpu_preflight import check_gpu_run
from luffy.mix_src.platform_checks import run_platform_checks
from luffy.model_folder import read_model_config

ROPE_SCALED_TYPES = ("linear", "dynamic", "yarn", "longrope", "llama3")
WANDB_OFFLINE_MODES = ("offline", "disabled", "dryrun")


def _model_config(path: str, trust_remote_code: bool) -> dict[str, Any]:
    try:
        model = read_model_config(path)  # a damaged config.json: one line naming the file
    except ValueError as err:
        raise ValueError(f"actor_rollout_ref.model.path={path}: {err}") from None
    if model is not None:
        return model
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code).to_dict()
    except Exception as err:  # noqa: BLE001 - any failure here means veRL could not load it either
        raise ValueError(
            f"actor_rollout_ref.model.path={path}: cannot read the model's config ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); point MODEL_PATH at a local model folder"
        ) from None


def model_context(model: dict[str, Any]) -> int | None:
    """Longest sequence the model's config allows, in tokens, or None when it does not say.

    ``max_position_embeddings`` (of ``text_config`` when present), times the factor of a rope
    scaling (``rope_scaling`` or transformers 5's ``rope_parameters``) of a scaling type, measured
    from ``original_max_position_embeddings`` when the config gives it.
    """
    text = model.get("text_config") or model
    text = text if isinstance(text, dict) else model
    max_pos = text.get("max_position_embeddings")
    if not isinstance(max_pos, int) or isinstance(max_pos, bool):
        return None
    rope = text.get("rope_scaling") or text.get("rope_parameters") or {}
    rope = rope if isinstance(rope, dict) else {}
    kind = rope.get("rope_type", rope.get("type"))
    factor = rope.get("factor")
    if kind in ROPE_SCALED_TYPES and isinstance(factor, int | float) and factor > 1:
        base = rope.get("original_max_position_embeddings") or max_pos
        return max(max_pos, int(base * factor))
    return max_pos


def actor_model_path(config: Any) -> str:
    """Where the actor model's config is read from: ``model.hf_config_path``, else ``model.path``."""
    model_cfg = config.actor_rollout_ref.model
    return str(model_cfg.get("hf_config_path") or model_cfg.path)


def actor_model_config(config: Any) -> dict[str, Any]:
    """The actor model's config (:func:`actor_model_path`) as a dict."""
    trust = bool(config.actor_rollout_ref.model.get("trust_remote_code", False))
    return _model_config(actor_model_path(config), trust)


def check_context_length(config: Any) -> None:
    """Refuse prompt + response lengths the model's context cannot hold.

    Raises:
        ValueError: naming both numbers and the fix.
    """
    path = actor_model_path(config)
    context = model_context(actor_model_config(config))
    need = config.data.max_prompt_length + config.data.max_response_length
    if context is not None and need > context:
        raise ValueError(
            f"data.max_prompt_length={config.data.max_prompt_length} + data.max_response_length="
            f"{config.data.max_response_length} = {need} tokens exceed the context of {path} "
            f"(max_position_embeddings {context}); use a model with a longer context (LUFFY trains "
            "Qwen2.5-Math-7B's 16k variant: max_position_embeddings 16384, rope_theta 40000) or lower "
            "RESPONSE_LEN / PROMPT_LEN (data.max_response_length, data.max_prompt_length)"
        )


def _loggers(config: Any) -> list[str]:
    value = config.trainer.get("logger") or []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def wandb_credentials() -> str | None:
    """Where wandb would find its key (env var, netrc entry, offline mode), or None."""
    if os.environ.get("WANDB_MODE", "").lower() in WANDB_OFFLINE_MODES:
        return f"WANDB_MODE={os.environ['WANDB_MODE']}"
    if os.environ.get("WANDB_API_KEY"):
        return "WANDB_API_KEY"
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    netrc_file = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        if os.path.isfile(netrc_file) and netrc.netrc(netrc_file).authenticators(host):
            return f"{netrc_file} ({host})"
    except (netrc.NetrcParseError, OSError):
        return None
    return None


def check_logger(config: Any) -> None:
    """``wandb`` in ``trainer.logger`` needs the package and credentials (or an offline mode).

    Raises:
        ValueError: one line saying what is missing and the ways out.
    """
    loggers = _loggers(config)
    if "wandb" not in loggers:
        return
    asked = f"trainer.logger=[{','.join(loggers)}] asks for wandb"
    if importlib.util.find_spec("wandb") is None:
        raise ValueError(f"{asked}, but the wandb package is not installed; pip install wandb, or leave it out")
    if wandb_credentials() is None:
        raise ValueError(
            f"{asked}, but no wandb credentials are configured (no WANDB_API_KEY, no netrc entry from "
            "`wandb login`); log in, set WANDB_MODE=offline, or leave wandb out (LOGGER='[console,file]')"
        )


def _files(value: Any) -> list[str]:
    return [str(value)] if isinstance(value, str) else [str(v) for v in value or []]


def check_training_targets(config: Any) -> None:
    """With ``n_prefix > 0``, every training file needs a usable target column (read alone, by arrow).

    Raises:
        ValueError: the dataset's own message (file, row, reason, fix).
    """
    if config.actor_rollout_ref.rollout.n_prefix <= 0:
        return
    import pyarrow.parquet as pq

    from luffy.data.readers import open_parquet
    from luffy.mix_src.dataset import bad_targets_message, find_bad_targets

    key = config.data.get("target_key", "target")
    for path in _files(config.data.train_files):
        if not os.path.exists(path):
            raise ValueError(f"data.train_files: {path} does not exist (data/prepare_train.py writes it)")
        if not (os.path.isfile(path) and path.endswith(".parquet")):
            continue  # a folder or another format: the dataset checks it at load time
        names = open_parquet(path).schema_arrow.names  # a truncated file: one line naming it
        if key not in names:
            raise ValueError(
                f"{path} has no '{key}' column (columns: {', '.join(names)}), but "
                f"actor_rollout_ref.rollout.n_prefix={config.actor_rollout_ref.rollout.n_prefix} needs "
                "off-policy targets: prepare it with data/prepare_train.py, set data.target_key, or train "
                "on-policy (n_prefix=0)"
            )
        bad = find_bad_targets(pq.read_table(path, columns=[key]), key)
        if bad and config.data.get("target_validation", "error") == "error":
            raise ValueError(bad_targets_message(path, bad))


def check_data_files(config: Any) -> None:
    """Every local file in ``data.train_files`` and ``data.val_files`` exists; a parquet one is whole (its
    footer reads) and, when a LUFFY script wrote it, from the same run as its siblings (``val.parquet``
    beside ``train.parquet``: :func:`luffy.atomic_outputs.check_run_outputs`). Reads footers only.

    Raises:
        ValueError: naming the key, the file and what is wrong with it.
    """
    from luffy.data.readers import open_parquet

    for key, writer in (("data.train_files", "data/prepare_train.py"), ("data.val_files", "data/prepare_eval.py")):
        for path in _files(OmegaConf.select(config, key, default=None)):
            if "://" in path:
                continue  # hdfs:// and the like: veRL copies it in
            if not os.path.exists(path):
                raise ValueError(f"{key}: {path} does not exist ({writer} writes it)")
            if os.path.isfile(path) and path.endswith(".parquet"):
                try:
                    open_parquet(path)
                except ValueError as err:
                    raise ValueError(f"{key}: {err}") from None


def check_output_folders(config: Any) -> None:
    """``trainer.default_local_dir`` (and the rollout/validation dump folders when set) must be folders or
    creatable as folders: neither the path nor any folder above it may be an existing file.

    Raises:
        ValueError: naming the key and the file in the way.
    """
    for key in ("trainer.default_local_dir", "trainer.rollout_data_dir", "trainer.validation_data_dir"):
        value = OmegaConf.select(config, key, default=None)
        if value is None or "://" in str(value):
            continue
        path = Path(os.path.abspath(str(value)))
        for folder in (path, *path.parents):
            if folder.exists() and not folder.is_dir():
                what = "is an existing file" if folder == path else f"lies under {folder}, an existing file"
                raise ValueError(f"{key}={value}: {what}, not a folder; choose a folder path")


def choose_attention(config: Any) -> str:
    """veRL's default attention is ``flash_attention_2``; without the flash_attn package use ``sdpa``.

    Returns:
        the attention implementation the actor will use (also written to the config).
    """
    model = config.actor_rollout_ref.model
    override = model.get("override_config") or {}
    impl = override.get("attn_implementation", "flash_attention_2")
    if impl == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        print(
            "[luffy] flash-attn is not installed: the actor uses attn_implementation=sdpa instead of "
            "flash_attention_2 (pip install -e '.[flash-attn]' with nvcc, see docs/gpu.md)",
            flush=True,
        )
        with open_dict(config):
            if model.get("override_config") is None:
                model.override_config = {}
            model.override_config.attn_implementation = "sdpa"
        impl = "sdpa"
    return impl


def preflight(config: Any) -> None:
    """Every check above, in order of cost; the attention choice is applied to ``config``.

    Raises:
        ValueError: the first failing check's one-line message.
    """
    check_logger(config)
    check_context_length(config)
    run_platform_checks(config)
    check_training_targets(config)
    check_gpu_run(config)
    choose_attention(config)
