"""The prepared RL schema: columns, arrow types, prompt construction and target normalisation.

One prepared row (what ``data/prepare_train.py`` writes and veRL's ``RLHFDataset`` reads)::

    data_source   str                      "openr1" (or the row's own source for prepared input)
    prompt        list[{content, role}]    [system: LUFFY_SYSTEM_PROMPT, user: problem]
    ability       str                      "math"
    reward_model  {ground_truth, style}    style is "rule"
    extra_info    {index, split, row, uuid, source, target_truncated}
    target        list[{content, role}]    one or more assistant messages (off-policy traces)

``prompt`` uses the same struct field order (content, role) and the same text as the evaluation
parquets, so a problem yields byte-identical prompts in training and evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from luffy.data.errors import LuffyDataError
from luffy.prompts import LUFFY_SYSTEM_PROMPT

MESSAGE_TYPE = pa.struct([("content", pa.string()), ("role", pa.string())])
MESSAGES_TYPE = pa.list_(MESSAGE_TYPE)
REWARD_MODEL_TYPE = pa.struct([("ground_truth", pa.string()), ("style", pa.string())])
EXTRA_INFO_TYPE = pa.struct(
    [
        ("index", pa.int64()),
        ("split", pa.string()),
        ("row", pa.int64()),
        ("uuid", pa.string()),
        ("source", pa.string()),
        ("target_truncated", pa.bool_()),
    ]
)
TRAIN_SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", MESSAGES_TYPE),
        ("ability", pa.string()),
        ("reward_model", REWARD_MODEL_TYPE),
        ("extra_info", EXTRA_INFO_TYPE),
        ("target", MESSAGES_TYPE),
    ]
)

#: Prompt templates for ``--template``. ``own``: LUFFY's system prompt, then the problem as the user
#: turn; the policy's own chat template renders these messages at rollout time. ``no_system``: the
#: problem as the only (user) turn.
TEMPLATES = ("own", "no_system")


def build_prompt(problem: str, template: str = "own") -> list[dict[str, str]]:
    """Chat messages for one problem (keys in the evaluation parquets' order: content, role)."""
    if template == "own":
        return [
            {"content": LUFFY_SYSTEM_PROMPT, "role": "system"},
            {"content": problem, "role": "user"},
        ]
    if template == "no_system":
        return [{"content": problem, "role": "user"}]
    raise LuffyDataError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")


def is_sequence(value: Any) -> bool:
    """True for lists, tuples and numpy arrays (how list columns arrive from pandas/datasets)."""
    if isinstance(value, str | bytes):
        return False
    return isinstance(value, Sequence) or type(value).__name__ == "ndarray"


def normalize_messages(value: Any, field: str = "prompt") -> list[dict[str, str]]:
    """A chat list as ``[{"content": str, "role": str}, ...]``; raise ``LuffyDataError`` if malformed."""
    if not is_sequence(value) or len(value) == 0:
        raise LuffyDataError(f"'{field}' must be a non-empty list of {{role, content}} messages")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise LuffyDataError(f"'{field}[{i}]' is {type(message).__name__}, expected a {{role, content}} dict")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise LuffyDataError(f"'{field}[{i}]' needs string 'role' and 'content'")
        out.append({"content": content, "role": role})
    return out


def normalize_target(value: Any) -> list[dict[str, str]]:
    """The ``target`` column as a non-empty list of ``{"content": str, "role": "assistant"}``.

    Accepts a string, one ``{role, content}`` dict, or a list / tuple / numpy array of either (the
    shapes a list-of-struct column takes after parquet, pandas or ``datasets``). Raises
    ``LuffyDataError`` when it is missing, empty, or a trace is not a non-empty string.
    """
    if value is None:
        raise LuffyDataError("'target' is missing (null)")
    items = list(value) if is_sequence(value) else [value]
    if not items:
        raise LuffyDataError("'target' is an empty list; it needs at least one assistant trace")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            role = item.get("role", "assistant")
            if role not in (None, "assistant"):
                raise LuffyDataError(f"'target[{i}]' has role {role!r}; off-policy traces are assistant turns")
            item = item.get("content")
        if not isinstance(item, str) or not item.strip():
            raise LuffyDataError(f"'target[{i}]' content must be a non-empty string, got {type(item).__name__}")
        out.append({"content": item, "role": "assistant"})
    return out


def target_texts(value: Any) -> list[str]:
    """Just the trace strings of a ``target`` value (see ``normalize_target``)."""
    return [m["content"] for m in normalize_target(value)]


def user_text(prompt: list[dict[str, str]]) -> str:
    """The last user turn of a chat list (the problem), or raise ``LuffyDataError``."""
    for message in reversed(prompt):
        if message["role"] == "user":
            return message["content"]
    raise LuffyDataError("'prompt' has no user turn")


def make_row(
    *,
    data_source: str,
    prompt: list[dict[str, str]],
    ground_truth: str,
    traces: list[str],
    extra_info: dict[str, Any],
    ability: str = "math",
) -> dict[str, Any]:
    """One output row in ``TRAIN_SCHEMA`` order."""
    return {
        "data_source": data_source,
        "prompt": prompt,
        "ability": ability,
        "reward_model": {"ground_truth": ground_truth, "style": "rule"},
        "extra_info": extra_info,
        "target": [{"content": t, "role": "assistant"} for t in traces],
    }


def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema = TRAIN_SCHEMA) -> pa.Table:
    """Rows as an arrow table with exactly ``schema`` (missing keys, nested too, become null)."""
    return pa.Table.from_pylist(rows, schema=schema)
