"""End-to-end evaluation scripts on CPU with a tiny offline model (``--engine hf``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SCRIPTS = REPO / "eval_scripts"


@pytest.fixture(scope="module")
def eval_data_dir() -> Path:
    """``../shared/data`` (skips with the reason when the shared folder is absent)."""
    if not (SHARED_DATA / "eval_sample.jsonl").is_file():
        pytest.skip(f"shared evaluation data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random-weight tiny Qwen2 checkpoint built offline."""
    from luffy.tiny import build_tiny_checkpoint

    return Path(build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model"))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _script(name: str, *args: str | Path) -> list[str]:
    return [sys.executable, str(SCRIPTS / name), *map(str, args)]


def run_main(name: str, *args: str | Path) -> int:
    """Run a script's ``main`` in this process (no interpreter start-up, shared verifier)."""
    import importlib

    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    module = importlib.import_module(name.removesuffix(".py"))
    return module.main([str(a) for a in args])


def run_script(name: str, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(_script(name, *args), capture_output=True, text=True, env=_env(), timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow  # runs the script in a subprocess
@pytest.mark.parametrize(
    "script", ["generate_vllm.py", "score.py", "plot_results.py", "infer.py", "compare_protocols.py"]
)
def test_help(script: str) -> None:
    assert "usage" in run_script(script, "--help").stdout


def test_generate_parquet_own_template_matches_prompt(tmp_path: Path, tiny_model: Path, eval_data_dir: Path) -> None:
    import pandas as pd
    from transformers import AutoTokenizer

    from luffy.evaluation.data import load_problems
    from luffy.prompts import build_messages

    parquet = eval_data_dir / "benchmarks" / "valid.parquet"
    if not parquet.is_file():
        pytest.skip(f"{parquet} not found")
    problems = load_problems(parquet, limit_per_source=2)
    df = pd.read_parquet(parquet)
    for p in problems:
        original = [dict(m) for m in df.iloc[p.index]["prompt"]]
        assert build_messages(p.question, "own") == original
    out = tmp_path / "pq.jsonl"
    args = [
        "--engine", "hf", "--cpu_threads", "1", "--model_path", tiny_model, "--input_file", parquet,
        "--output_file", out, "--protocol", "trainer",
        "--max_tokens", "4", "--data_sources", "aime", "math", "--limit_per_source", "1", "--no_progress",
    ]  # fmt: skip
    assert run_main("generate_vllm.py", *args) == 0
    records = read_jsonl(out)
    assert sorted(r["data_source"] for r in records) == ["aime", "math"]
    tok = AutoTokenizer.from_pretrained(tiny_model)
    for r in records:
        original = [dict(m) for m in df.iloc[r["index"]]["prompt"]]
        assert r["prompt"] == tok.apply_chat_template(original, tokenize=False, add_generation_prompt=True)
        assert r["answer"] == df.iloc[r["index"]]["reward_model"]["ground_truth"]


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, eval_data_dir: Path) -> dict:
    """Run the generator on eval_sample.jsonl, kill it half-way, tear its last line, and rerun it."""
    tmp = tmp_path_factory.mktemp("resume")
    out, summary = tmp / "out.jsonl", tmp / "summary.json"
    args = [
        "--engine", "hf", "--cpu_threads", "1", "--model_path", tiny_model,
        "--input_file", eval_data_dir / "eval_sample.jsonl",
        "--output_file", out, "--max_tokens", "24", "--n", "2", "--limit_per_source", "2",
        "--summary_out", summary, "--no_progress", "--protocol", "trainer",
    ]  # fmt: skip
    proc = subprocess.Popen(
        _script("generate_vllm.py", *args), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_text().count("\n") >= 2:
                break
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    done_lines = [ln for ln in out.read_text().split("\n")[:-1] if ln]
    with out.open("a") as fh:  # a torn last line, as from a writer killed mid-write
        fh.write('{"id": "amc-8", "responses": ["tor')
    assert run_main("generate_vllm.py", *args) == 0
    return {"out": out, "summary": summary, "done_lines": done_lines}


@pytest.mark.slow  # starts the entry point or Ray in a subprocess
def test_generate_resumes_after_kill(resumed_run: dict) -> None:
    out, done_lines = resumed_run["out"], resumed_run["done_lines"]
    assert 2 <= len(done_lines) < 18, "the first run should have been killed half-way"
    ids = [r["id"] for r in read_jsonl(out)]
    assert len(ids) == len(set(ids)) == 18
    assert out.read_text().split("\n")[: len(done_lines)] == done_lines  # finished lines untouched


@pytest.mark.slow  # shares the killed-and-resumed generation run
def test_generate_jsonl_end_to_end(resumed_run: dict) -> None:
    records = read_jsonl(resumed_run["out"])
    for r in records:
        assert len(r["responses"]) == len(r["correct"]) == len(r["extracted"]) == len(r["response_lengths"]) == 2
        assert r["prompt"].startswith("<|im_start|>system\n") and r["prompt"].endswith("<|im_start|>assistant\n")
        assert all(isinstance(c, bool) for c in r["correct"])
    mc = next(r for r in records if r["data_source"] == "gpqa_diamond")
    assert mc["multiple_choice"] and "\n\nA) " in mc["question"] and "\nD) " in mc["question"]
    assert mc["answer"] in "ABCD"
    data = json.loads(resumed_run["summary"].read_text())
    assert set(data) == {
        "aime24", "aime25", "amc", "math500", "minerva", "olympiad_bench", "arc_c", "gpqa_diamond", "mmlu_pro", "all",
        "macro",
    }  # fmt: skip
    for key in ("n_problems", "avg@n", "pass@1", "pass@2", "maj@n", "mean_response_tokens"):
        assert key in data["all"]
    assert data["all"]["n_problems"] == 18 and data["amc"]["n_problems"] == 2
    assert resumed_run["summary"].with_suffix(".csv").read_text().startswith("data_source,")


def test_score_script(tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "r.jsonl"
    rows = [
        {"data_source": "math", "answer": "\\frac{1}{7}", "responses": ["\\boxed{1/7}", "\\boxed{2}"]},
        {"data_source": "gpqa", "answer": "B", "responses": ["ANSWER: B", "ANSWER: B"]},
        {"data_source": "math", "ground_truth": "3", "responses": "The answer is 3."},
    ]
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = tmp_path / "s.json"
    assert run_main("score.py", results, "--protocol", "trainer", "--summary_out", summary, "--no_progress") == 0
    data = json.loads(summary.read_text())
    assert data["math"]["n_problems"] == 2
    assert data["gpqa"]["avg@n"] == 1.0
    assert data["all"]["n_problems"] == 3
    # A bad line fails with its line number unless skipped.
    with results.open("a") as fh:
        fh.write('{"data_source": "math", "responses": ["x"]}\n')
    caplog.clear()
    assert run_main("score.py", results, "--protocol", "trainer", "--summary_out", summary, "--no_progress") == 2
    err = capsys.readouterr().err
    assert "error: " in err and "r.jsonl:4" in err and "answer" in err
    caplog.clear()
    assert run_main("score.py", results, "--protocol", "trainer", "--summary_out", summary, "--skip_bad") == 0
    assert "skipped 1 bad line" in caplog.text


def test_plot_results(tmp_path: Path) -> None:
    a, b = tmp_path / "a.summary.json", tmp_path / "b.summary.json"
    a.write_text(json.dumps({"math": {"avg@n": 0.4}, "gpqa": {"avg@n": 0.3}, "all": {"avg@n": 0.35}}))
    b.write_text(json.dumps({"math": {"avg@n": 0.5}, "all": {"avg@n": 0.5}}))
    png = tmp_path / "figures" / "cmp.png"
    assert run_main("plot_results.py", a, b, "--labels", "base", "luffy", "--out", png) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # runs the script in a subprocess
def test_clear_errors(tmp_path: Path, tiny_model: Path) -> None:
    base = ["--engine", "hf", "--model_path", tiny_model, "--output_file", tmp_path / "o.jsonl"]
    proc = run_script("generate_vllm.py", *base, "--input_file", tmp_path / "missing.jsonl", check=False)
    assert proc.returncode == 2 and "not found" in proc.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "1+1?", "answer": "2"}\n{"problem": "no answer"}\n')
    proc = run_script("generate_vllm.py", *base, "--input_file", bad, check=False)
    assert proc.returncode == 2 and "line 2" in proc.stderr
    proc = run_script("generate_vllm.py", *base, "--input_file", bad, "--n", "0", check=False)
    assert proc.returncode == 2 and "--n must be >= 1" in proc.stderr


def test_templates(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    from luffy.evaluation.engines import render_prompt
    from luffy.prompts import LUFFY_SYSTEM_PROMPT, QWEN_MATH_SYSTEM_PROMPT, build_messages

    q = "What is 1+1?"
    assert build_messages(q, "own") == [
        {"role": "system", "content": LUFFY_SYSTEM_PROMPT},
        {"role": "user", "content": q},
    ]
    assert build_messages(q, "own", remove_system=True) == [{"role": "user", "content": q}]
    assert build_messages(q, "qwen")[0]["content"] == QWEN_MATH_SYSTEM_PROMPT
    prime = build_messages(q, "prime")
    assert prime[0]["content"].startswith("When tackling complex reasoning tasks")
    assert prime[1]["content"].endswith("\\boxed{Your answer}")
    with pytest.raises(ValueError, match="unknown template"):
        build_messages(q, "chatml")
    tok = AutoTokenizer.from_pretrained(tiny_model)
    assert render_prompt(tok, q, "no") == q
    rendered = render_prompt(tok, q, "qwen")
    assert rendered.startswith("<|im_start|>system\nPlease reason step by step")
    assert rendered.endswith(f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n")


def test_torn_tail_handling(tmp_path: Path) -> None:
    from luffy.evaluation.results import ResultsFileError, ResultWriter, read_results

    path = tmp_path / "r.jsonl"
    with ResultWriter(path) as w:
        w.write({"id": "a"})
        w.write({"id": "b"})
    path.write_text(path.read_text() + '{"id": "c", "resp')
    assert [r["id"] for r in read_results(path)] == ["a", "b"]
    assert [r["id"] for r in read_results(path, repair_torn_tail=True)] == ["a", "b"]
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ResultsFileError, match="line 2"):
        read_results(path)
