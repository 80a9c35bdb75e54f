"""The toy task of exp_scripts/toy_reproduction.sh: generator, splits, traces, pre-training mixture, scoring."""

from __future__ import annotations

import random

import pyarrow.parquet as pq
import pytest

from luffy.scoring import is_correct
from luffy.toy.task import (
    DATA_SOURCE,
    Problem,
    borrow_free,
    carries,
    format_trace,
    make_data,
    pretraining_example,
    pretraining_trace,
    random_problem,
    scramble_results,
    write_parquet,
)


def _carries_by_arithmetic(a: int, b: int) -> int:
    """Reference: column k carries when the sum of the last k+1 digits of a and b reaches 10^(k+1)."""
    return sum((a % 10 ** (k + 1) + b % 10 ** (k + 1)) >= 10 ** (k + 1) for k in range(len(str(a))))


def _no_carry_sum(a: int, b: int) -> int:
    """Reference for a trace whose every carry is dropped: digit-wise sums mod 10."""
    return sum(((a // 10**k) % 10 + (b // 10**k) % 10) % 10 * 10**k for k in range(len(str(a))))


def test_hand_written_traces():
    assert format_trace(Problem(478, 356)) == (
        "<think>\n8+6+0=14\n7+5+1=13\n4+3+1=8\n</think>\n\nThe answer is $\\boxed{834}$."
    )
    # the carry out of the units dropped: 7+5+0, and the answer follows the wrong working
    assert format_trace(Problem(478, 356), dropped={0}) == (
        "<think>\n8+6+0=14\n7+5+0=12\n4+3+1=8\n</think>\n\nThe answer is $\\boxed{824}$."
    )
    # the last column's carry is the leading 1; dropping it loses it
    assert format_trace(Problem(978, 356)).endswith("$\\boxed{1334}$.")
    assert format_trace(Problem(978, 356), dropped={2}).endswith("$\\boxed{334}$.")
    assert format_trace(Problem(875, 352, "-")) == (
        "<think>\n5-2=3\n7-5=2\n8-3=5\n</think>\n\nThe answer is $\\boxed{523}$."
    )
    assert Problem(875, 352, "-").question == "What is 875 - 352?"


def test_carries_match_arithmetic_and_traces_are_scored_right():
    rng = random.Random(0)
    for kind in ("add3", "add4"):
        for _ in range(300):
            p = random_problem(rng, kind)
            assert carries(p) == _carries_by_arithmetic(p.a, p.b)
            trace = format_trace(p)
            assert is_correct(DATA_SOURCE, trace, str(p.a + p.b)), trace
            for line in trace.split("\n")[1:-3]:  # every line x+y+c=s adds up
                x, y, rest = line.split("+")
                c, s = rest.split("=")
                assert int(x) + int(y) + int(c) == int(s)
            every = format_trace(p, dropped=range(len(str(p.a))))
            # every digit kept, leading zeros too: 755 + 309 without carries is 054
            assert every.endswith("$\\boxed{" + str(_no_carry_sum(p.a, p.b)).zfill(len(str(p.a))) + "}$.")
            assert is_correct(DATA_SOURCE, every, str(p.a + p.b)) == (carries(p) == 0)


def test_subtraction_traces_are_borrow_free_and_right():
    rng = random.Random(1)
    for _ in range(200):
        p = random_problem(rng, "sub3")
        assert p.op == "-" and borrow_free(p) and p.answer >= 0
        assert all(int(x) >= int(y) for x, y in zip(str(p.a), str(p.b)))
        assert is_correct(DATA_SOURCE, format_trace(p), str(p.a - p.b))
    with pytest.raises(ValueError, match="borrow-free"):
        format_trace(Problem(352, 875, "-"))


def test_data_is_seeded_disjoint_and_of_the_right_kinds():
    data = make_data(300, 40, seed=3)
    assert make_data(300, 40, seed=3) == data
    assert make_data(300, 40, seed=4) != data
    assert len(data.train) == 300 and {k: len(v) for k, v in data.held_out.items()} == {
        "id": 40, "retention": 40, "transfer": 40}
    every = data.train + [p for ps in data.held_out.values() for p in ps]
    assert len(set(every)) == len(every)
    assert all(p.op == "+" and len(str(p.a)) == len(str(p.b)) == 3 for p in data.train + data.held_out["id"])
    assert all(p.op == "-" and borrow_free(p) for p in data.held_out["retention"])
    assert all(p.op == "+" and len(str(p.a)) == 4 and carries(p) > 0 for p in data.held_out["transfer"])
    assert data.excluded() == set(every) - set(data.train)
    with pytest.raises(ValueError, match="n_eval"):
        make_data(10, 0, seed=0)


def test_pretraining_keeps_each_carry_with_probability_q():
    rng = random.Random(2)
    problems = [p for p in (random_problem(rng, "add3") for _ in range(3000)) if carries(p) == 1]
    right = [is_correct(DATA_SOURCE, pretraining_trace(p, 0.3, rng), str(p.answer)) for p in problems]
    assert abs(sum(right) / len(right) - 0.3) < 0.05  # one carry each: right with probability q
    assert all(is_correct(DATA_SOURCE, pretraining_trace(p, 1.0, rng), str(p.answer)) for p in problems[:100])
    assert not any(is_correct(DATA_SOURCE, pretraining_trace(p, 0.0, rng), str(p.answer)) for p in problems[:100])
    # carry-free problems and subtractions are always right
    free = [p for p in (random_problem(rng, "add3") for _ in range(500)) if carries(p) == 0]
    assert all(is_correct(DATA_SOURCE, pretraining_trace(p, 0.0, rng), str(p.answer)) for p in free)


def test_pretraining_never_shows_an_excluded_problem():
    data = make_data(50, 200, seed=0)
    rng = random.Random(0)
    excluded = data.excluded()
    kinds = set()
    for _ in range(3000):
        p, trace = pretraining_example(rng, 0.5, excluded)
        assert p not in excluded
        kinds.add((p.op, len(str(p.a)), carries(p) > 0 if p.op == "+" else None))
    # 3-digit additions with and without carries, subtractions, and carry-free 4-digit additions only
    assert kinds == {("+", 3, True), ("+", 3, False), ("-", 3, None), ("+", 4, False)}


def test_scrambled_traces_keep_the_layout():
    rng = random.Random(0)
    p = Problem(478, 356)
    traces = [scramble_results(format_trace(p), rng) for _ in range(200)]
    assert sum(is_correct(DATA_SOURCE, t, "834") for t in traces) < 5
    for t in traces[:20]:
        lines = t.split("\n")
        assert [line.split("=")[0] for line in lines[1:4]] == ["8+6+0", "7+5+1", "4+3+1"]
        assert [len(line.split("=")[1]) for line in lines[1:4]] == [2, 2, 1]
        assert t.startswith("<think>\n") and "</think>\n\nThe answer is $\\boxed{" in t
        assert len(t) == len(format_trace(p))


def test_parquet_rows_hold_prompt_ground_truth_and_trace(tmp_path):
    data = make_data(5, 1, seed=0)
    table = pq.read_table(write_parquet(data.train, tmp_path / "train.parquet", "train")).to_pylist()
    assert [r["reward_model"]["ground_truth"] for r in table] == [str(p.answer) for p in data.train]
    assert [r["prompt"] for r in table] == [[{"content": p.question, "role": "user"}] for p in data.train]
    assert [r["target"][0]["content"] for r in table] == [format_trace(p) for p in data.train]
    assert {r["data_source"] for r in table} == {DATA_SOURCE}


def test_tokenizer_keeps_every_digit_a_token():
    from luffy.tiny import build_tokenizer
    from luffy.toy.base_model import TOKENIZER_VOCAB, tokenizer_corpus

    tok = build_tokenizer(None, corpus=tokenizer_corpus(0), vocab_size=TOKENIZER_VOCAB)

    def digit_pieces(text: str) -> list[str]:
        return [x.strip() for x in (tok.decode([i]) for i in tok(text)["input_ids"]) if any(c.isdigit() for c in x)]

    assert digit_pieces(format_trace(Problem(978, 356))) == list("860147511393113" "1334")
    assert digit_pieces("What is 4785 + 3562?") == list("47853562")


def _tiny(problems):
    from luffy.tiny import build_model, build_tokenizer
    from luffy.toy.base_model import tokenizer_corpus

    tok = build_tokenizer(None, corpus=tokenizer_corpus(0), vocab_size=300)
    return build_model(None, tok, seed=1).eval(), tok


def test_trace_logprob_matches_a_token_loop():
    import torch

    from luffy.toy.base_model import encode_pair
    from luffy.toy.evaluate import Prompts, trace_logprob

    problems = [Problem(478, 356), Problem(4785, 3562), Problem(875, 352, "-")]  # prompts of two lengths
    model, tok = _tiny(problems)
    expected = 0.0
    with torch.no_grad():
        for p in problems:
            ids, n_prompt = encode_pair(tok, p, format_trace(p))
            for t in range(n_prompt, len(ids)):  # one forward per predicted token, no padding
                logits = model(input_ids=torch.tensor([ids[:t]])).logits[0, -1]
                expected += float(torch.log_softmax(logits, -1)[ids[t]])
    assert trace_logprob(model, Prompts(tok), problems) == pytest.approx(expected / len(problems), rel=1e-4)
