"""The toy task of exp_scripts/toy_reproduction.sh: generator, split, traces, scoring, evaluation helpers."""

from __future__ import annotations

import random

import pyarrow.parquet as pq
import pytest

from luffy.scoring import is_correct
from luffy.toy.task import (
    DATA_SOURCE,
    MAX_K,
    Problem,
    all_problems,
    format_only_trace,
    format_pool,
    format_trace,
    split_problems,
    write_parquet,
)


def _carry_free_by_loop() -> set[tuple[int, int]]:
    """Reference: every (a, k) with a 3-digit a and no digit of a + k*111 carrying, by column addition."""
    out = set()
    for k in range(1, MAX_K + 1):
        for a in range(100, 1000):
            x, carry_free = a, True
            while x:
                if x % 10 + k > 9:
                    carry_free = False
                x //= 10
            if carry_free:
                out.add((a, k))
    return out


def test_pool_is_every_carry_free_problem_once():
    pool = all_problems()
    assert len(pool) == len(set(pool))
    assert {(p.a, p.k) for p in pool} == _carry_free_by_loop()
    # hand-computed: k=1 leaves digits 0-8 (first 1-8): 8*9*9; k=2: 7*8*8; k=3: 6*7*7
    assert len(pool) == 648 + 448 + 294


def test_split_is_seeded_disjoint_and_sized():
    train, val = split_problems(300, 80, seed=3)
    assert (len(train), len(val)) == (300, 80)
    assert not set(train) & set(val)
    assert (train, val) == split_problems(300, 80, seed=3)
    assert split_problems(300, 80, seed=4) != (train, val)


def test_split_refuses_impossible_sizes():
    with pytest.raises(ValueError, match="n_train"):
        split_problems(len(all_problems()), 1, seed=0)
    with pytest.raises(ValueError, match="n_val"):
        split_problems(10, 0, seed=0)


def test_format_pool_is_every_operand_but_the_held_out_ones():
    _, val = split_problems(300, 80, seed=2)
    pool = format_pool(exclude=val)
    assert len(pool) == len(set(pool)) == 900 * MAX_K - len(val)
    assert not set(pool) & set(val)
    assert {p.a for p in pool} == set(range(100, 1000))


def test_every_trace_is_scored_correct_and_shows_the_digit_sums():
    train, val = split_problems(150, 50, seed=1)
    for p in train + val:
        trace = format_trace(p)
        assert is_correct(DATA_SOURCE, trace, str(p.answer)), trace
        assert p.answer == int(str(p.a)) + int(str(p.k) * 3)
        assert [line.split("=")[1] for line in trace.split("\n")[1:4]] == list(str(p.answer))


def test_hand_written_trace():
    assert format_trace(Problem(472, 2)) == (
        "<think>\n2+4=6\n2+7=9\n2+2=4\n</think>\n\nThe answer is $\\boxed{694}$."
    )
    assert Problem(472, 2).question == "What is 472 + 222?"


def test_format_only_traces_keep_the_layout_and_box_their_own_digits():
    rng = random.Random(0)
    p = Problem(123, 3)
    traces = [format_only_trace(p, rng) for _ in range(200)]
    right = sum(is_correct(DATA_SOURCE, t, str(p.answer)) for t in traces)
    assert right < 5  # random sums: 1 in 1000
    for t in traces[:20]:
        lines = t.split("\n")
        sums = [line.split("=")[1] for line in lines[1:4]]
        assert [line.split("=")[0] for line in lines[1:4]] == ["3+1", "3+2", "3+3"]
        assert t.endswith("$\\boxed{" + "".join(sums) + "}$.")


def test_parquet_rows_hold_prompt_ground_truth_and_trace(tmp_path):
    train, _ = split_problems(5, 1, seed=0)
    table = pq.read_table(write_parquet(train, tmp_path / "train.parquet", "train")).to_pylist()
    assert [r["reward_model"]["ground_truth"] for r in table] == [str(p.answer) for p in train]
    assert [r["prompt"] for r in table] == [[{"content": p.question, "role": "user"}] for p in train]
    assert [r["target"][0]["content"] for r in table] == [format_trace(p) for p in train]
    assert {r["data_source"] for r in table} == {DATA_SOURCE}


def test_tokenizer_keeps_every_digit_a_token(tmp_path):
    from luffy.tiny import build_tokenizer
    from luffy.toy.base_model import TOKENIZER_VOCAB

    train, _ = split_problems(50, 1, seed=0)
    tok = build_tokenizer(None, corpus=[format_trace(p) for p in train] + [p.question for p in train],
                          vocab_size=TOKENIZER_VOCAB)
    def digit_pieces(text: str) -> list[str]:
        return [x.strip() for x in (tok.decode([i]) for i in tok(text)["input_ids"]) if any(c.isdigit() for c in x)]

    # the working and the boxed answer: one token per digit; the question: one per digit of a
    assert digit_pieces(format_trace(Problem(472, 2))) == list("246279224694")
    assert digit_pieces("What is 472")[-3:] == list("472")


def test_trace_logprob_matches_a_token_loop(tmp_path):
    import torch

    from luffy.tiny import build_model, build_tokenizer
    from luffy.toy.base_model import encode_pair
    from luffy.toy.evaluate import trace_logprob

    problems = [Problem(472, 2), Problem(305, 1)]
    tok = build_tokenizer(None, corpus=[format_trace(p) for p in problems])
    model = build_model(None, tok, seed=1).eval()
    expected = 0.0
    with torch.no_grad():
        for p in problems:
            ids, n_prompt = encode_pair(tok, p, format_trace(p))
            for t in range(n_prompt, len(ids)):  # one forward per predicted token
                logits = model(input_ids=torch.tensor([ids[:t]])).logits[0, -1]
                expected += float(torch.log_softmax(logits, -1)[ids[t]])
    assert trace_logprob(model, tok, problems) == pytest.approx(expected / len(problems), rel=1e-4)
