"""Off-policy target traces as the response token ids the policy would have produced.

The agent loop returns, for an off-policy session, the target trace as if the policy had generated
it after the prompt. ``TargetEncoder`` makes those ids:

1. pick one trace from the row's ``target`` (a str, a ``{"role", "content"}`` dict, or a list /
   tuple / numpy array of those; ``which`` selects the element);
2. if the prompt already ends with the opening think tag (the decoded tail of ``prompt_ids`` ends
   with ``"<think>"`` plus optional whitespace, as with templates whose generation prompt opens
   the thought block) and the trace starts with ``"<think>"``, drop the tag from the trace (and
   the whitespace the prompt put after it, when the trace repeats it) so that the tag appears
   once in prompt + response;
3. encode the trace text with no special tokens added, **treating the literal text of special
   tokens as plain text**: a trace that contains ``"<|im_end|>"`` is encoded as the characters
   ``<``, ``|``, ``im`` ... and never as the EOS id mid-trace (HF fast tokenizers would otherwise
   split it out as the control token, which would teach the policy to stop and then continue).
   Added tokens that are not special (``<think>``, ``</think>``) keep their single ids, exactly as
   the policy emits them. ``tokenizer.decode(ids)`` therefore gives back the trace text;
4. append ``eos_token_id`` (default ``tokenizer.eos_token_id``): a finished trace ends like a
   finished generation;
5. if ``len(ids) > max_response_length``: ``overlong="truncate"`` keeps the first
   ``max_response_length`` ids *without* EOS (like a generation cut by the length limit) and sets
   ``truncated``; ``overlong="drop"`` returns ``None``. Both are counted in ``encoder.stats``.

Text encodings are cached per trace string (LRU, ``cache_size`` entries), so the same target seen
again in a later epoch or by several sessions costs a dictionary lookup.

``prefix(ids, ratio, max_prefix_len)`` gives the first ``k`` ids for prefix guidance, with
``k = floor(ratio * n)`` where ``n`` counts the trace tokens without the final EOS (a prefix never
contains EOS), capped by ``max_prefix_len``.

``check_template(tokenizer, expects_think)`` inspects a chat template once, at preparation time,
for problems that would otherwise show up as zero reward during training.

The same plain-text tokenisation (``plain_backend`` / ``encode_plain_batch``) is used by
``data/prepare_train.py`` for its token budget, so the budget counts what the trainer will see.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

logger = logging.getLogger(__name__)

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def plain_backend(tokenizer: Any) -> Any | None:
    """A private copy of a fast tokenizer's backend that encodes special-token text as plain text.

    Returns ``None`` for slow (python) tokenizers; callers then use ``split_special_tokens=True``.
    The copy leaves the caller's tokenizer untouched.
    """
    backend = getattr(tokenizer, "_tokenizer", None) or getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    copy.encode_special_tokens = True
    return copy


def encode_plain_batch(tokenizer: Any, backend: Any | None, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text (no special tokens added; special-token text stays text)."""
    if backend is not None:
        return [enc.ids for enc in backend.encode_batch(list(texts), add_special_tokens=False)]
    return [tokenizer.encode(t, add_special_tokens=False, split_special_tokens=True) for t in texts]


def is_byte_level(backend: Any | None) -> bool:
    """True when every token covers at least one byte of the normalised text (byte-level BPE).

    Then ``len(tokens) <= len(normalised_text.encode())``, an exact upper bound that lets a token
    budget accept short texts without tokenising them.
    """
    if backend is None:
        return False
    spec = json.loads(backend.to_str())
    model_ok = (spec.get("model") or {}).get("type") == "BPE" and not (spec.get("model") or {}).get(
        "byte_fallback", False
    )
    return model_ok and '"ByteLevel"' in json.dumps(spec.get("pre_tokenizer"))


@dataclass(frozen=True)
class TargetTokens:
    """Response ids of one off-policy target.

    Attributes:
        ids: response token ids, ``(response_len,)``; ends with EOS unless ``truncated``.
        truncated: the trace was longer than ``max_response_length`` and was cut (no EOS).
        think_deduplicated: the leading think tag was dropped because the prompt already opens it.
        text: the trace text that was encoded (after think de-duplication).
    """

    ids: list[int]
    truncated: bool
    think_deduplicated: bool
    text: str


def pick_target(target: Any, which: int = 0) -> str:
    """The content of one trace from a ``target`` value (str, message dict, or a list of those)."""
    item = target
    if not isinstance(target, str | dict):
        items = list(target) if target is not None else []
        if not items:
            raise ValueError("target is empty: the row has no off-policy trace")
        if not -len(items) <= which < len(items):
            raise IndexError(f"target has {len(items)} trace(s); which={which} is out of range")
        item = items[which]
    if isinstance(item, dict):
        item = item.get("content")
    if not isinstance(item, str):
        raise ValueError(f"target content must be a string, got {type(item).__name__}")
    return item


@dataclass
class TargetEncoder:
    """Encode off-policy targets as response ids (see the module docstring for the exact rules).

    Args:
        tokenizer: the policy's HF tokenizer (fast tokenizers are used through a private copy).
        max_response_length: the rollout's ``response_length``; longer traces are cut or dropped.
        overlong: ``"truncate"`` (keep the first ``max_response_length`` ids, no EOS) or ``"drop"``.
        eos_token_id: id appended after a trace; default ``tokenizer.eos_token_id``.
        cache_size: how many distinct trace strings keep their encoding (LRU).

    Thread-safe: the cache is ``functools.lru_cache`` and the stats counter is lock-protected.
    """

    tokenizer: Any
    max_response_length: int
    overlong: str = "truncate"
    eos_token_id: int | None = None
    cache_size: int = 8192
    stats: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.overlong not in ("truncate", "drop"):
            raise ValueError(f"overlong must be 'truncate' or 'drop', got {self.overlong!r}")
        if self.max_response_length < 1:
            raise ValueError(f"max_response_length must be >= 1, got {self.max_response_length}")
        if self.eos_token_id is None:
            self.eos_token_id = self.tokenizer.eos_token_id
        if self.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token_id; pass eos_token_id explicitly")
        self._backend = plain_backend(self.tokenizer)
        self._lock = threading.Lock()
        self._encode_cached = lru_cache(maxsize=self.cache_size)(self._encode_uncached)
        self._tail_cached = lru_cache(maxsize=1024)(self._decode_tail)

    # -- text -> ids ------------------------------------------------------------------------
    def _encode_uncached(self, text: str) -> tuple[int, ...]:
        return tuple(encode_plain_batch(self.tokenizer, self._backend, [text])[0])

    def encode_text(self, text: str) -> list[int]:
        """Ids of ``text`` alone (no EOS, special-token text kept as text); cached."""
        return list(self._encode_cached(text))

    def _decode_tail(self, tail: tuple[int, ...]) -> str:
        return self.tokenizer.decode(list(tail), skip_special_tokens=False)

    def _strip_think(self, text: str, prompt_ids: Any) -> tuple[str, bool]:
        """Drop the trace's opening think tag when the prompt already ends with it.

        The whitespace the prompt put after its tag (usually one newline) is dropped from the
        trace too when the trace repeats it, so prompt + response reads ``<think>\n...`` once.
        """
        if not text.startswith(THINK_OPEN) or prompt_ids is None or len(prompt_ids) == 0:
            return text, False
        tail = self._tail_cached(tuple(int(i) for i in prompt_ids[-4:]))
        if not tail.rstrip().endswith(THINK_OPEN):
            return text, False
        after_tag = tail[tail.rfind(THINK_OPEN) + len(THINK_OPEN) :]
        rest = text[len(THINK_OPEN) :]
        if after_tag and rest.startswith(after_tag):
            rest = rest[len(after_tag) :]
        return rest, True

    def encode(self, target: Any, prompt_ids: Any = None, which: int = 0) -> TargetTokens | None:
        """Response ids for one trace of ``target`` after ``prompt_ids``.

        Args:
            target: str, ``{"role", "content"}`` dict, or a list / numpy array of those.
            prompt_ids: the prompt's token ids ``(prompt_len,)`` (list, tensor or array), used
                only to see whether the generation prompt already opened the think block.
            which: index of the trace when ``target`` holds several.

        Returns:
            ``TargetTokens`` (ids ``(response_len,)`` with ``response_len <= max_response_length``),
            or ``None`` when the trace is too long and ``overlong == "drop"``.
        """
        text, deduped = self._strip_think(pick_target(target, which), prompt_ids)
        ids = [*self._encode_cached(text), self.eos_token_id]
        truncated = False
        if len(ids) > self.max_response_length:
            if self.overlong == "drop":
                self._count("dropped")
                return None
            ids = ids[: self.max_response_length]
            truncated = True
        self._count("encoded")
        if truncated:
            self._count("truncated")
        if deduped:
            self._count("think_deduplicated")
        return TargetTokens(ids=ids, truncated=truncated, think_deduplicated=deduped, text=text)

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    # -- prefix guidance ----------------------------------------------------------------------
    def prefix(self, ids: Sequence[int], ratio: float, max_prefix_len: int | None = None) -> list[int]:
        """The first ``k`` ids for prefix guidance.

        ``k = floor(ratio * n)``, ``n`` = number of ids without a trailing EOS, then capped at
        ``max_prefix_len`` when given. ``ratio`` must lie in ``[0, 1]``; the prefix never includes EOS.
        """
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"prefix ratio must be in [0, 1], got {ratio}")
        ids = list(ids)
        n = len(ids) - 1 if ids and ids[-1] == self.eos_token_id else len(ids)
        k = math.floor(ratio * n)
        if max_prefix_len is not None:
            k = min(k, max(0, max_prefix_len))
        return ids[:k]


@dataclass
class TemplateCheck:
    """What ``check_template`` found: ``problems`` would hurt training; ``notes`` are informational."""

    opens_think: bool
    think_is_token: bool
    renders_system: bool
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_template(tokenizer: Any, expects_think: bool = True, sample_target: str | None = None) -> TemplateCheck:
    """Inspect the tokenizer's chat template for LUFFY's think format before training starts.

    Args:
        tokenizer: the policy's HF tokenizer.
        expects_think: the model / reward expects responses in a ``<think> ... </think>`` block.
        sample_target: an example trace, to see whether traces bring their own opening tag.

    Problems reported: no chat template; a template that drops the system turn (LUFFY's system
    prompt asks for the think format); ``expects_think`` but neither the generation prompt opens a
    think block nor the traces start with ``<think>`` (responses would lack the tag).
    """
    marker_sys, marker_user = "\x01SYSTEM-CHECK\x01", "\x01USER-CHECK\x01"
    messages = [{"role": "system", "content": marker_sys}, {"role": "user", "content": marker_user}]
    problems: list[str] = []
    notes: list[str] = []
    think_ids = tokenizer.encode(THINK_OPEN, add_special_tokens=False)
    think_is_token = len(think_ids) == 1
    if not getattr(tokenizer, "chat_template", None):
        return TemplateCheck(False, think_is_token, False, ["the tokenizer has no chat template"], [])
    with_gen = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    without = tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
    generation_prompt = with_gen[len(without) :] if with_gen.startswith(without) else with_gen
    opens_think = generation_prompt.rstrip().endswith(THINK_OPEN)
    renders_system = marker_sys in with_gen
    if not renders_system:
        problems.append("the chat template drops the system turn that carries LUFFY's format instructions")
    if not generation_prompt.strip():
        problems.append("the chat template adds no generation prompt (add_generation_prompt has no effect)")
    trace_opens = sample_target is not None and sample_target.lstrip().startswith(THINK_OPEN)
    if expects_think and not opens_think and not trace_opens:
        problems.append(
            f"responses are expected to open with {THINK_OPEN} but neither the generation prompt "
            f"{generation_prompt!r} nor the traces provide it"
        )
    if expects_think and not think_is_token:
        notes.append(f"{THINK_OPEN} is not a single token in this vocabulary ({len(think_ids)} tokens)")
    if opens_think and trace_opens:
        notes.append(f"the generation prompt opens {THINK_OPEN}; the traces' own tag will be dropped once")
    return TemplateCheck(opens_think, think_is_token, renders_system, problems, notes)
