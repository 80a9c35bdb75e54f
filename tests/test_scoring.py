"""Answer extraction and verification (luffy.scoring) and the trainer reward."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from luffy.mix_src.reward import compute_score
from luffy.scoring import (
    BoundedVerifier,
    extract_answer,
    is_correct,
    is_multiple_choice,
    score_responses,
)
from luffy.scoring.extract import MAX_SEARCH_CHARS, last_boxed

THINK = "<think>\nLet me compute carefully. 3 + 4 = 7, then check again.\n</think>\n\n"

MATH_CASES = [
    # (response, ground truth, expected verdict)
    (THINK + "The result is $\\boxed{7}$.", "7", True),
    (THINK + "So the answer is \\boxed{\\frac{1}{7}}.", "\\frac{1}{7}", True),
    ("Hence \\boxed{1/7}", "\\frac{1}{7}", True),
    ("Hence \\boxed{\\dfrac17}", "\\frac{1}{7}", True),
    ("Thus $\\boxed{\\tfrac{1}{7}}$", "1/7", True),
    ("\\boxed{0.75}", "\\frac{3}{4}", True),
    ("The area is \\boxed{25\\pi}.", "25\\pi", True),
    ("The area is \\boxed{25 \\pi}.", "25\\pi", True),
    ("The area is \\boxed{5\\pi}.", "25\\pi", False),
    ("The solution set is \\boxed{(1, 2]}.", "(1,2]", True),
    ("The solution set is \\boxed{(1, 2)}.", "(1,2]", False),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("\\boxed{x^2 + 1}", "1 + x^2", True),
    ("\\boxed{1,000}", "1000", True),
    ("\\boxed{1,2}", "12", False),
    ("After all that, the answer is 5.", "5", True),
    ("Final answer: $\\frac{4}{9}$", "\\frac{4}{9}", True),
    ("Work...\nAnswer: 3124", "3124", True),
    ("**Answer:** 686", "686", True),
    ("First I thought \\boxed{5} but actually \\boxed{6}", "6", True),
    ("First I thought \\boxed{5} but actually \\boxed{6}", "5", False),
    (THINK + "\\boxed{204 \\text{ minutes}}", "204", True),
    ("The answer is 8.", "7", False),
    ("I don't know.", "7", False),
    ("", "7", False),
    ("\\boxed{", "7", False),
    ("\\boxed{7} and then \\boxed{unterminated", "7", True),
]


@pytest.mark.parametrize(("response", "gold", "expected"), MATH_CASES)
def test_math_verdicts(response: str, gold: str, expected: bool) -> None:
    assert is_correct("math", response, gold) is expected


JUXTAPOSITION_CASES = [
    # (boxed answer, ground truth, expected): math-verify multiplies juxtaposed factors, so a stray
    # digit after a complete value must not verify; legitimate forms that look similar must.
    ("16\\pi1", "16\\pi", False),
    ("16\\pi 1", "16\\pi", False),
    ("49\\pi1", "49\\pi", False),
    ("\\frac{2}{5}1", "\\frac{2}{5}", False),
    ("\\dfrac{2}{5}1", "2/5", False),
    ("\\frac{\\sqrt{3}}{2}1", "\\frac{\\sqrt{3}}{2}", False),
    ("2\\sqrt{3}1", "2\\sqrt{3}", False),
    ("\\sqrt[3]{2}1", "\\sqrt[3]{2}", False),
    ("10^{3}1", "1000", False),
    ("2^{10}1", "1024", False),
    ("x^{2}1+1", "x^{2}+1", False),
    ("\\binom{5}{2}1", "10", False),
    ("\\theta1", "\\theta", False),
    ("16\\pi", "16\\pi", True),
    ("25\\pi", "25\\pi", True),
    ("\\frac{1}{7}", "1/7", True),
    ("\\dfrac17", "\\frac{1}{7}", True),
    ("\\dfrac17", "1/7", True),
    ("\\frac{270}7", "\\frac{270}{7}", True),
    ("\\frac{270}7+\\frac{1}{2}1", "\\frac{270}{7}+\\frac{1}{2}", False),
    ("2\\sqrt{3}", "2\\sqrt{3}", True),
    ("\\sqrt{3}/2", "\\frac{\\sqrt{3}}{2}", True),
    ("x^{2}+1", "1+x^2", True),
    ("10^{3}", "1000", True),
    ("2^{10}", "1024", True),
    ("(1, 2]", "(1,2]", True),
    ("\\pi/2", "\\frac{\\pi}{2}", True),
    ("\\frac{\\pi}{2}", "\\pi/2", True),
    ("3.14", "3.14", True),
    ("e^{2}", "e^2", True),
    ("\\log_{2}8", "3", True),
    ("1 \\text{ and } 2", "1,2", True),
    ("\\frac{2}{4}1", "\\frac{1}{2}1", True),  # the gold has the same shape: left to math-verify
]


@pytest.mark.parametrize(("boxed", "gold", "expected"), JUXTAPOSITION_CASES)
def test_juxtaposed_digit_is_not_multiplied(boxed: str, gold: str, expected: bool) -> None:
    assert is_correct("openr1", f"So the answer is \\boxed{{{boxed}}}.", gold) is expected


MC_CASES = [
    ("The correct option is C. ANSWER: C", "C", True),
    ("Reasoning...\nANSWER: B", "B", True),
    ("Answer: **D**", "D", True),
    ("So the answer is (A).", "A", True),
    ("Thus, the answer is $\\boxed{B}$", "B", True),
    ("\\boxed{\\text{(C) } 9\\pi}", "C", True),
    ("<think>Maybe A or B... it is not A</think>\nI choose option D.", "D", True),
    ("<think>The answer is A.</think>\nOn reflection: (B)", "B", True),
    ("After elimination we are left with\nB", "B", True),
    ("ANSWER: C", "B", False),
    ("The answer is a bit unclear, I cannot decide.", "A", False),
    ("", "A", False),
]


@pytest.mark.parametrize(("response", "gold", "expected"), MC_CASES)
@pytest.mark.parametrize("source", ["arc_c", "gpqa", "gpqa_diamond", "mmlu_pro"])
def test_multiple_choice_verdicts(source: str, response: str, gold: str, expected: bool) -> None:
    assert is_correct(source, response, gold) is expected


def test_multiple_choice_detection() -> None:
    for ds in ["arc_c", "ARC-C", "gpqa", "gpqa_diamond", "mmlu_pro", "mmlu-pro", "custom_gpqa_diamond"]:
        assert is_multiple_choice(ds)
    for ds in ["math", "aime", "aime25", "amc", "minerva", "olympiad_bench", "math500"]:
        assert not is_multiple_choice(ds)
    assert is_multiple_choice("my_quiz", {"multiple_choice": True})
    assert not is_multiple_choice("gpqa", {"multiple_choice": False})
    assert is_correct("my_quiz", "ANSWER: B", "B", {"multiple_choice": True})


def test_extract_answer_api() -> None:
    assert extract_answer("math", "so \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert extract_answer("math", "The answer is $12$.") == "12"
    assert extract_answer("math", "no answer here") is None
    assert extract_answer("gpqa", "ANSWER: C") == "C"
    assert extract_answer("arc_c", "blah\nANSWER: D") == "D"
    assert last_boxed("\\boxed{a{b}c}") == "a{b}c"


def test_model_text_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    payloads = [
        f"__import__('os').system('touch {marker}')",
        f"exec(\"open('{marker}', 'w')\")",
        f"eval(compile('open(\"{marker}\",\"w\")', 'x', 'exec'))",
        "exec(chr(112)+chr(114)+chr(105)+chr(110)+chr(116))",
    ]
    for payload in payloads:
        for response in (
            f"\\boxed{{{payload}}}",
            f"The answer is {payload}",
            f"```python\n{payload}\n```\nAnswer: {payload}",
        ):
            assert is_correct("math", response, "0") is False
            is_correct("gpqa", response, "A")  # must not raise or execute
            assert compute_score("math", response, "0")["acc"] == 0.0
    assert not marker.exists()


def test_very_long_response_is_fast() -> None:
    filler = "Let me think about this more. " * 20_000  # ~600k characters
    start = time.monotonic()
    assert is_correct("math", filler + "\\boxed{42}", "42")
    assert is_correct("math", "\\boxed{41}" + filler, "42") is False  # outside the searched tail
    assert not is_correct("math", "\\boxed{" + "1+" * 5000 + "1}", "5001")  # implausibly long answer
    assert time.monotonic() - start < 5
    assert len(filler) > MAX_SEARCH_CHARS


def test_pathological_answer_is_bounded() -> None:
    verifier = BoundedVerifier(num_workers=1, timeout_s=1.0)
    try:
        assert verifier.verify("x+1", "1+x")  # warm: worker started
        start = time.monotonic()
        assert verifier.verify("5", "9^{9^{9^{9^{9}}}}") is False
        elapsed = time.monotonic() - start
        assert elapsed < 1.0 + 1.5, elapsed
        assert verifier.stats["timeouts"] == 1
        # The replaced worker serves the next request.
        assert verifier.verify("\\frac{1}{2}", "0.5")
    finally:
        verifier.close()


def test_verification_from_threads() -> None:
    results: list[bool] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        ok = is_correct("math", f"\\boxed{{\\frac{{{i}}}{{{i + 1}}}}}", f"{i}/{i + 1}")
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [True] * 8


def test_score_responses_batch() -> None:
    scores = score_responses("math", ["\\boxed{2}", "\\boxed{3}", "nothing", "\\boxed{\\sqrt{4}}"], "2")
    assert [s.correct for s in scores] == [True, False, False, True]
    assert [s.pred for s in scores] == ["2", "3", None, "\\sqrt{4}"]


def test_reward_function() -> None:
    assert compute_score("math", THINK + "\\boxed{7}", "7") == {"score": 1.0, "acc": 1.0, "pred": "7"}
    assert compute_score("math", "\\boxed{8}", "7") == {"score": 0.0, "acc": 0.0, "pred": "8"}
    assert compute_score("math", "no idea", "7") == {"score": 0.0, "acc": 0.0, "pred": ""}
    assert compute_score("math", "no idea", "7", format_penalty=0.5)["score"] == -0.5
    assert compute_score("gpqa", "ANSWER: A", "A", extra_info={"index": 3})["score"] == 1.0
    with pytest.raises(ValueError):
        compute_score("math", "x", "7", format_penalty=-1)


def test_reward_loads_from_file_path() -> None:
    """veRL loads ``custom_reward_function.path`` as a file module and calls it with keywords."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "luffy" / "mix_src" / "reward.py"
    spec = importlib.util.spec_from_file_location("custom_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn = module.compute_score
    out = fn(data_source="math", solution_str="\\boxed{3}", ground_truth="3", extra_info={"num_turns": None})
    assert out["score"] == 1.0


def test_choice_letters_restricted_to_options() -> None:
    from luffy.scoring.choice import count_choices

    question = "Which one?\n\nA) 1\nB) 2\nC) 3\nD) 4\n"
    assert count_choices(question) == 4
    assert count_choices("no options here") is None
    assert extract_answer("gpqa", "noise J noise", {"n_choices": 4}) is None
    assert extract_answer("gpqa", "noise J noise") == "J"
    assert extract_answer("mmlu_pro", "ANSWER: H", {"choices": list("abcdefghij")}) == "H"
    assert is_correct("arc_c", "The answer is (E). Hmm, no: ANSWER: B", "B", {"n_choices": 4})


def test_reward_accepts_several_ground_truths() -> None:
    assert compute_score("math", "\\boxed{0.5}", ["2", "\\frac{1}{2}"])["score"] == 1.0
    assert compute_score("math", "\\boxed{3}", ["2", "\\frac{1}{2}"]) == {"score": 0.0, "acc": 0.0, "pred": "3"}
