"""luffy.tokens: off-policy targets as response ids, exactly and fast."""

from __future__ import annotations

import time

import _data_fixtures as fixtures
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from luffy.tokens import TargetEncoder, check_template, pick_target

TRACE = "<think>\nLet x = 6.\n</think>\n\nThe answer is $\\boxed{6}$."
# Any unicode except lone surrogates (not encodable as UTF-8, so not valid text in a dataset).
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1)

# Shared fixtures, registered in this module under their own names.
tiny_tokenizer = fixtures.tiny_tokenizer
tiny_tokenizer_dir = fixtures.tiny_tokenizer_dir



@pytest.fixture(scope="module")
def encoder(tiny_tokenizer) -> TargetEncoder:
    return TargetEncoder(tiny_tokenizer, max_response_length=4096)


def _prompt_ids(tokenizer, generation_suffix: str = "") -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Q"}], add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(text + generation_suffix, add_special_tokens=False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT)
def test_round_trip_any_unicode(encoder: TargetEncoder, tiny_tokenizer, text: str) -> None:
    out = encoder.encode(text)
    assert out.ids[-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(out.ids[:-1], skip_special_tokens=False) == text
    assert tiny_tokenizer.eos_token_id not in out.ids[:-1]


def test_target_shapes_accepted(encoder: TargetEncoder) -> None:
    msg = {"role": "assistant", "content": TRACE}
    expected = encoder.encode(TRACE).ids
    for target in (TRACE, msg, [msg], (msg,), np.array([msg], dtype=object), [TRACE]):
        assert encoder.encode(target).ids == expected
    assert pick_target([msg, {"role": "assistant", "content": "b"}], which=1) == "b"
    with pytest.raises(ValueError):
        pick_target([])
    with pytest.raises(IndexError):
        pick_target([msg], which=3)


def test_same_ids_as_policy_after_the_prompt(encoder: TargetEncoder, tiny_tokenizer) -> None:
    """prompt ids + response ids == the chat-templated conversation, tokenised as one text."""
    prompt_ids = _prompt_ids(tiny_tokenizer)
    response = encoder.encode(TRACE, prompt_ids).ids
    full = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Q"}, {"role": "assistant", "content": TRACE}], tokenize=False
    )
    assert tiny_tokenizer.decode(prompt_ids + response, skip_special_tokens=False) == full.rstrip("\n")
    assert tiny_tokenizer.convert_ids_to_tokens(response[0]) == "<think>"


def test_literal_eos_text_is_not_the_eos_token(encoder: TargetEncoder, tiny_tokenizer) -> None:
    text = "<think>\nThe template uses <|im_end|> to stop.\n</think>\n\n\\boxed{1}"
    ids = encoder.encode(text).ids
    assert ids.count(tiny_tokenizer.eos_token_id) == 1 and ids[-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(ids[:-1], skip_special_tokens=False) == text
    # The caller's tokenizer is not changed: it still parses the control token.
    assert tiny_tokenizer.eos_token_id in tiny_tokenizer.encode("<|im_end|>", add_special_tokens=False)


def test_think_tag_appears_once_when_prompt_opens_it(encoder: TargetEncoder, tiny_tokenizer) -> None:
    for suffix in ("<think>\n", "<think>"):
        prompt_ids = _prompt_ids(tiny_tokenizer, suffix)
        out = encoder.encode(TRACE, prompt_ids)
        assert out.think_deduplicated
        whole = tiny_tokenizer.decode(prompt_ids + out.ids[:-1], skip_special_tokens=False)
        assert whole.count("<think>") == 1 and whole.endswith(TRACE)
    # A trace without the newline after its tag, after a prompt that has one: still a single tag.
    prompt_ids = _prompt_ids(tiny_tokenizer, "<think>\n")
    out = encoder.encode("<think>Okay.</think>\n\n\\boxed{1}", prompt_ids)
    assert out.think_deduplicated and out.text == "Okay.</think>\n\n\\boxed{1}"
    plain = encoder.encode(TRACE, _prompt_ids(tiny_tokenizer))
    assert not plain.think_deduplicated and plain.text == TRACE


def test_overlong_truncate_and_drop(tiny_tokenizer) -> None:
    long = "step " * 500
    cut = TargetEncoder(tiny_tokenizer, max_response_length=32).encode(long)
    assert len(cut.ids) == 32 and cut.truncated and tiny_tokenizer.eos_token_id not in cut.ids
    dropper = TargetEncoder(tiny_tokenizer, max_response_length=32, overlong="drop")
    assert dropper.encode(long) is None and dropper.stats["dropped"] == 1
    fits = TargetEncoder(tiny_tokenizer, max_response_length=len(dropper.encode_text(TRACE)) + 1)
    assert not fits.encode(TRACE).truncated
    with pytest.raises(ValueError):
        TargetEncoder(tiny_tokenizer, max_response_length=8, overlong="cut")


def test_prefix(encoder: TargetEncoder, tiny_tokenizer) -> None:
    ids = encoder.encode(TRACE).ids
    n = len(ids) - 1
    assert encoder.prefix(ids, 1.0) == ids[:n]  # never the EOS
    assert encoder.prefix(ids, 0.5) == ids[: n // 2]
    assert encoder.prefix(ids, 0.0) == []
    assert encoder.prefix(ids, 1.0, max_prefix_len=3) == ids[:3]
    with pytest.raises(ValueError):
        encoder.prefix(ids, 1.5)


def test_check_template(tiny_tokenizer) -> None:
    report = check_template(tiny_tokenizer, expects_think=True, sample_target=TRACE)
    assert report.ok and report.think_is_token and report.renders_system and not report.opens_think
    bad = check_template(tiny_tokenizer, expects_think=True, sample_target="no tag here")
    assert not bad.ok and "<think>" in bad.problems[0]


def test_cached_encoding_is_fast(encoder: TargetEncoder) -> None:
    traces = [TRACE + f" variant {i}" + " more reasoning" * 200 for i in range(50)]
    start = time.perf_counter()
    for trace in traces:
        encoder.encode(trace)
    cold = (time.perf_counter() - start) / len(traces)
    start = time.perf_counter()
    for _ in range(20):
        for trace in traces:
            encoder.encode(trace)
    warm = (time.perf_counter() - start) / (20 * len(traces))
    assert warm < cold and warm < 1e-3  # a cache hit is a dictionary lookup plus a list copy


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT)
def test_byte_bound_used_by_the_token_budget_is_exact(encoder: TargetEncoder, text: str) -> None:
    """Byte-level BPE: tokens <= UTF-8 bytes, so prepare_train may skip tokenising short traces."""
    from luffy.data.filters import within_byte_bound
    from luffy.tokens import is_byte_level, plain_backend

    backend = plain_backend(encoder.tokenizer)
    assert is_byte_level(backend)
    assert len(encoder.encode_text(text)) <= len(text.encode("utf-8"))
    budget = len(text.encode("utf-8")) + 1
    assert within_byte_bound([text], budget, backend, True) == [True]
    assert within_byte_bound([text], budget - 1, backend, True) == [False]
