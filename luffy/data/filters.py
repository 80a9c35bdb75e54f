"""Filters over many candidates: token budget, answer verification, duplicate problems.

Each filter takes the candidates in input order and returns (kept, skips). Work that costs
(tokenisation, math-verify) runs in batches, optionally over ``num_proc`` worker processes; chunks
come back in order, so the result never depends on ``num_proc``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tqdm import tqdm

from luffy.data.errors import LuffyDataError
from luffy.data.normalize import DUPLICATE, OVER_BUDGET, WRONG_ANSWER, Candidate, Skip
from luffy.tokens import encode_plain_batch, is_byte_level, plain_backend

logger = logging.getLogger(__name__)

CHUNK = 512

# -- worker-process state (set by the pool initialisers) ------------------------------------------
_WORKER: dict[str, Any] = {}


def _chunks(items: Sequence[Any], size: int | None = None) -> list[Sequence[Any]]:
    size = size or CHUNK
    return [items[i : i + size] for i in range(0, len(items), size)]


def _run_chunks(
    fn: Callable[[Sequence[Any]], list[Any]],
    chunks: list[Sequence[Any]],
    num_proc: int,
    desc: str,
    progress: bool,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
) -> Iterator[list[Any]]:
    """Apply ``fn`` to each chunk (in order), in-process or over a fork pool."""
    bar = tqdm(total=sum(len(c) for c in chunks), desc=desc, unit="row", disable=not progress, leave=False)
    try:
        if num_proc <= 1 or len(chunks) <= 1:
            if initializer is not None:
                initializer(*initargs)
            for chunk in chunks:
                yield fn(chunk)
                bar.update(len(chunk))
            return
        # Workers tokenise single-threaded; saying so up front also keeps the tokenizers library
        # from warning about a fork after its thread pool was used.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        ctx = mp.get_context("fork")
        with ctx.Pool(num_proc, initializer=initializer, initargs=initargs) as pool:
            for chunk, result in zip(chunks, pool.imap(fn, chunks)):
                yield result
                bar.update(len(chunk))
    finally:
        bar.close()


# -- token budget -------------------------------------------------------------------------------
def load_tokenizer(name_or_path: str) -> Any:
    """The HF tokenizer at ``name_or_path`` (a local folder, or a cached hub name)."""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name_or_path)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LuffyDataError(f"could not load tokenizer {name_or_path!r}: {first}") from None


def _init_tokenizer_worker(name_or_path: str, tokenizer: Any | None) -> None:

    tok = tokenizer if tokenizer is not None else load_tokenizer(name_or_path)
    backend = plain_backend(tok)
    _WORKER.update(tokenizer=tok, backend=backend)


def within_byte_bound(texts: Sequence[str], budget: int, backend: Any | None, byte_level: bool) -> list[bool]:
    """True where a text provably fits ``budget`` tokens with EOS, without tokenising it.

    Only for byte-level BPE (``byte_level``, see ``is_byte_level``): every token covers at least
    one byte of the normalised text, so ``tokens + 1 <= bytes + 1 <= budget`` is exact.
    Otherwise all False.
    """
    if not byte_level or backend is None:
        return [False] * len(texts)
    normalize = backend.normalizer.normalize_str if backend.normalizer is not None else None
    return [len((normalize(t) if normalize else t).encode("utf-8")) + 1 <= budget for t in texts]


#: A trace longer than ``2 * HEAD_CHARS_PER_TOKEN * budget`` characters is first measured on its head.
HEAD_CHARS_PER_TOKEN = 16
#: Extra tokens the head must hold beyond the budget before the whole trace is called over it.
HEAD_MARGIN_TOKENS = 8
_WORD_END = re.compile(r"\S(?=\s)")


def head_of(text: str, budget: int) -> str | None:
    """A head of ``text`` that ends at a word boundary, or None when ``text`` is short enough to tokenise.

    The cut falls after a non-space character followed by whitespace, which is a pre-token boundary
    for whitespace-splitting tokenizers (byte-level BPE, SentencePiece with ``\u2581``), so the head's
    tokens are a prefix of the whole text's tokens. None also when no such boundary is near.
    """
    limit = max(HEAD_CHARS_PER_TOKEN * budget, 4096)
    if len(text) <= 2 * limit:
        return None
    m = _WORD_END.search(text, limit, limit + 4096)
    return text[: m.end()] if m else None


def _measure_chunk(items: Sequence[tuple[str, int, bool]]) -> list[tuple[int, int | None, bool]]:
    """For each (text, budget, need_cut): (token count, character offset to cut at or None, exact).

    A very long text is tokenised on a bounded head first (:func:`head_of`); when the head alone holds
    more than ``budget + HEAD_MARGIN_TOKENS`` tokens the text is certainly over budget, its count is a
    lower bound (``exact`` False) and the cut comes from the head. Memory stays bounded by the budget,
    not by the trace.
    """

    tok, backend = _WORKER["tokenizer"], _WORKER["backend"]
    heads = [head_of(text, budget) for text, budget, _ in items]
    out: list[tuple[int, int | None, bool] | None] = [None] * len(items)
    for pass_heads in (True, False):
        idx = [i for i in range(len(items)) if out[i] is None and (heads[i] is not None) == pass_heads]
        if not idx:
            continue
        texts = [heads[i] if pass_heads else items[i][0] for i in idx]
        if backend is not None:
            # Offsets are needed only to cut a text; encode_batch_fast skips computing them.
            need_offsets = any(items[i][2] for i in idx) or not hasattr(backend, "encode_batch_fast")
            encode = backend.encode_batch if need_offsets else backend.encode_batch_fast
            encoded = [(len(enc.ids), enc) for enc in encode(texts, add_special_tokens=False)]
        else:
            encoded = [(len(ids), ids) for ids in encode_plain_batch(tok, None, texts)]
        for i, (n, enc) in zip(idx, encoded):
            _, budget, need_cut = items[i]
            if pass_heads and n <= budget + HEAD_MARGIN_TOKENS:
                heads[i] = None  # the head was not enough to decide: measure the whole text
                continue
            cut = None
            if need_cut and n + 1 > budget and budget >= 2:
                if backend is not None:
                    cut = enc.offsets[budget - 2][1]
                else:
                    cut = len(tok.decode(enc[: max(0, budget - 1)], skip_special_tokens=False))
            out[i] = (n, cut, not pass_heads)
    # Heads that were not enough were reset to None above, so the second pass measured their whole text.
    return out  # type: ignore[return-value]


def token_budget_filter(
    candidates: list[Candidate],
    tokenizer: Any,
    max_target_tokens: int,
    overlong: str = "drop",
    num_proc: int = 1,
    progress: bool = True,
    needed: int | None = None,
    stats: Counter | None = None,
) -> tuple[list[Candidate], list[Skip]]:
    """Keep traces whose tokens + EOS fit ``max_target_tokens``; cut (``truncate``) or drop the rest.

    Traces are measured in rounds, best first: round ``r`` measures trace ``r`` of each candidate
    that still has fewer than ``needed`` kept traces (``needed=None``: all traces), so with one
    target per prompt a second trace is tokenised only when the first does not fit. A candidate
    left with no trace becomes a ``trace_over_token_budget`` skip. Truncated traces are cut at the
    character offset of the last token that fits (plus EOS) and flagged in ``Candidate.truncated``;
    they lose their final answer, which is why ``drop`` is the default. ``stats`` (if given)
    receives ``traces_tokenised``, ``traces_within_byte_bound`` and ``traces_head_only`` (huge traces
    found over budget from a bounded head, see :func:`_measure_chunk`) counts.
    """
    stats = stats if stats is not None else Counter()
    if overlong not in ("drop", "truncate"):
        raise LuffyDataError(f"--overlong must be 'drop' or 'truncate', got {overlong!r}")
    if max_target_tokens < 2:
        raise LuffyDataError(f"--max_target_tokens must be >= 2, got {max_target_tokens}")

    name = getattr(tokenizer, "name_or_path", None)
    init_arg = (name, None) if num_proc > 1 and name else (name, tokenizer)
    backend = plain_backend(tokenizer)
    byte_level = is_byte_level(backend)
    kept_traces: list[list[str]] = [[] for _ in candidates]
    kept_flags: list[list[bool]] = [[] for _ in candidates]
    longest = [0] * len(candidates)
    over_on_head = [False] * len(candidates)
    want = needed or max((len(c.traces) for c in candidates), default=0)
    for r in range(max((len(c.traces) for c in candidates), default=0)):
        todo = [i for i, c in enumerate(candidates) if r < len(c.traces) and len(kept_traces[i]) < want]
        if not todo:
            break
        texts = [candidates[i].traces[r] for i in todo]
        fits = within_byte_bound(texts, max_target_tokens, backend, byte_level)
        items = [(t, max_target_tokens, overlong == "truncate") for t, ok in zip(texts, fits) if not ok]
        measured: list[tuple[int, int | None, bool]] = []
        desc = "token budget" if r == 0 else f"token budget (trace {r + 1})"
        if items:
            for part in _run_chunks(
                _measure_chunk, _chunks(items), num_proc, desc, progress, _init_tokenizer_worker, init_arg
            ):
                measured.extend(part)
        pending = iter(measured)
        results = [(-1, None, True) if ok else next(pending) for ok in fits]
        for i, (n, cut, exact) in zip(todo, results):
            stats["traces_within_byte_bound" if n < 0 else "traces_tokenised"] += 1
            if not exact:
                stats["traces_head_only"] += 1
                over_on_head[i] = True
            trace = candidates[i].traces[r]
            if n + 1 <= max_target_tokens:  # n == -1: provably within budget
                kept_traces[i].append(trace)
                kept_flags[i].append(False)
            elif overlong == "truncate" and cut:
                kept_traces[i].append(trace[:cut])
                kept_flags[i].append(True)
            longest[i] = max(longest[i], n + 1)
    kept, skips = [], []
    for cand, traces, flags, n, on_head in zip(candidates, kept_traces, kept_flags, longest, over_on_head):
        if traces:
            cand.traces, cand.truncated = traces, flags
            kept.append(cand)
        else:
            count = f"over {n} tokens (counted on its head)" if on_head else f"{n} tokens with EOS"
            skips.append(Skip(cand.row, OVER_BUDGET, f"{count} > budget {max_target_tokens}", cand.uuid))
    return kept, skips


# -- answer verification ----------------------------------------------------------------------
def _load_is_correct() -> Callable[[str, str, str], bool]:
    try:
        from luffy.scoring import is_correct
    except ImportError as err:
        raise LuffyDataError(
            f"--verify_targets needs luffy.scoring.is_correct, which could not be imported ({err})"
        ) from None
    return is_correct


def _verify_items(items: list[tuple[str, str, str]], num_proc: int, desc: str, progress: bool) -> list[bool]:
    """Verdicts in item order. ``luffy.scoring`` verifies in its own bounded worker processes and
    is thread-safe, so ``num_proc`` threads here keep that many of its workers busy."""
    os.environ.setdefault("LUFFY_SCORING_WORKERS", str(max(1, num_proc)))
    is_correct = _load_is_correct()

    def one(item: tuple[str, str, str]) -> bool:
        data_source, trace, truth = item
        try:
            return bool(is_correct(data_source, trace, truth))
        except Exception as err:  # a scorer failure on one trace rejects that trace only
            logger.warning("answer check failed (%s); trace rejected", err)
            return False

    with ThreadPoolExecutor(max_workers=max(1, num_proc)) as pool:
        return list(tqdm(pool.map(one, items), total=len(items), desc=desc, unit="trace",
                         disable=not progress, leave=False))


def verify_filter(
    candidates: list[Candidate], num_proc: int = 1, progress: bool = True, needed: int | None = None
) -> tuple[list[Candidate], list[Skip]]:
    """Keep traces whose final answer math-verify accepts against the reference answer.

    Like the token budget, traces are checked in rounds (best first) until a candidate holds
    ``needed`` accepted traces (``None``: check all), so a second trace is verified only when
    the first is rejected.
    """
    _load_is_correct()  # fail early, with one line, in the parent
    accepted: list[list[int]] = [[] for _ in candidates]
    want = needed or max((len(c.traces) for c in candidates), default=0)
    for r in range(max((len(c.traces) for c in candidates), default=0)):
        todo = [i for i, c in enumerate(candidates) if r < len(c.traces) and len(accepted[i]) < want]
        if not todo:
            break
        items = [(candidates[i].data_source, candidates[i].traces[r], candidates[i].answer) for i in todo]
        desc = "verify" if r == 0 else f"verify (trace {r + 1})"
        verdicts = _verify_items(items, num_proc, desc, progress)
        for i, ok in zip(todo, verdicts):
            if ok:
                accepted[i].append(r)
    kept, skips = [], []
    for cand, good in zip(candidates, accepted):
        if good:
            flags = cand.truncated or [False] * len(cand.traces)
            cand.traces, cand.truncated = [cand.traces[r] for r in good], [flags[r] for r in good]
            kept.append(cand)
        else:
            skips.append(Skip(cand.row, WRONG_ANSWER, f"no trace's answer matches {cand.answer!r}", cand.uuid))
    return kept, skips


# -- duplicates -----------------------------------------------------------------------------------
def dedupe_filter(candidates: list[Candidate]) -> tuple[list[Candidate], list[Skip]]:
    """Keep the first row of each exact problem text (surrounding whitespace ignored)."""
    first: dict[str, int] = {}
    kept, skips = [], []
    for cand in candidates:
        key = cand.problem.strip()
        if key in first:
            skips.append(Skip(cand.row, DUPLICATE, f"same problem as row {first[key]}", cand.uuid))
            continue
        first[key] = cand.row
        kept.append(cand)
    return kept, skips
