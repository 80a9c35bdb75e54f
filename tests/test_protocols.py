"""Evaluation protocols: designed responses whose verdicts differ between ``luffy`` and ``trainer``,
each checked against a plain reference written here and against hand-decided verdicts; the OAT-style
grader; LUFFY's flags and templates; the macro and pooled averages."""

from __future__ import annotations

import random
import re
import sys

import pytest
from math_verify import parse, verify

from luffy.scoring.protocols import LuffyOptions, luffy_graded_text, score_with_protocol

THINK_PROMPT = "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\n"
PLAIN_PROMPT = "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"


# ----------------------------------------------------------------------------- plain references
def ref_last_box(text: str) -> str | None:
    """Content of the last complete ``\\boxed{}`` anywhere (the trainer's extraction), slowly."""
    best = None
    for m in re.finditer(r"\\boxed\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            best = text[m.end() : i - 1]
    return best


def ref_trainer(response: str, gold: str, multiple_choice: bool) -> bool:
    """Trainer protocol for these cases: the last complete box anywhere (else "the answer is X" / "Answer: X")."""
    box = ref_last_box(response)
    if box is None:
        after = response.split("</think>")[-1]
        m = re.findall(r"(?:answer is|Answer:)\s*\(?\$?([^$\s).]+)", after)
        box = m[-1] if m else None
    if box is None:
        return False
    if multiple_choice:
        return box.strip() == gold
    return bool(verify(parse(f"${gold}$"), parse(f"${box}$")))


def ref_oat_box(text: str) -> str | None:
    """The last ``\\boxed`` only: its content when written ``\\boxed{...}`` and closed, else None."""
    idx = text.rfind("\\boxed")
    if idx < 0 or not text.startswith("\\boxed{", idx):
        return None
    for j in range(idx + len("\\boxed{"), len(text) + 1):
        inner = text[idx + len("\\boxed{") : j]
        if j < len(text) and text[j] == "}" and inner.count("{") == inner.count("}"):
            return inner
    return None


def ref_luffy(prompt: str, response: str, gold: str, oat: bool = False, any_true: bool = False) -> bool:
    """LUFFY's verdict: think split when the prompt ends in <think>, math-verify on the text, OAT on its box."""
    text, split_ok = response, True
    if prompt.endswith("<think>\n"):
        text = "<think>\n" + response
        if "</think>" in text:
            text = text.split("</think>")[1]
        else:
            split_ok = False
    mv = split_ok and bool(verify(parse(f"${gold}$"), parse(text)))
    if not oat:
        return mv
    box = ref_oat_box(text)
    oat_ok = box is not None and (box.strip() == gold or bool(verify(parse(f"${gold}$"), parse(f"${box}$"))))
    return (mv or oat_ok) if any_true else oat_ok


# (name, prompt, response, gold, source, expected: trainer, luffy math-verify, luffy OAT)
CASES = [
    # A response cut off while thinking that boxed something: the trainer counts it, LUFFY's math-verify
    # does not (no </think>), LUFFY's OAT grader does (it sees the whole text when the split fails).
    ("box in unfinished think", THINK_PROMPT, "So x = \\boxed{5}. Let me re-check", "5", "math", (True, False, True)),
    ("no </think>", THINK_PROMPT, "Thinking... the answer is 5", "5", "math", (True, False, False)),
    ("two boxes", THINK_PROMPT, "ok</think>\nFirst \\boxed{6}, no: \\boxed{5}.", "5", "math", (True, False, True)),
    (
        "correct only outside the box",
        THINK_PROMPT,
        "maybe \\boxed{4}</think>\nThe answer is 5",
        "5",
        "math",
        (False, True, False),
    ),
    ("letter in words", THINK_PROMPT, "hmm</think>\nThe answer is (C).", "C", "gpqa", (True, False, False)),
    ("letter boxed", THINK_PROMPT, "hmm</think>\n\\boxed{C}", "C", "gpqa", (True, True, True)),
    ("no think format", PLAIN_PROMPT, "So \\boxed{5}. Let me re-check", "5", "math", (True, True, True)),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_designed_verdicts(case) -> None:
    _, prompt, response, gold, source, (want_trainer, want_mv, want_oat) = case
    mc = source == "gpqa"
    assert ref_trainer(response, gold, mc) is want_trainer
    assert ref_luffy(prompt, response, gold) is want_mv
    assert ref_luffy(prompt, response, gold, oat=True) is want_oat
    got = score_with_protocol("trainer", source, prompt, [response], gold)[0].correct
    assert got is want_trainer
    for oat, any_true, want in ((False, False, want_mv), (True, False, want_oat), (True, True, want_mv or want_oat)):
        opts = LuffyOptions(add_oat_evaluate=oat, any_true=any_true)
        assert score_with_protocol("luffy", source, prompt, [response], gold, None, opts)[0].correct is want
        assert ref_luffy(prompt, response, gold, oat, any_true) is want


def test_think_switches() -> None:
    response = "So \\boxed{5}. Let me re-check"
    # add_think_before_answer: the think format without <think> in the prompt; no_split_think undoes it.
    assert luffy_graded_text(PLAIN_PROMPT, response, LuffyOptions(add_think_before_answer=True))[1] is False
    text, ok = luffy_graded_text(THINK_PROMPT, response, LuffyOptions(no_split_think=True))
    assert ok and text == "<think>\n" + response
    # Only the text between the first and the second </think> is graded.
    text, ok = luffy_graded_text(THINK_PROMPT, "a</think>b</think>c", LuffyOptions())
    assert ok and text == "b"


# ----------------------------------------------------------------------------- OAT-style grader
def test_oat_box_matches_reference_on_random_text() -> None:
    from luffy.scoring.oat_grader import oat_boxed_answer

    rng = random.Random(0)
    pieces = ["\\boxed{", "\\boxed ", "{", "}", "x", "1", " ", "\\fbox{"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert oat_boxed_answer(text) == ref_oat_box(text), text


@pytest.mark.parametrize(
    ("answer", "gold", "want"),
    [
        ("\\frac12", "\\frac{1}{2}", True),
        ("0.5", "\\frac{1}{2}", True),
        ("1/2", "\\dfrac{1}{2}", True),
        ("5 \\text{ cm}", "5", True),
        ("x = 5", "5", True),
        ("10^{\\circ}", "10", True),
        ("1,000", "1000", True),
        ("\\text{(B)}", "C", False),
        ("2 and 3", "2, 3", True),
        ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}", True),
        ("6", "5", False),
        ("5", "\\boxed{5}", True),
    ],
)
def test_oat_grade(answer: str, gold: str, want: bool) -> None:
    from luffy.scoring.oat_grader import oat_grade

    assert oat_grade(answer, gold) is want


# ----------------------------------------------------------------------------- LUFFY's flags
def _generate_args(*extra: str):
    from test_eval_scripts import SCRIPTS

    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    import generate_vllm

    return generate_vllm.parse_args(["--model_path", "m", "--input_file", "i", "--output_file", "o", *extra])


@pytest.mark.parametrize("value", ["True", "true", "1", "yes"])
def test_fire_style_booleans(value: str) -> None:
    args = _generate_args("--remove_system", value, "--add_oat_evaluate", value, "--any_true", value)
    assert args.remove_system is args.add_oat_evaluate is args.any_true is True
    assert args.protocol == "luffy" and args.top_p == 1.0
    bare = _generate_args("--add_oat_evaluate", "--template", "simplerl")
    assert bare.add_oat_evaluate is True and bare.template == "simplerl" and bare.any_true is False
    assert _generate_args("--force_generate", "True").overwrite is True
    trainer = _generate_args("--protocol", "trainer", "--remove_system", "False")
    assert trainer.remove_system is False and trainer.top_p == 0.95


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (["--remove_system", "False"], "always drops the system turn"),
        (["--any_true", "True"], "needs --add_oat_evaluate True"),
        (["--protocol", "trainer", "--add_oat_evaluate", "True"], "use --protocol luffy"),
        (["--protocol", "trainer", "--template", "simplerl"], "not a template of --protocol trainer"),
        (["--output_eval", "x.json"], "never writes to it"),
    ],
)
def test_meaningless_flags_refused_in_one_line(extra: list[str], why: str, capsys: pytest.CaptureFixture) -> None:
    from test_eval_scripts import run_main

    assert run_main("generate_vllm.py", "--model_path", "m", "--input_file", "i", "--output_file", "o", *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and why in err[0]


def test_luffy_templates() -> None:
    from luffy.evaluation.luffy_prompts import LUFFY_TEMPLATES, render_luffy_prompt
    from luffy.prompts import QWEN_MATH_SYSTEM_PROMPT

    q = "What is {1+1}?"
    assert set(LUFFY_TEMPLATES) >= {"own", "simplerl", "qwen", "prime", "prime_sft", "prime_code", "no"}
    assert render_luffy_prompt(None, q, "no") == q
    assert render_luffy_prompt(None, q, "qwen") == (
        f"<|im_start|>system\n{QWEN_MATH_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    simplerl = render_luffy_prompt(None, q, "simplerl")
    assert simplerl.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert "within\\boxed{{}}.<|im_end|>" in simplerl
    prime = render_luffy_prompt(None, q, "prime")
    assert prime.startswith("A conversation between User and Assistant.") and prime.endswith(
        f"User: {q}\n\nPresent the answer in LaTex format: \\boxed{{Your answer}}. Assistant:"
    )
    assert "Write Python code" in render_luffy_prompt(None, q, "prime_code")


# ----------------------------------------------------------------------------- averages
def test_macro_and_pooled_averages_on_unbalanced_sets() -> None:
    from luffy.evaluation.summary import summarize

    rng = random.Random(1)
    sizes = {"aime": 3, "math500": 40, "minerva": 11}
    records = [
        {"data_source": ds, "correct": [rng.random() < 0.4 for _ in range(4)], "extracted": ["1"] * 4}
        for ds, k in sizes.items()
        for _ in range(k)
    ]
    rng.shuffle(records)
    summary = summarize(records)
    per_source = {}
    for ds in sizes:
        flat = [c for r in records if r["data_source"] == ds for c in r["correct"]]
        per_source[ds] = sum(flat) / len(flat)
        assert summary[ds]["avg@n"] == pytest.approx(per_source[ds])
    pooled = [c for r in records for c in r["correct"]]
    assert summary["all"]["avg@n"] == pytest.approx(sum(pooled) / len(pooled))
    assert summary["macro"]["avg@n"] == pytest.approx(sum(per_source.values()) / len(per_source))
    assert summary["macro"]["avg@n"] != pytest.approx(summary["all"]["avg@n"])  # the sets are unbalanced
    assert summary["macro"]["n_sources"] == 3


# ----------------------------------------------------------------------------- LUFFY's README command
def check_readme_run(proc, workdir, model, model_name: str) -> None:
    """What LUFFY's README command must leave: every problem scored under LUFFY's protocol, the
    prompts without the system turn, the summary with both averages."""
    import json

    from transformers import AutoTokenizer

    from luffy.evaluation.luffy_prompts import render_luffy_prompt

    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    results = workdir / "run" / "results"
    log = (results / f"{model_name}.log").read_text()
    assert "all (pooled problems)" in log and "macro (mean of sources)" in log
    rows = [json.loads(line) for line in (results / f"{model_name}.jsonl").read_text().splitlines()]
    assert len(rows) == 9  # one problem per source of the sample
    template = {"eurus-2-7b-prime-zero": "prime", "simple-rl-zero": "qwen"}.get(model_name, "own")
    tok = AutoTokenizer.from_pretrained(model)
    for r in rows:
        s = r["settings"]
        assert (s["protocol"], s["template"], s["remove_system"], s["add_oat_evaluate"], s["any_true"]) == (
            "luffy", template, True, True, False,
        )  # fmt: skip
        assert s["top_p"] == 1.0 and s["max_tokens"] == 8192
        assert r["prompt"] == render_luffy_prompt(tok, r["question"], template)
        assert "Your task is to follow a systematic" not in r["prompt"]  # the system turn is gone
        want = [ref_luffy(r["prompt"], resp, r["answer"], oat=True) for resp in r["responses"]]
        assert r["correct"] == want
    summary = json.loads((results / f"{model_name}.summary.json").read_text())
    sources = [k for k in summary if k not in ("all", "macro")]
    assert len(sources) == 9
    assert summary["macro"]["avg@n"] == pytest.approx(sum(summary[k]["avg@n"] for k in sources) / 9)


@pytest.mark.slow  # runs the model in a subprocess (~40 s); the template branches are checked above
def test_luffy_readme_command_runs_as_written(tiny_model_dir, tmp_path) -> None:
    from _luffy_readme import run_readme_block

    proc = run_readme_block(tmp_path, tiny_model_dir, "luffy", "hf", timeout_s=600)
    check_readme_run(proc, tmp_path, tiny_model_dir, "luffy")


# ----------------------------------------------------------------------------- score.py and resume
def test_score_script_protocols(tmp_path) -> None:
    """score.py decides LUFFY's think format from each line's prompt; the trainer protocol ignores it."""
    import json

    from test_eval_scripts import run_main

    rows = [
        {"data_source": "math", "prompt": prompt, "answer": gold, "responses": [response]}
        for _, prompt, response, gold, source, _ in CASES
        if source == "math"
    ]
    results = tmp_path / "r.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    verdicts = {}
    for flags in ([], ["--add_oat_evaluate", "True"], ["--protocol", "trainer"]):
        out = tmp_path / "out.jsonl"
        assert run_main("score.py", results, *flags, "--rescored_out", out, "--no_progress") == 0
        verdicts[tuple(flags)] = [json.loads(line)["correct"][0] for line in out.read_text().splitlines()]
    want = [c[5] for c in CASES if c[4] == "math"]
    assert verdicts[()] == [w[1] for w in want]
    assert verdicts[("--add_oat_evaluate", "True")] == [w[2] for w in want]
    assert verdicts[("--protocol", "trainer")] == [w[0] for w in want]
    # Without a <think> prompt the split happens only when asked for: then as after a <think> prompt.
    for r in rows:
        r["prompt"] = PLAIN_PROMPT
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    forced = [ref_luffy(THINK_PROMPT, r["responses"][0], r["answer"]) for r in rows]
    assert forced != [ref_luffy(PLAIN_PROMPT, r["responses"][0], r["answer"]) for r in rows]
    out = tmp_path / "out.jsonl"
    assert run_main("score.py", results, "--add_think_before_answer", "True", "--rescored_out", out) == 0
    assert [json.loads(line)["correct"][0] for line in out.read_text().splitlines()] == forced


def test_resume_refuses_another_protocol(tmp_path) -> None:
    from luffy.evaluation.results import SETTING_KEYS, ResultsFileError, resume_plan

    settings = {k: None for k in SETTING_KEYS} | {"protocol": "trainer", "add_oat_evaluate": False}
    records = [{"id": "a", "problem_hash": "h", "settings": settings}]
    assert resume_plan(tmp_path / "r.jsonl", records, settings, {"a": "h"}) == {"a"}
    for key, value in (("protocol", "luffy"), ("add_oat_evaluate", True)):
        with pytest.raises(ResultsFileError, match=f"{key}="):
            resume_plan(tmp_path / "r.jsonl", records, settings | {key: value}, {"a": "h"})


def test_skip_scoring_then_score(tmp_path, tiny_model_dir, capsys) -> None:
    """--skip_scoring True writes responses without verdicts; score.py scores them afterwards."""
    import json

    from test_eval_scripts import run_main

    out = tmp_path / "gen.jsonl"
    args = [
        "--engine", "hf", "--cpu_threads", "1", "--model_path", tiny_model_dir, "--input_file",
        tiny_sample(tmp_path), "--output_file", out, "--max_tokens", "4", "--no_progress",
    ]  # fmt: skip
    assert run_main("generate_vllm.py", *args, "--skip_scoring", "True") == 0
    assert "score them with" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all("correct" not in r for r in rows)
    summary = tmp_path / "s.json"
    assert run_main("score.py", out, "--summary_out", summary, "--no_progress") == 0
    assert json.loads(summary.read_text())["all"]["n_problems"] == 2
    # The same file cannot be resumed with scoring on: the settings differ.
    assert run_main("generate_vllm.py", *args) == 2
    assert "skip_scoring=True" in capsys.readouterr().err


def tiny_sample(tmp_path) -> str:
    import json

    path = tmp_path / "two.jsonl"
    rows = [
        {"data_source": "math", "problem": "1+1?", "answer": "2"},
        {"data_source": "amc", "problem": "2+2?", "answer": "4"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_compare_protocols_script(tmp_path) -> None:
    """compare_protocols.py counts the disagreements a plain loop over the references finds."""
    import json

    from test_eval_scripts import run_main

    cases = [c for c in CASES if c[4] == "math"]
    data = tmp_path / "traces.jsonl"
    data.write_text("".join(json.dumps({"generations": [c[2]], "answer": c[3]}) + "\n" for c in cases))
    out = tmp_path / "cmp.json"
    assert run_main("compare_protocols.py", data, "--cuts", "1", "--out", out) == 0
    row = json.loads(out.read_text())["cuts"]["1"]
    for name, prompt, oat in (("math-verify, <think> prompt", THINK_PROMPT, False),
                              ("README (OAT), plain prompt", PLAIN_PROMPT, True)):  # fmt: skip
        want = sum(ref_trainer(c[2], c[3], False) != ref_luffy(prompt, c[2], c[3], oat=oat) for c in cases)
        assert row[name]["differ"] == want and sum(row[name]["causes"].values()) == want


def test_luffy_scoring_is_bounded() -> None:
    """Untrusted text: a huge response is refused at once, an unclosed box in one costs linear time."""
    import time

    from luffy.scoring.math_verify_bounded import MAX_TEXT_CHARS, get_verifier

    stats = get_verifier().stats
    before = stats["refused"]
    huge = "\\boxed{" + "{x" * MAX_TEXT_CHARS
    start = time.perf_counter()
    for opts in (LuffyOptions(), LuffyOptions(add_oat_evaluate=True, any_true=True)):
        assert score_with_protocol("luffy", "math", PLAIN_PROMPT, [huge], "5", None, opts)[0].correct is False
    assert time.perf_counter() - start < 5
    assert stats["refused"] >= before + 2
