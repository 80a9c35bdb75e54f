"""Read a local model folder's ``config.json``, failing with one line that names the file.

Every place LUFFY reads a model's config itself (the trainer's pre-flight, the vLLM-on-CPU check, the
tiny model builder, the evaluation engines) goes through :func:`read_model_config`, so a truncated,
undecodable or non-object ``config.json`` is one ``LuffyDataError`` (a ``ValueError``) naming the file,
never a bare JSON error or an ``AttributeError`` later.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from luffy.data.errors import LuffyDataError

CONFIG_NAME = "config.json"


def read_model_config(folder: str | Path) -> dict[str, Any] | None:
    """``folder/config.json`` as a dict, or None when ``folder`` is not a local folder holding one.

    Raises:
        LuffyDataError: the file cannot be read, is not UTF-8, not JSON (e.g. truncated) or not a JSON
            object; the message names the file and says how to fix it.
    """
    path = Path(folder).expanduser() / CONFIG_NAME
    if not path.is_file():
        return None
    fix = "copy the model folder again (or rebuild it)"
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise LuffyDataError(f"{path} is not UTF-8 text (byte {err.start}); {fix}") from None
    except json.JSONDecodeError as err:
        size = path.stat().st_size
        where = f"{err.msg} at line {err.lineno} column {err.colno}; {size} bytes"
        what = "empty" if not size else f"not valid JSON ({where})"
        raise LuffyDataError(f"{path} is {what}; the file is damaged or truncated: {fix}") from None
    except OSError as err:
        raise LuffyDataError(f"{path} cannot be read ({err.strerror or err})") from None
    if not isinstance(data, dict):
        raise LuffyDataError(f"{path} holds a JSON {type(data).__name__}, not an object (a model config); {fix}")
    return data


def check_model_path(model_path: str) -> None:
    """Refuse a model path that names a local folder (absolute, ``./``, ``../`` or ``~``) which does not
    exist or holds no ``config.json``; anything else may be a hub name and is left to the engine.

    Raises:
        LuffyDataError: naming the path and what is missing.
    """
    if not str(model_path).startswith(("/", "./", "../", "~")):
        return
    folder = Path(model_path).expanduser()
    if not folder.is_dir():
        raise LuffyDataError(f"--model_path {model_path}: no such folder")
    if not (folder / CONFIG_NAME).is_file():
        raise LuffyDataError(f"--model_path {model_path}: not a model folder (no {CONFIG_NAME} in it)")
