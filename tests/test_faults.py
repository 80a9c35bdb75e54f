"""Fault suite: bad input and faults never hang, lose good rows, mix runs up or print a traceback.

Sections follow the numbered cases of the fault report: (1) bounded scoring, (2) one bad line loses
only itself, (3) unusable ground truths, (4) evaluation resume keyed on problem and settings,
(5) checkpoints, (6) one-line errors for user mistakes, (7) the token budget on a huge trace. Every
input is generated here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from _compose import compose_luffy
from _data_fixtures import good_row, tiny_tokenizer, tiny_tokenizer_dir  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
EVAL_SCRIPTS = REPO / "eval_scripts"


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("LUFFY_DEBUG", None)
    return env


def run_script(path: Path, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(path), *map(str, args)], capture_output=True, text=True, env=_env(), timeout=timeout,
        cwd=REPO,
    )


def run_main(script: str, *args) -> int:
    """A script's ``main`` in this process (no interpreter start-up)."""
    import importlib.util

    name = Path(script).stem
    if str(EVAL_SCRIPTS) not in sys.path:
        sys.path.insert(0, str(EVAL_SCRIPTS))
    spec = importlib.util.spec_from_file_location(f"_fault_{name}", REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in args])


def assert_one_line_error(proc_or_err: str, *words: str) -> None:
    """stderr holds an ``error: ...`` line naming ``words`` and no traceback."""
    assert "Traceback" not in proc_or_err, proc_or_err
    lines = [line for line in proc_or_err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc_or_err
    for word in words:
        assert word in lines[0], (word, lines[0])


# ---------------------------------------------------------------------------------------------- (1)
def _old_last_boxed(text: str) -> str | None:
    """The former rescanning implementation: slow reference for the one-pass version."""
    import re

    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text):
            ch = text[i]
            if ch == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
                i += 2
                continue
            depth += {"{": 1, "}": -1}.get(ch, 0)
            if depth == 0:
                return text[start:i].strip()
            i += 1
    return None


def _old_juxtaposed(s: str) -> bool:
    """The former quadratic implementation: slow reference for the linear version."""
    import re

    from luffy.scoring.math_verify_bounded import _VALUE_CMD_RE, _VALUE_SYMBOL_RE

    def group_start(close: int) -> int:
        depth = 0
        for j in range(close, -1, -1):
            if j > 0 and s[j - 1] == "\\":
                continue
            depth += {"}": 1, "{": -1}.get(s[j], 0)
            if depth == 0:
                return j
        return -1

    if _VALUE_SYMBOL_RE.search(s):
        return True
    for m in re.finditer(r"(?<!\\)\}(?=\d)", s):
        i, groups = m.start(), 0
        while (i := group_start(i)) > 0:
            groups += 1
            cmd = _VALUE_CMD_RE.search(s, 0, i)
            if cmd:
                if groups >= (2 if cmd.group().endswith(("frac", "binom")) else 1):
                    return True
                break
            if s[i - 1] != "}":
                break
            i -= 1
    return False


def test_linear_brace_matching_agrees_with_the_old_rescans_on_random_strings():
    from luffy.scoring.extract import last_boxed
    from luffy.scoring.math_verify_bounded import _juxtaposed_number

    rng = random.Random(0)
    pieces = ["{", "}", "\\{", "\\}", "\\boxed{", "\\fbox {", "1", "x", "^", "\\frac", "\\sqrt", "\\pi", " ", "\\"]
    for _ in range(3000):
        s = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        assert last_boxed(s) == _old_last_boxed(s), s
    # Escaped braces left out here: an escaped ``\\}`` no longer ends a brace group (the old walk-back
    # could step onto one); everything else must agree.
    pieces = [p for p in pieces if p not in ("\\{", "\\}")] + ["\\binom", "\\log_", "7"]
    for _ in range(3000):
        s = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        assert _juxtaposed_number(s) == _old_juxtaposed(s), s


@pytest.mark.parametrize(
    ("gold", "response"),
    [
        ("{}1" * 1333, "so \\boxed{x^{2}1}"),  # 4 kB gold: the former fast path took seconds on 30 kB
        ("{" * 2000 + "}1" * 1000, "so \\boxed{\\pi1}"),
        ("5", "\\boxed{" * 2300),  # 16 kB of unterminated boxes: 4.6 s before
        ("5", "\n" * 16000),  # blank lines: 6.8 s before (a ^\s* regex under MULTILINE)
        ("5", "The answer is" + "\n" * 16000),
    ],
)
def test_pathological_input_costs_no_more_than_a_linear_scan(gold, response):
    from luffy.scoring import is_correct

    start = time.perf_counter()
    assert is_correct("math", response, gold) is False
    assert time.perf_counter() - start < 2.0  # milliseconds now; seconds (or a hang) before


def test_huge_ground_truth_is_refused_at_once_and_counted():
    from luffy.scoring import get_verifier, is_correct

    stats = get_verifier().stats
    before = stats["refused"]
    start = time.perf_counter()
    assert is_correct("math", "\\boxed{x^{2}1}", "{}1" * 350_000) is False  # 1 MB: hung score.py before
    assert time.perf_counter() - start < 2.0
    assert stats["refused"] == before + 1


def test_score_script_refuses_a_pathological_ground_truth_with_its_line(tmp_path, capsys):
    results = tmp_path / "r.jsonl"
    rows = [{"data_source": "math", "answer": str(i), "responses": [f"\\boxed{{{i}}}"]} for i in range(5)]
    rows.insert(2, {"data_source": "math", "answer": "{}1" * 350_000, "responses": ["\\boxed{x^{2}1}"]})
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    start = time.perf_counter()
    assert run_main("eval_scripts/score.py", results, "--no_progress") == 2
    assert_one_line_error(capsys.readouterr().err, "r.jsonl:3", "1050000 characters")
    summary = tmp_path / "s.json"
    assert run_main("eval_scripts/score.py", results, "--no_progress", "--skip_bad", "--summary_out", summary) == 0
    out = capsys.readouterr().out
    assert "lines scored: 5; bad lines skipped: 1" in out  # 6 in = 5 scored + 1 counted
    assert json.loads(summary.read_text())["all"]["avg@n"] == 1.0
    assert time.perf_counter() - start < 30


def test_trainer_reward_refuses_an_unusable_ground_truth_and_logs_its_row(caplog):
    from luffy.mix_src.reward import compute_score

    caplog.set_level(logging.WARNING)
    start = time.perf_counter()
    for gold in ("{}1" * 350_000, float("nan"), {"a": 1}):
        out = compute_score("math", "\\boxed{nan}", gold, {"index": 17})
        assert out == {"score": 0.0, "acc": 0.0, "pred": ""}
    assert time.perf_counter() - start < 5
    assert caplog.text.count("row 17: ground truth refused") == 3
    assert compute_score("math", "\\boxed{4}", 4)["score"] == 1.0  # numbers stay usable


# ---------------------------------------------------------------------------------------------- (2)
def _jsonl_with_bad_lines(path: Path, n_good: int = 47) -> Path:
    """``n_good`` good raw rows with one non-UTF-8 line and one lone-surrogate line among them."""
    lines = [json.dumps(good_row(i)).encode() for i in range(n_good)]
    lines.insert(10, b'{"problem": "caf\xe9 \xff", "answer": "1"}')  # latin-1 bytes: not UTF-8
    surrogate = dict(good_row(1000), problem="What is \ud800 + 1?")
    lines.insert(30, json.dumps(surrogate).encode())  # json escapes it as \ud800: decodes to a lone surrogate
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_iter_jsonl_reports_each_bad_line_and_reads_the_rest(tmp_path):
    from luffy.jsonl import iter_jsonl

    path = _jsonl_with_bad_lines(tmp_path / "in.jsonl")
    out = list(iter_jsonl(path))
    bad = {line: problem for line, row, problem in out if problem}
    assert len(out) == 49 and sum(row is not None for _, row, _ in out) == 47
    assert bad[11].startswith("not valid UTF-8 (byte 0xe9")
    assert bad[31].startswith("not valid Unicode text") and "\\ud800" in bad[31]


@pytest.mark.slow  # runs the script in a subprocess
def test_prepare_train_loses_only_the_bad_lines(tmp_path):
    path = _jsonl_with_bad_lines(tmp_path / "in.jsonl")
    proc = run_script(REPO / "data/prepare_train.py", "--input", path, "--output_dir", tmp_path / "out",
                      "--no_progress")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "rows read:            49" in proc.stdout and "kept:                 47" in proc.stdout
    assert "unreadable_row          2" in proc.stdout
    assert pq.read_table(tmp_path / "out" / "train.parquet").num_rows == 47
    skipped = [json.loads(line) for line in (tmp_path / "out" / "skipped.jsonl").read_text().splitlines()]
    assert [(s["row"], s["reason"]) for s in skipped] == [(10, "unreadable_row"), (30, "unreadable_row")]


def test_prepare_eval_and_sft_lose_only_the_bad_lines(tmp_path):
    path = _jsonl_with_bad_lines(tmp_path / "in.jsonl")
    assert run_main("data/prepare_eval.py", "--input", path, "--output", tmp_path / "e.parquet",
                    "--data_source", "math500") == 0
    assert pq.read_table(tmp_path / "e.parquet").num_rows == 47
    assert run_main("data/prepare_sft.py", "--input", path, "--output", tmp_path / "s.parquet") == 0
    assert pq.read_table(tmp_path / "s.parquet").num_rows == 47


def test_score_skips_undecodable_lines_and_scores_the_rest(tmp_path, capsys):
    lines = [json.dumps({"data_source": "math", "answer": str(i), "responses": [f"\\boxed{{{i}}}"]}) for i in range(6)]
    lines.insert(2, '{"data_source": "math", "answer": "1", "responses": ["\\ud800"]}')
    data = "\n".join(lines).encode() + b"\n" + b'{"data_source": "m\xff"}\n'
    (tmp_path / "r.jsonl").write_bytes(data)
    assert run_main("eval_scripts/score.py", tmp_path / "r.jsonl", "--no_progress") == 2
    assert_one_line_error(capsys.readouterr().err, "r.jsonl:3", "not valid Unicode text")
    rescored = tmp_path / "rescored.jsonl"
    assert run_main("eval_scripts/score.py", tmp_path / "r.jsonl", "--no_progress", "--skip_bad",
                    "--rescored_out", rescored) == 0
    assert "lines scored: 6; bad lines skipped: 2" in capsys.readouterr().out
    assert len(rescored.read_text(encoding="utf-8").splitlines()) == 6


# ---------------------------------------------------------------------------------------------- (3)
BAD_ANSWERS = {"nan": math.nan, "inf": math.inf, "dict": {"a": 1}, "list": [1, 2], "bool": True}


@pytest.mark.slow  # runs the script in a subprocess
def test_unusable_answers_are_skipped_with_a_reason_at_preparation(tmp_path):
    rows = [good_row(i) for i in range(10)]
    for i, value in enumerate(BAD_ANSWERS.values()):
        rows[i]["answer"] = value
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # json writes NaN / Infinity literals
    proc = run_script(REPO / "data/prepare_train.py", "--input", path, "--output_dir", tmp_path / "out",
                      "--no_progress")
    assert proc.returncode == 0, proc.stderr
    assert "kept:                 5" in proc.stdout and "unusable_answer         5" in proc.stdout
    truths = {r["reward_model"]["ground_truth"] for r in pq.read_table(tmp_path / "out/train.parquet").to_pylist()}
    assert truths.isdisjoint({"nan", "inf", "{'a': 1}", "[1, 2]", "True"})
    details = (tmp_path / "out" / "skipped.jsonl").read_text()
    assert "non-finite number nan" in details and "is a dict" in details

    assert run_main("data/prepare_eval.py", "--input", path, "--output", tmp_path / "e.parquet",
                    "--data_source", "math500") == 0
    assert pq.read_table(tmp_path / "e.parquet").num_rows == 5


@pytest.mark.parametrize("name", sorted(BAD_ANSWERS))
def test_unusable_answers_are_refused_with_the_line_at_scoring(tmp_path, capsys, name):
    path = tmp_path / "r.jsonl"
    rows = [{"data_source": "math", "answer": "2", "responses": ["\\boxed{2}"]},
            {"data_source": "math", "answer": BAD_ANSWERS[name], "responses": ["\\boxed{nan}"]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run_main("eval_scripts/score.py", path, "--no_progress") == 2
    assert_one_line_error(capsys.readouterr().err, "r.jsonl:2", "answer")


def test_null_data_source_is_an_error_naming_the_row(tmp_path, capsys):
    from luffy.evaluation.data import EvalDataError, load_problems

    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"data_source": None, "answer": "2", "responses": ["\\boxed{2}"]}) + "\n")
    assert run_main("eval_scripts/score.py", path, "--no_progress") == 2
    assert_one_line_error(capsys.readouterr().err, "r.jsonl:1", "data_source")
    eval_in = tmp_path / "e.jsonl"
    eval_in.write_text(json.dumps({"problem": "1+1?", "answer": "2", "data_source": None}) + "\n")
    with pytest.raises(EvalDataError, match="line 1: 'data_source'"):
        load_problems(eval_in)


# ---------------------------------------------------------------------------------------------- (4)
def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_resume_plan_refuses_other_settings_or_input_and_never_mixes(tmp_path):
    from luffy.evaluation.results import ResultsFileError, problem_hash, resume_plan

    settings = {"model_path": "m", "template": "own", "remove_system": False, "n": 4, "temperature": 0.6,
                "top_p": 0.95, "max_tokens": 64, "seed": 42}
    problems = {f"math-{i}": problem_hash("math", f"q{i}", str(i)) for i in range(3)}
    records = [{"id": "math-0", "problem_hash": problems["math-0"], "settings": settings}]
    assert resume_plan("out.jsonl", records, settings, problems) == {"math-0"}
    with pytest.raises(ResultsFileError, match=r"n=4 \(now 8\).*new --output_file.*--overwrite"):
        resume_plan("out.jsonl", records, settings | {"n": 8}, problems)
    other_input = {"math-0": problem_hash("math", "another question", "0")}
    with pytest.raises(ResultsFileError, match="another problem under id 'math-0'"):
        resume_plan("out.jsonl", records, settings, other_input)
    with pytest.raises(ResultsFileError, match="does not say which settings"):
        resume_plan("out.jsonl", [{"id": "math-0"}], settings, problems)


@pytest.mark.slow
def test_generation_resume_refuses_another_input_or_n(tmp_path, tiny_model_dir, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    # same data_source and row numbers, other questions: ids collide, problem hashes do not
    a.write_text("".join(json.dumps({"problem": f"What is {i}+{i}?", "answer": str(2 * i), "data_source": "math"})
                         + "\n" for i in range(2)))
    b.write_text("".join(json.dumps({"problem": f"What is {i}*{i}?", "answer": str(i * i), "data_source": "math"})
                         + "\n" for i in range(2)))
    out = tmp_path / "out.jsonl"
    base = ["--engine", "hf", "--model_path", tiny_model_dir, "--output_file", out, "--max_tokens", "2",
            "--no_progress", "--template", "no"]
    assert run_main("eval_scripts/generate_vllm.py", *base, "--input_file", a) == 0
    first = out.read_bytes()
    assert run_main("eval_scripts/generate_vllm.py", *base, "--input_file", b) == 2
    assert_one_line_error(capsys.readouterr().err, "another problem", "--overwrite")
    assert run_main("eval_scripts/generate_vllm.py", *base, "--input_file", a, "--n", "2") == 2
    assert_one_line_error(capsys.readouterr().err, "n=1 (now 2)")
    assert out.read_bytes() == first  # nothing appended, nothing mixed
    assert run_main("eval_scripts/generate_vllm.py", *base, "--input_file", b, "--overwrite") == 0
    assert {r["question"] for r in _records(out)} == {"What is 0*0?", "What is 1*1?"}


# ---------------------------------------------------------------------------------------------- (5)
def _save_step(root: Path, step: int, world_size: int = 1) -> Path:
    import torch

    step_dir = root / f"global_step_{step}"
    (step_dir / "actor").mkdir(parents=True)
    for kind in ("model", "optim", "extra_state"):
        for rank in range(world_size):
            shard = step_dir / "actor" / f"{kind}_world_size_{world_size}_rank_{rank}.pt"
            torch.save({"w": torch.arange(1000.0)}, shard)
    torch.save({"sampler": step}, step_dir / "data.pt")
    return step_dir


def test_checkpoint_check_accepts_a_complete_step(tmp_path):
    from luffy.mix_src.checkpoint_check import check_checkpoint_dir

    assert check_checkpoint_dir(tmp_path / "none", 1) is None  # nothing to resume: fresh start
    _save_step(tmp_path, 2)
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("2")
    assert check_checkpoint_dir(tmp_path, 1) == tmp_path / "global_step_2"


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("missing_step", "global_step_3 does not exist"),
        ("empty_tracker", "latest_checkpointed_iteration.txt is empty"),
        ("text_tracker", "holds 'three', not a step number"),
        ("truncated_shard", "model_world_size_1_rank_0.pt is truncated"),
        ("empty_shard", "optim_world_size_1_rank_0.pt is empty"),
        ("no_data_state", "data.pt is missing"),
        ("other_world_size", "written by another number of ranks"),
    ],
)
def test_checkpoint_faults_name_the_file_and_the_fix(tmp_path, fault, message):
    from luffy.mix_src.checkpoint_check import CheckpointError, check_checkpoint_dir

    _save_step(tmp_path, 2)
    step3 = _save_step(tmp_path, 3, world_size=2 if fault == "other_world_size" else 1)
    tracker = tmp_path / "latest_checkpointed_iteration.txt"
    tracker.write_text({"empty_tracker": "", "text_tracker": "three"}.get(fault, "3"))
    if fault == "missing_step":
        import shutil

        shutil.rmtree(step3)
    elif fault == "truncated_shard":
        shard = step3 / "actor" / "model_world_size_1_rank_0.pt"
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    elif fault == "empty_shard":
        (step3 / "actor" / "optim_world_size_1_rank_0.pt").write_bytes(b"")
    elif fault == "no_data_state":
        (step3 / "data.pt").unlink()
    with pytest.raises(CheckpointError) as err:
        check_checkpoint_dir(tmp_path, 1)
    assert message in str(err.value)
    newest = 3 if fault.endswith("_tracker") else 2  # a bad tracker does not spoil the step it should name
    assert f"write {newest} into" in str(err.value) and "resume_fallback=newest" in str(err.value)
    # behind the explicit setting: the newest complete step, and the tracker is left as it was
    before = tracker.read_bytes()
    assert check_checkpoint_dir(tmp_path, 1, fallback="newest") == tmp_path / f"global_step_{newest}"
    assert tracker.read_bytes() == before


def test_resume_fallback_points_the_config_at_the_newest_complete_step(tmp_path):
    from luffy.mix_src.checkpoint_check import CheckpointError, check_resume_checkpoint

    _save_step(tmp_path, 1)
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("4")
    cfg = compose_luffy(f"trainer.default_local_dir={tmp_path}", "trainer.n_gpus_per_node=1")
    with pytest.raises(CheckpointError, match="global_step_4 does not exist"):
        check_resume_checkpoint(cfg)
    cfg = compose_luffy(f"trainer.default_local_dir={tmp_path}", "trainer.n_gpus_per_node=1",
                   "trainer.resume_fallback=newest")
    check_resume_checkpoint(cfg)
    assert cfg.trainer.resume_mode == "resume_path"
    assert cfg.trainer.resume_from_path == str(tmp_path / "global_step_1")


def test_entry_point_preflight_stops_on_a_broken_checkpoint(tmp_path, capsys):
    """``main`` runs this before veRL and Ray; the subprocess test below covers the entry point itself."""
    from luffy.mix_src.main_mix_ppo import preflight

    (tmp_path / "latest_checkpointed_iteration.txt").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        preflight(compose_luffy(f"trainer.default_local_dir={tmp_path}", "trainer.n_gpus_per_node=1"))
    assert exit_info.value.code == 2
    assert_one_line_error(capsys.readouterr().err, "latest_checkpointed_iteration.txt is empty", "Fix:")


def test_tiny_script_deletes_checkpoints_only_when_fresh():
    script = (REPO / "exp_scripts/train_tiny_cpu.sh").read_text()
    guarded = script.split('if [[ "${FRESH}" == 1 ]]; then', 1)
    assert len(guarded) == 2 and 'rm -rf "${OUT_DIR}/checkpoints"' not in guarded[0]
    assert guarded[1].splitlines()[1].strip() == 'rm -rf "${OUT_DIR}/checkpoints" "${OUT_DIR}/rollouts"'


@pytest.mark.slow
def test_killed_driver_leaves_no_ray_and_no_checkpoint_is_deleted(tmp_path):
    """End to end: SIGKILL the training driver once its Ray is up; the script stops that Ray by PID."""
    import signal

    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    keep = out / "checkpoints" / "keep.txt"
    keep.write_text("an earlier run's file")
    ray_tmp = f"/tmp/luffy_ray_fault_{os.getpid()}"
    # 5 steps: under CI's load a 1-step run could reach its end (and shut its Ray down) before the kill
    env = _env() | {"OUT_DIR": str(out), "STEPS": "5", "RESUME": "0", "LUFFY_RAY_TMP": ray_tmp,
                    "FIGURE": str(tmp_path / "f.png")}
    env.pop("RAY_ADDRESS", None)
    script = subprocess.Popen(["bash", str(REPO / "exp_scripts/train_tiny_cpu.sh")], env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def own(marker: bytes) -> list[int]:
        """PIDs that inherited this run's LUFFY_RAY_TMP and whose command line holds ``marker``."""
        pids = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and f"LUFFY_RAY_TMP={ray_tmp}".encode() in (entry / "environ").read_bytes():
                    if marker in (entry / "cmdline").read_bytes() and int(entry.name) != script.pid:
                        pids.append(int(entry.name))
            except OSError:
                pass
        return pids

    def ray_pids() -> list[int]:
        return sorted(set(own(b"ray::")) | set(own(b"/ray/")))

    try:
        # wait for Ray's agents ("ray::DashboardAgent", ...): what a killed driver used to leave behind
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and script.poll() is None and not own(b"ray::"):
            time.sleep(0.5)
        assert own(b"ray::"), "Ray did not start"
        (pid,) = own(b"luffy.mix_src.main_mix_ppo")
        os.kill(pid, signal.SIGKILL)
        _, err = script.communicate(timeout=120)
        assert script.returncode != 0
        assert "stopping" in err and "Ray process" in err, err[-3000:]
        time.sleep(1)
        assert ray_pids() == []
        assert keep.read_text() == "an earlier run's file"
    finally:
        if script.poll() is None:
            script.kill()
        for pid in ray_pids():  # only this test's Ray, found by its own temp folder
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------- (6)
@pytest.mark.slow  # runs the script in a subprocess
@pytest.mark.parametrize("case", ["output_dir_is_a_file", "empty_parquet", "missing_input"])
def test_prepare_train_user_mistakes_are_one_line(tmp_path, case):
    good = tmp_path / "in.jsonl"
    good.write_text(json.dumps(good_row(1)) + "\n")
    args = ["--input", good, "--output_dir", tmp_path / "out", "--no_progress"]
    if case == "output_dir_is_a_file":
        (tmp_path / "file").write_text("x")
        args[3], words = tmp_path / "file", ("is an existing file",)
    elif case == "empty_parquet":
        (tmp_path / "empty.parquet").write_bytes(b"")
        args[1], words = tmp_path / "empty.parquet", ("empty.parquet is an empty file",)
    else:
        args[1], words = tmp_path / "nope.jsonl", ("nope.jsonl",)
    proc = run_script(REPO / "data/prepare_train.py", *args)
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, *words)
    proc = run_script(REPO / "data/prepare_train.py", *args, "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr  # asked for


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_dir_is_one_line(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    good = tmp_path / "in.jsonl"
    good.write_text(json.dumps(good_row(1)) + "\n")
    assert run_main("data/prepare_train.py", "--input", good, "--output_dir", locked / "o", "--no_progress") == 2
    assert_one_line_error(capsys.readouterr().err, "Permission denied")


def test_other_scripts_turn_user_mistakes_into_one_line(tmp_path, capsys):
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    assert run_main("data/prepare_eval.py", "--input", empty, "--output", tmp_path / "e.parquet") == 2
    assert_one_line_error(capsys.readouterr().err, "empty.parquet is an empty file")
    assert run_main("data/prepare_sft.py", "--input", empty, "--output", tmp_path / "s.parquet") == 2
    assert_one_line_error(capsys.readouterr().err, "empty.parquet is an empty file")
    good = tmp_path / "in.jsonl"
    good.write_text(json.dumps(good_row(1)) + "\n")
    assert run_main("data/prepare_eval.py", "--input", good, "--output", tmp_path, "--data_source", "amc") == 2
    assert_one_line_error(capsys.readouterr().err, "is a folder")
    assert run_main("data/prepare_sft.py", "--input", good, "--output", tmp_path) == 2
    assert_one_line_error(capsys.readouterr().err, "is a folder")
    assert run_main("eval_scripts/generate_vllm.py", "--model_path", tmp_path, "--input_file", empty,
                    "--output_file", tmp_path / "o.jsonl", "--engine", "hf") == 2
    assert_one_line_error(capsys.readouterr().err, "empty.parquet is an empty file")
    assert run_main("exp_scripts/plot_metrics.py", tmp_path / "nope.jsonl") == 2
    assert_one_line_error(capsys.readouterr().err, "nope.jsonl")
    for model, words in ((tmp_path / "no_model", "no such folder"), (tmp_path, "not a model folder")):
        out = tmp_path / f"{model.name}.jsonl"
        assert run_main("eval_scripts/generate_vllm.py", "--model_path", model, "--input_file", good,
                        "--output_file", out, "--engine", "hf") == 2
        assert_one_line_error(capsys.readouterr().err, f"--model_path {model}: {words}")
        assert not out.exists()


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("actor_rollout_ref.rollout.n=abc", ("rollout.n='abc'", "integer >= 1")),
        ("actor_rollout_ref.rollout.n=2.5", ("rollout.n=2.5", "integer >= 1")),
        ("actor_rollout_ref.actor.off_policy_reshape_weight=0", ("off_policy_reshape_weight=0", "> 0")),
        ("actor_rollout_ref.actor.on_policy_reshape_pow_exp=-5", ("on_policy_reshape_pow_exp=-5", "> 0")),
        ("actor_rollout_ref.actor.off_policy_reshape=p_div_p_1e-300", ("p_div_p_1e-300", ">= 1e-06")),
    ],
)
def test_config_types_and_ranges_are_refused_with_the_range(override, words):
    from luffy.mix_src.config_check import check_luffy_config

    with pytest.raises(ValueError) as err:
        check_luffy_config(compose_luffy(override))
    assert all(w in str(err.value) for w in words), str(err.value)


@pytest.mark.slow  # starts the entry point or Ray in a subprocess
def test_config_type_error_is_one_line_from_the_entry_point(tmp_path):
    """Exit 2 and one line before Ray starts, even with HYDRA_FULL_ERROR=1 (the tiny scripts set it)."""
    proc = subprocess.run(
        [sys.executable, "-m", "luffy.mix_src.main_mix_ppo", "actor_rollout_ref.rollout.n=abc"],
        capture_output=True, text=True, env=_env() | {"HYDRA_FULL_ERROR": "1"}, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, "actor_rollout_ref.rollout.n='abc' must be an integer >= 1")
    assert "ray init" not in proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------- (7)
def test_huge_trace_is_measured_on_a_bounded_head(tiny_tokenizer):  # noqa: F811
    from collections import Counter

    from luffy.data.filters import head_of, token_budget_filter
    from luffy.data.normalize import Candidate

    budget = 64
    words = [f"w{i % 97}x" for i in range(200_000)]
    huge = " ".join(words)  # ~1 MB
    from luffy.tokens import plain_backend

    backend = plain_backend(tiny_tokenizer)
    assert backend is not None
    head = head_of(huge, budget)
    assert head is not None and len(head) <= max(16 * budget, 4096) + 4096 and huge.startswith(head)
    # the head's tokens are a prefix of the whole text's tokens (the cut is at a word boundary)
    full = backend.encode(huge[: 3 * len(head)], add_special_tokens=False).ids
    head_ids = backend.encode(head, add_special_tokens=False).ids
    assert full[: len(head_ids)] == head_ids

    def cands():
        return [Candidate(row=0, problem="p", answer="1", traces=[huge], prompt=[], data_source="x"),
                Candidate(row=1, problem="q", answer="1", traces=["short trace"], prompt=[], data_source="x")]

    stats = Counter()
    kept, skips = token_budget_filter(cands(), tiny_tokenizer, budget, "drop", progress=False, stats=stats)
    assert [c.row for c in kept] == [1] and skips[0].reason == "trace_over_token_budget"
    assert "counted on its head" in skips[0].detail and stats["traces_head_only"] == 1
    kept, _ = token_budget_filter(cands(), tiny_tokenizer, budget, "truncate", progress=False)
    cut = kept[0].traces[0]
    offsets = backend.encode(huge[: 2 * len(head)], add_special_tokens=False).offsets
    assert cut == huge[: offsets[budget - 2][1]]  # the same cut as full tokenisation gives


# ================================================================================================
# Second round, data / model folder / config: (8) a run's outputs replace the last run's together,
# (9) a bad cell loses only its row, (10) model folders, (11) config and data files before Ray,
# (12) metrics lines, (13) the tiny scripts' inputs, (14) damaged checkpoint shards.
# ================================================================================================
def _prepare_dir(tmp_path: Path, name: str, rows: list[dict], *extra) -> tuple[int, Path]:
    """``prepare_train.py`` in this process on ``rows`` (a jsonl named ``name``) into ``tmp_path/out``."""
    source = tmp_path / name
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    return run_main("data/prepare_train.py", "--input", source, "--output_dir", out, "--no_progress", *extra), out


def _problems(path: Path) -> list[str]:
    return sorted(r["prompt"][-1]["content"] for r in pq.read_table(path, columns=["prompt"]).to_pylist())


# ---------------------------------------------------------------------------------------------- (8)
def test_a_rerun_that_keeps_no_row_writes_nothing(tmp_path, capsys):
    rc, out = _prepare_dir(tmp_path, "good.jsonl", [good_row(i) for i in range(6)], "--val_size", "2")
    assert rc == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"train.parquet", "val.parquet", "skipped.jsonl"}
    capsys.readouterr()
    bad = [dict(good_row(i), answer="") for i in range(4)]  # every row lacks an answer
    rc, _ = _prepare_dir(tmp_path, "bad.jsonl", bad)
    assert rc == 2
    captured = capsys.readouterr()
    assert_one_line_error(captured.err, "no usable rows", "bad.jsonl", "missing_answer 4", "nothing was written")
    assert "wrote" not in captured.out
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the good outputs, untouched
    rc, _ = _prepare_dir(tmp_path, "bad.jsonl", bad, "--val_size", "2")
    assert rc == 2
    assert_one_line_error(capsys.readouterr().err, "leaves no training rows")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_run_outputs_refuse_an_empty_table_before_writing_anything(tmp_path):
    import pyarrow as pa

    from luffy.atomic_outputs import RunOutputs
    from luffy.data.errors import LuffyDataError

    run = RunOutputs("t")
    run.table(tmp_path / "a.parquet", pa.table({"x": [1]}))
    with pytest.raises(LuffyDataError, match="b.parquet would hold no rows; nothing was written"):
        run.table(tmp_path / "b.parquet", pa.table({"x": pa.array([], pa.int64())}), "train split")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_replaces_no_output_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    import pyarrow.parquet as pq_module

    rc, out = _prepare_dir(tmp_path, "a.jsonl", [good_row(i) for i in range(6)], "--val_size", "2")
    assert rc == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real, calls = pq_module.write_table, []

    def disk_full_on_the_second_table(table, where, *args, **kwargs):
        calls.append(where)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(where))
        return real(table, where, *args, **kwargs)

    monkeypatch.setattr(pq_module, "write_table", disk_full_on_the_second_table)
    rc, _ = _prepare_dir(tmp_path, "b.jsonl", [good_row(i) for i in range(10, 16)], "--val_size", "2")
    assert rc == 2 and len(calls) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no new train beside the old val


def test_a_run_killed_between_its_renames_is_refused_by_every_reader(tmp_path, monkeypatch, capsys):
    """The renames of one run are not one atomic step: a kill between them leaves a new train.parquet beside
    the old val.parquet. The manifest in the parquet footers makes every reader refuse that pair."""
    import luffy.atomic_outputs as atomic
    from luffy.data.errors import LuffyDataError
    from luffy.data.readers import open_rows
    from luffy.mix_src.preflight import check_data_files

    rc, out = _prepare_dir(tmp_path, "a.jsonl", [good_row(i) for i in range(6)], "--val_size", "2")
    assert rc == 0
    old_val = (out / "val.parquet").read_bytes()
    real, renames = os.replace, []

    def killed_after_the_first_rename(src, dst):
        if renames:
            raise KeyboardInterrupt  # the kill
        renames.append(dst)
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", killed_after_the_first_rename)
    with pytest.raises(KeyboardInterrupt):
        _prepare_dir(tmp_path, "b.jsonl", [good_row(i) for i in range(10, 16)], "--val_size", "2")
    monkeypatch.undo()
    assert renames == [out / "train.parquet"] and (out / "val.parquet").read_bytes() == old_val
    assert any("10 + 10" in p for p in _problems(out / "train.parquet"))  # the mix is really there

    for path in ("train.parquet", "val.parquet"):
        with pytest.raises(LuffyDataError, match="come from different runs") as err:
            open_rows(out / path)
        assert "train.parquet" in str(err.value) and "val.parquet" in str(err.value)
    cfg = compose_luffy(f"data.train_files={out / 'train.parquet'}", f"data.val_files={out / 'val.parquet'}")
    with pytest.raises(ValueError, match=r"data.train_files: .*come from different runs.*rerun prepare_train.py"):
        check_data_files(cfg)
    assert run_main("data/prepare_sft.py", "--input", out / "val.parquet", "--output", tmp_path / "s.parquet") == 2
    assert_one_line_error(capsys.readouterr().err, "come from different runs")
    # a rerun writes the pair again, and they agree
    rc, _ = _prepare_dir(tmp_path, "b.jsonl", [good_row(i) for i in range(10, 16)], "--val_size", "2")
    assert rc == 0
    check_data_files(cfg)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_run_without_a_val_split_removes_the_old_one_and_a_copied_file_is_refused(tmp_path):
    import shutil

    from luffy.atomic_outputs import check_run_outputs
    from luffy.data.errors import LuffyDataError

    rc, out = _prepare_dir(tmp_path, "a.jsonl", [good_row(i) for i in range(6)], "--val_size", "2")
    assert rc == 0
    shutil.copy(out / "val.parquet", tmp_path / "old_val.parquet")
    rc, _ = _prepare_dir(tmp_path, "a.jsonl", [good_row(i) for i in range(6)])
    assert rc == 0 and sorted(p.name for p in out.iterdir()) == ["skipped.jsonl", "train.parquet"]
    check_run_outputs(out / "train.parquet")
    shutil.copy(tmp_path / "old_val.parquet", out / "val.parquet")  # an old split copied back in
    with pytest.raises(LuffyDataError, match="come from different runs"):
        check_run_outputs(out / "val.parquet")
    check_run_outputs(tmp_path / "old_val.parquet")  # alone, elsewhere: its sibling is not there to mix with


# ---------------------------------------------------------------------------------------------- (9)
def _parquet_with_a_bad_cell(path: Path, n: int = 8, bad: int = 5) -> Path:
    """``n`` good raw rows in a plain (uncompressed, no dictionary) parquet; row ``bad``'s problem has its
    bytes overwritten with 0xff 0xfe (not UTF-8) in the file itself, the footer left intact."""
    import pyarrow as pa

    rows = [good_row(i) for i in range(n)]
    rows[bad]["problem"] = "PLANTED-BAD-CELL"
    pq.write_table(pa.Table.from_pylist(rows), path, compression="none", use_dictionary=False,
                   write_statistics=False)
    data = path.read_bytes()
    assert data.count(b"PLANTED-BAD-CELL") == 1
    path.write_bytes(data.replace(b"PLANTED-BAD-CELL", b"PLANTED\xff\xfeBAD-CELL"[:16]))
    return path


def test_a_parquet_cell_that_is_not_utf8_is_a_counted_skip_naming_file_row_and_column(tmp_path, capsys):
    path = _parquet_with_a_bad_cell(tmp_path / "raw.parquet")
    with pytest.raises(UnicodeDecodeError):  # what stopped the whole file before
        pq.read_table(path).to_pylist()
    out = tmp_path / "out"
    assert run_main("data/prepare_train.py", "--input", path, "--output_dir", out, "--no_progress",
                    "--no_shuffle") == 0
    assert "unreadable_row          1" in capsys.readouterr().out
    assert len(_problems(out / "train.parquet")) == 7
    (skip,) = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert skip["row"] == 5 and skip["reason"] == "unreadable_row"
    assert f"row 5 of {path}: column 'problem' is not valid UTF-8" in skip["detail"]


# ---------------------------------------------------------------------------------------------- (10)
MODEL_CONFIG_FAULTS = {
    "truncated": (b'{"model_type": "qwen2", "max_position_embeddings": 40', "not valid JSON"),
    "empty": (b"", "is empty"),
    "a list": (b'[{"model_type": "qwen2"}]', "holds a JSON list, not an object"),
    "a string": (b'"qwen2"', "holds a JSON str, not an object"),
    "not utf-8": (b'{"model_type": "qw\xffen2"}', "is not UTF-8"),
}


@pytest.mark.parametrize("fault", sorted(MODEL_CONFIG_FAULTS))
def test_a_damaged_model_config_is_one_line_naming_the_file_everywhere(tmp_path, fault, capsys):
    from luffy.data.errors import LuffyDataError
    from luffy.evaluation.engines import make_engine
    from luffy.mix_src.preflight import check_context_length
    from luffy.model_folder import read_model_config

    data, words = MODEL_CONFIG_FAULTS[fault]
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_bytes(data)
    (model / "tokenizer.json").write_text("{}")
    config_file = str(model / "config.json")
    for call in (lambda: read_model_config(model), lambda: make_engine("hf", str(model))):
        with pytest.raises(LuffyDataError) as err:
            call()
        assert config_file in str(err.value) and words in str(err.value) and "\n" not in str(err.value)
    cfg = compose_luffy(f"actor_rollout_ref.model.path={model}")
    with pytest.raises(ValueError, match=f"actor_rollout_ref.model.path={model}: {config_file} .*{words}"):
        check_context_length(cfg)
    from luffy.tiny import build_tiny_checkpoint

    with pytest.raises(LuffyDataError, match=words):
        build_tiny_checkpoint(model)
    assert read_model_config(tmp_path / "no_model_here") is None  # not a local folder: the loaders decide


# ---------------------------------------------------------------------------------------------- (11)
@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("data.max_prompt_length=abc", "data.max_prompt_length='abc' must be an integer >= 1"),
        ("data.max_response_length=1.5", "data.max_response_length=1.5 must be an integer >= 1"),
        ("data.train_batch_size=-4", "data.train_batch_size=-4 is out of range: it must be >= 1"),
        ("actor_rollout_ref.actor.ppo_mini_batch_size=0", "ppo_mini_batch_size=0 is out of range"),
        ("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=-1", "must be >= 1 or null"),
        ("data.val_batch_size=true", "data.val_batch_size=True must be an integer >= 1 or null"),
        ("trainer.save_freq=-2", "trainer.save_freq=-2 is out of range: it must be >= -1 (-1 = never)"),
        ("actor_rollout_ref.rollout.top_p=0", "top_p=0 is out of range: it must be in (0, 1]"),
        ("actor_rollout_ref.actor.optim.lr=fast", "optim.lr='fast' must be a finite number >= 0"),
        ("data.val_files=null", "data.val_files=None: veRL's V1 trainer builds the validation set"),
        ("data.val_files=[]", "data.val_files=[]"),
    ],
)
def test_bad_run_fields_are_refused_naming_the_key(override, words, capsys):
    from luffy.mix_src.config_check import check_luffy_config
    from luffy.mix_src.main_mix_ppo import preflight

    with pytest.raises(ValueError) as err:
        check_luffy_config(compose_luffy(override))
    assert words in str(err.value), str(err.value)
    with pytest.raises(SystemExit) as exit_info:  # the entry point's own check, before Ray: one line
        preflight(compose_luffy(override))
    assert exit_info.value.code == 2
    assert_one_line_error(capsys.readouterr().err, words)


def test_the_run_field_table_accepts_luffys_defaults_and_every_key_exists():
    from omegaconf import OmegaConf

    from luffy.mix_src.config_check import RUN_FIELDS, check_run_fields

    cfg = compose_luffy()
    check_run_fields(cfg)
    missing = [f.key for f in RUN_FIELDS if OmegaConf.select(cfg, f.key, default="<absent>") == "<absent>"]
    assert missing == []  # a renamed veRL key would silently go unchecked


@pytest.mark.parametrize("where", ["the folder", "a folder above it"])
def test_a_checkpoint_folder_that_is_a_file_is_refused_before_ray(tmp_path, where, capsys):
    from luffy.mix_src.main_mix_ppo import preflight

    blocker = tmp_path / "ckpt"
    blocker.write_text("not a folder")
    folder = blocker if where == "the folder" else blocker / "run1"
    with pytest.raises(SystemExit) as exit_info:
        preflight(compose_luffy(f"trainer.default_local_dir={folder}", "trainer.n_gpus_per_node=1"))
    assert exit_info.value.code == 2
    what = "is an existing file" if where == "the folder" else f"lies under {blocker}, an existing file"
    assert_one_line_error(capsys.readouterr().err, f"trainer.default_local_dir={folder}", what)


def test_a_truncated_or_missing_data_file_is_one_line_naming_it(tmp_path, capsys):
    from luffy.mix_src.main_mix_ppo import preflight
    from luffy.mix_src.preflight import check_data_files, check_training_targets

    rc, out = _prepare_dir(tmp_path, "a.jsonl", [good_row(i) for i in range(6)])
    assert rc == 0
    train = out / "train.parquet"
    size = train.stat().st_size
    train.write_bytes(train.read_bytes()[: size // 2])
    cfg = compose_luffy(f"data.train_files={train}", f"data.val_files={train}", "trainer.n_gpus_per_node=1",
                        f"trainer.default_local_dir={tmp_path / 'ckpt'}")
    expected = f"data.train_files: {train} is truncated or not a parquet file ({size // 2} bytes"
    with pytest.raises(ValueError) as err:
        check_data_files(cfg)
    assert str(err.value).startswith(expected) and "magic bytes" not in str(err.value)
    with pytest.raises(ValueError, match=f"{train} is truncated"):
        check_training_targets(cfg)  # on its own (n_prefix > 0) too
    with pytest.raises(SystemExit):
        preflight(cfg)
    assert_one_line_error(capsys.readouterr().err, expected)
    assert run_main("data/prepare_sft.py", "--input", train, "--output", tmp_path / "s.parquet") == 2
    assert_one_line_error(capsys.readouterr().err, f"{train} is truncated")
    assert _prepare_dir(tmp_path, "a.jsonl", [good_row(i) for i in range(6)])[0] == 0
    cfg = compose_luffy(f"data.train_files={train}", f"data.val_files={tmp_path / 'nope.parquet'}")
    with pytest.raises(ValueError, match=r"data.val_files: .*nope.parquet does not exist"):
        check_data_files(cfg)


# ---------------------------------------------------------------------------------------------- (12)
def test_metrics_lines_without_an_integer_step_are_refused_or_skipped_never_merged(tmp_path, capsys, caplog):
    from luffy.jsonl import read_step_metrics

    lines = [
        {"step": 1, "data": {"critic/score/mean": 0.25}},
        {"step": 1.5, "data": {"critic/score/mean": 0.99}},  # int(1.5) would merge it into step 1
        {"step": "abc", "data": {"critic/score/mean": 0.5}},
        {"data": {"critic/score/mean": 0.5}},
        {"step": True, "data": {"critic/score/mean": 0.5}},
        {"step": 3, "data": [0.5]},
        {"step": 2.0, "data": {"critic/score/mean": 0.75, "flag": True}},
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert run_main("exp_scripts/plot_metrics.py", path, "--out", tmp_path / "f.png") == 2
    assert_one_line_error(capsys.readouterr().err, "m.jsonl:2", "'step' is 1.5, not an integer")
    assert not (tmp_path / "f.png").exists()
    caplog.set_level(logging.WARNING)
    assert read_step_metrics([path], skip_bad=True) == {1: {"critic/score/mean": 0.25}, 2: {"critic/score/mean": 0.75}}
    for line, why in ((3, "'step' is 'abc'"), (4, "no 'step'"), (5, "'step' is True"), (6, "'data' is a list")):
        assert f"{path}:{line}: {why}" in caplog.text
    assert "skipped 5 bad metrics line(s)" in caplog.text
    assert run_main("exp_scripts/plot_metrics.py", path, "--out", tmp_path / "f.png", "--skip_bad") == 0
    assert "(2 steps" in capsys.readouterr().out and (tmp_path / "f.png").exists()


# ---------------------------------------------------------------------------------------------- (13)
def test_keep_current_rebuilds_when_the_input_bytes_or_the_options_change(tmp_path, capsys):
    def run(rows, *extra):
        rc, out = _prepare_dir(tmp_path, "sample.jsonl", rows, "--keep_current", *extra)
        assert rc == 0
        return out / "train.parquet", capsys.readouterr().out

    train, said = run([good_row(i) for i in range(4)])
    first = _problems(train)
    assert "wrote train" in said
    mtime = train.stat().st_mtime_ns
    _, said = run([good_row(i) for i in range(4)])  # the same bytes again
    assert "is current" in said and train.stat().st_mtime_ns == mtime
    _, said = run([good_row(i) for i in range(10, 13)])  # another sample under the same name
    assert "wrote train" in said and _problems(train) != first and len(_problems(train)) == 3
    _, said = run([good_row(i) for i in range(10, 13)], "--template", "no_system")  # other options
    assert "wrote train" in said
    other = tmp_path / "other.jsonl"
    other.write_text((tmp_path / "sample.jsonl").read_text())  # same bytes, another file: rebuilt too
    rc = run_main("data/prepare_train.py", "--input", other, "--output_dir", tmp_path / "out", "--no_progress",
                  "--keep_current", "--template", "no_system")
    assert rc == 0 and "wrote train" in capsys.readouterr().out


def test_tiny_scripts_prepare_through_keep_current():
    text = (REPO / "exp_scripts/tiny_inputs.sh").read_text()
    call = [line for line in text.splitlines() if "data/prepare_train.py" in line]
    assert len(call) == 1 and call[0].rstrip().endswith("--keep_current")
    assert "train.parquet\" ]]" not in text  # no "kept when it exists" shortcut left


@pytest.mark.slow  # runs bash and three interpreters
def test_tiny_inputs_with_another_sample_into_the_same_dir_rebuilds_the_parquet(tmp_path, tiny_model_dir):
    def tiny_inputs(sample: Path) -> str:
        proc = subprocess.run(
            ["bash", "-c", f'PYTHON={sys.executable}; source exp_scripts/tiny_inputs.sh; '
             f'tiny_inputs "{tiny_model_dir}" "{tmp_path / "data"}" "{sample}"'],
            capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(good_row(i)) + "\n" for i in range(4)))
    b.write_text("".join(json.dumps(good_row(i)) + "\n" for i in range(20, 22)))
    tiny_inputs(a)
    assert len(_problems(tmp_path / "data/train.parquet")) == 4
    assert "wrote train" in tiny_inputs(b)
    assert len(_problems(tmp_path / "data/train.parquet")) == 2
    assert "is current" in tiny_inputs(b)


# ---------------------------------------------------------------------------------------------- (14)
def test_a_shard_damaged_inside_an_intact_zip_index_fails_the_precheck_naming_it(tmp_path):
    import zipfile

    import torch

    from luffy.mix_src.checkpoint_check import CheckpointError, check_checkpoint_dir

    _save_step(tmp_path, 1)
    step = _save_step(tmp_path, 2)
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("2")
    shard = step / "actor" / "model_world_size_1_rank_0.pt"
    data = bytearray(shard.read_bytes())
    at = bytes(data).find(torch.arange(1000.0).numpy().tobytes()) + 2001  # a byte inside the weights
    data[at] ^= 0x40
    shard.write_bytes(bytes(data))
    with zipfile.ZipFile(shard) as zf:  # the planted fault: the index and every offset still agree
        assert max(i.header_offset + i.compress_size for i in zf.infolist()) <= len(data)
    assert not torch.equal(torch.load(shard)["w"], torch.arange(1000.0))  # torch loads wrong weights silently
    with pytest.raises(CheckpointError) as err:
        check_checkpoint_dir(tmp_path, 1)
    message = str(err.value)
    assert f"{shard} is damaged" in message and "CRC" in message and "write 1 into" in message
    assert check_checkpoint_dir(tmp_path, 1, fallback="newest") == tmp_path / "global_step_1"


# ================================================================================================
# Second round, scoring / evaluation: linear patterns, one result store, ground-truth spellings, the
# slow-ground-truth list, duplicated benchmark problems, plot_results and prepare_eval errors.
_TRIGGERS = ["", "answer", "Answer:", "the answer is", "final answer", "option", "\\boxed", "\\text{", "(", "^",
             "\\sqrt[", "\\frac{1}", "1,000", "\\pi", "</think>"]
_FILLERS = [" ", "\n", "\t", "*", ":", "$", "(", ")", ".", "{", "}", "\\", "1", ",000", "is ", "a", "A", "B "]


def _attack(filler: str, k: int) -> str:
    """Each trigger followed by a run of ``k`` fillers, then each (trigger + filler) repeated, then a bare run."""
    runs = "".join(t + filler * k + "!" for t in _TRIGGERS)
    return runs + "".join((t + filler) * (k // 8) for t in _TRIGGERS) + filler * k


def _scoring_patterns() -> list[tuple[str, object]]:
    """Every compiled pattern of the modules that read model text (lists of patterns included)."""
    import re

    import luffy.scoring.choice as choice
    import luffy.scoring.extract as extract
    import luffy.scoring.math_verify_bounded as bounded

    found = []
    for module in (choice, extract, bounded):
        for name, value in vars(module).items():
            values = value if isinstance(value, list) else [value]
            found += [(f"{module.__name__}.{name}", v) for v in values if isinstance(v, re.Pattern)]
    return found


def _growth(fn, small: str, large: str, reps: int = 5) -> float:
    """time(fn(large)) / time(fn(small)), each the best of ``reps`` calls made in turn (so that both
    sizes see the same load); a measurement past 30 s raises (SIGALRM interrupts the regex engine, so
    a super-linear pattern fails here instead of hanging: milliseconds are expected)."""
    import signal

    def alarm(*_):
        raise TimeoutError("super-linear: the measurement ran past 30 s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(30)
    best = {small: math.inf, large: math.inf}
    try:
        for _ in range(reps):
            for text in (small, large):
                start = time.perf_counter()
                fn(text)
                best[text] = min(best[text], time.perf_counter() - start)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return best[large] / max(best[small], 1e-7)


# Input 8x longer: linear work takes ~8x the time, quadratic 64x. The bound sits between the two, and a
# pair over it is measured twice more (the least ratio counts): timer noise on a shared machine seldom
# repeats, a quadratic cost always does.
GROWTH = 8
MAX_RATIO = 32


def _assert_linear(label: str, fn, small: str, large: str) -> None:
    ratio = _growth(fn, small, large)
    for _ in range(2):
        if ratio <= MAX_RATIO:
            break
        ratio = min(ratio, _growth(fn, small, large, reps=9))
    assert ratio <= MAX_RATIO, f"{label}: {GROWTH}x longer input took {ratio:.0f}x the time"


def test_every_scoring_pattern_is_linear_in_its_input():
    patterns = _scoring_patterns()
    assert len(patterns) >= 15  # the introspection finds them (choice, extract and the verifier's)
    for filler in _FILLERS:
        small, large = _attack(filler, 300), _attack(filler, 300 * GROWTH)
        for name, pattern in patterns:
            _assert_linear(f"{name} on {filler!r} runs", pattern.findall, small, large)


def test_scoring_modules_compile_every_pattern_where_the_attack_finds_it():
    """An inline ``re.sub(r"...")`` would escape the attack above."""
    import re

    for module in ("choice", "extract", "math_verify_bounded", "metrics", "ground_truth", "__init__"):
        source = (REPO / "luffy" / "scoring" / f"{module}.py").read_text()
        inline = re.findall(r"\bre\.(?:search|match|fullmatch|sub|subn|findall|finditer|split)\(", source)
        assert not inline, f"luffy/scoring/{module}.py runs an inline pattern: compile it at module level"


def test_answer_extraction_is_linear_in_the_response():
    from luffy.scoring.choice import extract_choice, normalize_letter
    from luffy.scoring.extract import MAX_SEARCH_CHARS, extract_math_answer, normalize_answer
    from luffy.scoring.math_verify_bounded import fast_verdict

    # The planted input of the report: "answer" + a run of whitespace + a non-letter (17 s at 80 spaces).
    _assert_linear("extract_choice on 'answer' + spaces", extract_choice, "answer" + " " * 1000 + "1",
                   "answer" + " " * 1000 * GROWTH + "1")
    functions = {"extract_choice": extract_choice, "extract_math_answer": extract_math_answer,
                 "normalize_letter": normalize_letter, "normalize_answer": normalize_answer,
                 "fast_verdict": lambda text: fast_verdict(text, text[::-1])}
    for filler in _FILLERS:
        k = MAX_SEARCH_CHARS // (GROWTH * len(filler))
        while len(_attack(filler, k * GROWTH)) > MAX_SEARCH_CHARS:  # the large input stays inside the searched tail
            k -= max(1, k // 16)
        small, large = _attack(filler, k), _attack(filler, k * GROWTH)
        for name, fn in functions.items():
            _assert_linear(f"{name} on {filler!r} runs", fn, small, large)
    # The verdicts of the planted inputs did not change: no letter follows "answer".
    assert extract_choice("answer" + " " * 80 + "1") is None
    assert extract_choice("The answer is" + " " * 80 + "(B)") == "B"
    assert extract_math_answer("The answer is 7" + ". " * 5000) == "7"


BAD_SPELLINGS = ["nan", "NaN", " NAN ", "-nan", "inf", "-inf", "+Inf", "Infinity", "-infinity", "<NA>", "NaT"]


def test_ground_truths_spelling_nan_or_inf_are_refused_everywhere(tmp_path, capsys, caplog):
    from luffy.evaluation.data import EvalDataError, load_problems
    from luffy.mix_src.reward import compute_score
    from luffy.scoring import get_verifier, is_correct
    from luffy.scoring.ground_truth import BadGroundTruth, ground_truth_text

    for spelling in BAD_SPELLINGS:
        with pytest.raises(BadGroundTruth, match="missing or non-finite"):
            ground_truth_text(spelling)
    for real in ("\\infty", "-\\infty", "n", "a", "nana", "info", "0"):  # real answers stay
        assert ground_truth_text(real) == real
    stats = get_verifier().stats
    before = stats["refused"]
    for spelling in BAD_SPELLINGS:  # the scoring core itself: \boxed{nan} never matches "nan"
        assert is_correct("math", f"\\boxed{{{spelling}}}", spelling) is False
        assert compute_score("math", f"\\boxed{{{spelling}}}", spelling)["acc"] == 0.0
    assert stats["refused"] >= before + len(BAD_SPELLINGS)
    assert is_correct("math", "\\boxed{\\infty}", "\\infty")

    results = tmp_path / "r.jsonl"
    rows = [{"data_source": "math", "answer": "2", "responses": ["\\boxed{2}"]},
            {"data_source": "math", "answer": "NaN", "responses": ["\\boxed{NaN}"]}]
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run_main("eval_scripts/score.py", results, "--no_progress") == 2
    assert_one_line_error(capsys.readouterr().err, "r.jsonl:2", "'NaN'")
    problems = tmp_path / "p.jsonl"
    problems.write_text(json.dumps({"problem": "0/0?", "answer": "nan", "data_source": "math"}) + "\n")
    with pytest.raises(EvalDataError, match="line 1: .*'nan'"):
        load_problems(problems)
    assert run_main("data/prepare_eval.py", "--input", problems, "--output", tmp_path / "e.parquet") == 2
    assert "skipped row 0" in caplog.text and "'nan'" in caplog.text


def test_an_exact_answer_scores_right_after_its_ground_truth_ran_out_of_time():
    from luffy.scoring.math_verify_bounded import BoundedVerifier

    slow = "9^{9^{9^{9^{9}}}}"  # math-verify tries to evaluate it against a number: never within 1 s
    verifier = BoundedVerifier(num_workers=1, timeout_s=1.0)
    try:
        assert verifier.verify("x+1", "1+x")  # warm: the worker is up
        assert verifier.verify(slow, "5") is False  # runs out of time: the ground truth is now listed as slow
        assert verifier.stats["timeouts"] == 1 and slow in verifier._slow_golds
        start = time.monotonic()
        assert verifier.verify(slow, slow) is True  # the exact string: right, and at once
        assert verifier.verify(slow, " 9^{9^{9^{9^{9}}}} ") is True  # normalised equal
        assert verifier.verify(slow, "6") is False  # another answer: refused at once, not waited on
        assert time.monotonic() - start < 0.5
        stats = verifier.stats
        assert stats["slow_gold"] == 1
        # every answer counted wrong because of the deadline, whether waited on or refused at once
        assert stats["deadline_misses"] == stats["timeouts"] + stats["slow_gold"] == 2
    finally:
        verifier.close()


def test_score_counts_answers_refused_for_a_slow_ground_truth_as_deadline_misses(tmp_path, capsys, monkeypatch):
    import luffy.scoring.math_verify_bounded as bounded

    slow = "9^{9^{9^{9^{9}}}}"
    verifier = bounded.BoundedVerifier(num_workers=1, timeout_s=1.0)
    monkeypatch.setattr(bounded, "_DEFAULT", verifier)  # a private verifier with a short deadline
    results = tmp_path / "r.jsonl"
    rows = [{"data_source": "math", "answer": slow, "responses": ["\\boxed{5}"]},
            {"data_source": "math", "answer": slow, "responses": ["\\boxed{6}", f"\\boxed{{{slow}}}"]}]
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    try:
        assert run_main("eval_scripts/score.py", results, "--no_progress", "--summary_out", tmp_path / "s.json") == 0
    finally:
        verifier.close()
    assert "answers past the verification deadline: 2" in capsys.readouterr().out  # 1 waited on, 1 refused
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["all"]["n_responses"] == 3 and summary["all"]["avg@n"] == pytest.approx(1 / 3)


def _generate(*args) -> int:
    return run_main("eval_scripts/generate_vllm.py", "--engine", "hf", "--no_progress", *args)


def _problem_file(path: Path, n: int = 2) -> Path:
    path.write_text("".join(json.dumps({"problem": f"What is {i}+{i}?", "answer": str(2 * i), "data_source": "math"})
                            + "\n" for i in range(n)))
    return path


def test_generation_settings_are_checked_and_compared_key_by_key(tmp_path, capsys):
    from luffy.evaluation.result_store import SettingsError, check_settings
    from luffy.evaluation.results import SETTING_KEYS, ResultsFileError, resume_plan

    for key, value, words in [("temperature", math.nan, "--temperature must be a finite number, got nan"),
                              ("temperature", math.inf, "--temperature must be a finite number, got inf"),
                              ("top_p", 0.0, r"--top_p must be in \(0, 1\], got 0.0"),
                              ("temperature", -1.0, ">= 0"), ("whatever", -math.inf, "--whatever .*got -inf")]:
        with pytest.raises(SettingsError, match=words):
            check_settings({"n": 1, key: value})
    inp, out = _problem_file(tmp_path / "in.jsonl"), tmp_path / "out.jsonl"
    for flag, value, words in [("--temperature", "nan", "--temperature must be a finite number, got nan"),
                               ("--top_p", "inf", "--top_p must be a finite number, got inf"),
                               ("--temperature", "-0.5", "--temperature must be >= 0 (0 is greedy), got -0.5")]:
        assert _generate("--model_path", tmp_path / "no-model", "--input_file", inp, "--output_file", out,
                         flag, value) == 2
        assert_one_line_error(capsys.readouterr().err, words)
    assert not out.exists()
    # every key of either side is compared: max_model_len, and a key this version does not know
    assert "max_model_len" in SETTING_KEYS
    settings = {"model_path": "m", "n": 1, "max_model_len": 4096}
    record = {"id": "math-0", "problem_hash": "h", "settings": settings}
    assert resume_plan(out, [record], settings, {"math-0": "h"}) == {"math-0"}
    with pytest.raises(ResultsFileError, match=r"max_model_len=4096 \(now 2048\)"):
        resume_plan(out, [record], settings | {"max_model_len": 2048}, {"math-0": "h"})
    with pytest.raises(ResultsFileError, match=r"protocol='luffy' \(now None\)"):
        resume_plan(out, [record | {"settings": settings | {"protocol": "luffy"}}], settings, {"math-0": "h"})


def test_generation_refuses_an_empty_input_and_outputs_that_clash(tmp_path, capsys):
    empty, out = tmp_path / "empty.jsonl", tmp_path / "out.jsonl"
    empty.write_text("\n")
    assert _generate("--model_path", tmp_path, "--input_file", empty, "--output_file", out) == 2
    assert_one_line_error(capsys.readouterr().err, "empty.jsonl holds no problems")
    inp = _problem_file(tmp_path / "in.jsonl")
    assert _generate("--model_path", tmp_path, "--input_file", inp, "--output_file", out, "--summary_out", out) == 2
    assert_one_line_error(capsys.readouterr().err, "out.jsonl would be written over the results file")
    assert _generate("--model_path", tmp_path / "no-model", "--input_file", inp, "--output_file", out,
                     "--summary_out", tmp_path / "out.json") == 2  # its CSV is out.csv, not out.jsonl: the model is bad
    capsys.readouterr()
    assert _generate("--model_path", tmp_path, "--input_file", inp, "--output_file", inp) == 2
    assert_one_line_error(capsys.readouterr().err, "the input", "is also the results file")
    assert _generate("--model_path", tmp_path, "--input_file", inp, "--output_file", out, "--summary_out", inp) == 2
    assert_one_line_error(capsys.readouterr().err, "in.jsonl would be written over the input")
    assert inp.read_text().count("\n") == 2 and not out.exists()


def _finished_results(path: Path, inp: Path, model: Path, *extra: str) -> list[dict]:
    """Records of a finished run on ``inp`` as ``generate_vllm.py`` writes them (no model needed)."""
    import importlib.util

    from luffy.evaluation.data import load_problems
    from luffy.evaluation.results import problem_hash

    if str(EVAL_SCRIPTS) not in sys.path:
        sys.path.insert(0, str(EVAL_SCRIPTS))
    spec = importlib.util.spec_from_file_location("_fault_generate_settings", EVAL_SCRIPTS / "generate_vllm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    settings = module.run_settings(module.parse_args(["--model_path", str(model), "--input_file", str(inp),
                                                      "--output_file", str(path), *extra]))
    records = [{"id": p.uid, "data_source": p.data_source, "answer": p.answer, "responses": [f"\\boxed{{{p.answer}}}"],
                "extracted": [p.answer], "correct": [True], "problem_hash": problem_hash(p.data_source, p.question,
                                                                                         p.answer),
                "settings": settings} for p in load_problems(inp)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def test_a_duplicated_result_line_is_counted_once(tmp_path, capsys, caplog):
    inp, out, model = _problem_file(tmp_path / "in.jsonl", 3), tmp_path / "out.jsonl", tmp_path / "no-model"
    records = _finished_results(out, inp, model)
    with out.open("a") as fh:  # the first problem's line twice more (a concatenation, an old double run)
        fh.write(json.dumps(records[0]) + "\n" + json.dumps(records[0]) + "\n")
    summary = tmp_path / "s.json"
    assert _generate("--model_path", model, "--input_file", inp, "--output_file", out, "--summary_out", summary) == 0
    data = json.loads(summary.read_text())["all"]
    assert data["n_problems"] == 3 and data["n_responses"] == 3  # no model was needed: nothing left to do
    assert "out.jsonl: 2 duplicated result line(s) (same problem id) counted once" in caplog.text
    png = tmp_path / "p.png"
    assert run_main("eval_scripts/plot_results.py", out, "--out", png) == 0  # the same reader: counted once too
    capsys.readouterr()
    assert run_main("eval_scripts/score.py", out, "--no_progress", "--summary_out", summary) == 0
    assert "lines scored: 3;" in capsys.readouterr().out
    assert json.loads(summary.read_text())["all"]["n_responses"] == 3


def test_a_second_run_on_the_same_output_is_refused_by_the_lock(tmp_path, capsys):
    inp, out = _problem_file(tmp_path / "in.jsonl"), tmp_path / "out.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom luffy.evaluation.result_store import ResultStore\n"
         "store = ResultStore(sys.argv[1], {}).__enter__()\nprint('locked', flush=True)\ntime.sleep(120)", str(out)],
        stdout=subprocess.PIPE, text=True, env=_env(), cwd=REPO,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert _generate("--model_path", tmp_path / "no-model", "--input_file", inp, "--output_file", out) == 2
        assert_one_line_error(capsys.readouterr().err, f"out.jsonl is being written by another run (pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert not out.exists()  # the refused run wrote nothing
    from luffy.evaluation.result_store import ResultStore

    with ResultStore(out, {}):  # the lock went with its holder
        with pytest.raises(Exception, match="being written by another run"), ResultStore(out, {}):
            pass  # two stores in one process exclude each other as well


def test_overwrite_keeps_old_results_until_the_first_new_one(tmp_path, capsys):
    from luffy.evaluation.result_store import ResultStore

    inp, out = _problem_file(tmp_path / "in.jsonl"), tmp_path / "out.jsonl"
    _finished_results(out, inp, tmp_path / "old-model")
    old = out.read_bytes()
    # a mistyped model path: the run stops when the model loads, the old results are whole
    assert _generate("--model_path", tmp_path / "mistyped", "--input_file", inp, "--output_file", out,
                     "--overwrite") != 0
    capsys.readouterr()
    assert out.read_bytes() == old
    with ResultStore(out, {"n": 1}, overwrite=True) as store:
        assert store.resume({"math-0": "h"}) == set() and out.read_bytes() == old
        assert store.records({"math-0": "h"}) == []  # nothing new yet: the old file is not this run's
        with store.writing() as writer:
            writer.write({"id": "math-0", "problem_hash": "h"})
            assert _records(out) == [{"id": "math-0", "problem_hash": "h", "settings": {"n": 1}}]
            writer.write({"id": "math-1", "problem_hash": "h1"})
        assert [r["id"] for r in store.records({"math-0": "h", "math-1": "h1"})] == ["math-0", "math-1"]
    assert not list(tmp_path.glob(".out.jsonl.new"))


def test_a_duplicated_benchmark_problem_is_warned_with_its_rows(tmp_path, caplog):
    import pandas as pd

    from luffy.evaluation.data import load_problems

    rows = [{"problem": q, "answer": "1", "data_source": "math"} for q in ("A?", "B?", "A?", "C?", "B?")]
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    caplog.set_level(logging.WARNING)
    assert len(load_problems(path)) == 5  # kept (the file is the user's to fix), and named
    assert "bench.jsonl: 2 problem(s) appear more than once" in caplog.text
    assert "(line 1, line 3; line 2, line 5)" in caplog.text

    def parquet(indexes: list[int]) -> Path:
        out = tmp_path / f"b{len(indexes)}.parquet"
        prompt = [{"role": "user", "content": "Same?"}]
        pd.DataFrame([{"data_source": "aime", "prompt": prompt, "reward_model": {"ground_truth": "1"},
                       "extra_info": {"index": i}} for i in indexes]).to_parquet(out)
        return out

    caplog.clear()
    load_problems(parquet([0, 0, 0, 0]))  # avg@4 copies share their index: intended
    assert "more than once" not in caplog.text
    load_problems(parquet([0, 0, 7]))  # the same problem under another index: a duplicate
    assert "b3.parquet: 1 problem(s) appear more than once, each copy is scored (row 0, row 2)" in caplog.text
    caplog.clear()
    assert run_main("data/prepare_eval.py", "--input", path, "--output", tmp_path / "e.parquet") == 0
    assert f"{path} row 0, {path} row 2; {path} row 1, {path} row 4" in caplog.text


def test_prepare_eval_names_an_empty_input(tmp_path, capsys):
    empty, good = tmp_path / "empty.jsonl", tmp_path / "good.jsonl"
    empty.write_bytes(b"")
    good.write_text(json.dumps({"problem": "1+1?", "answer": "2", "data_source": "amc"}) + "\n")
    for inputs in ([empty], [good, empty]):
        assert run_main("data/prepare_eval.py", "--input", *inputs, "--output", tmp_path / "e.parquet") == 2
        assert_one_line_error(capsys.readouterr().err, "empty.jsonl holds no rows")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "", "answer": "2"}) + "\n")
    assert run_main("data/prepare_eval.py", "--input", bad, "--output", tmp_path / "e.parquet") == 2
    assert_one_line_error(capsys.readouterr().err, "no usable evaluation rows in", "bad.jsonl", "1 skipped")
    assert not (tmp_path / "e.parquet").exists()


def test_plot_results_names_a_damaged_input_and_reads_a_single_verdict(tmp_path, capsys):
    damaged = tmp_path / "a.summary.json"
    damaged.write_text('{"math": {"avg@n": 0.5}')  # cut short
    assert run_main("eval_scripts/plot_results.py", damaged, "--out", tmp_path / "p.png") == 2
    assert_one_line_error(capsys.readouterr().err, "a.summary.json is not a readable summary JSON")
    damaged.write_text(json.dumps({"math": {"avg@n": "high"}}))
    assert run_main("eval_scripts/plot_results.py", damaged, "--out", tmp_path / "p.png") == 2
    assert_one_line_error(capsys.readouterr().err, "a.summary.json: math.avg@n is 'high', not a number")

    results = tmp_path / "r.jsonl"
    lines = [{"id": "math-0", "data_source": "math", "correct": True, "extracted": "2"},  # one verdict, not a list
             {"id": "math-1", "data_source": "math", "correct": [False, True], "extracted": ["1", "4"]}]
    results.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert run_main("eval_scripts/plot_results.py", results, "--out", tmp_path / "p.png") == 0
    capsys.readouterr()
    from luffy.evaluation.summary import summarize

    plot = _load_plot()
    assert plot.load_summary(results)["math"]["avg@n"] == pytest.approx(2 / 3) == summarize(
        [{"data_source": "math", "correct": [True], "extracted": ["2"]}, lines[1]])["math"]["avg@n"]
    for bad, words in [({"correct": "yes"}, "'correct' must be true/false"),
                       ({"correct": [True, 2]}, "'correct' must be true/false"),
                       ({"correct": [True], "extracted": ["1", "2"]}, "'extracted' must be a list as long")]:
        results.write_text(json.dumps(lines[1]) + "\n" + json.dumps(lines[0] | bad) + "\n")
        assert run_main("eval_scripts/plot_results.py", results, "--out", tmp_path / "p.png") == 2
        assert_one_line_error(capsys.readouterr().err, "r.jsonl:2", words)


def _load_plot():
    import importlib.util

    if str(EVAL_SCRIPTS) not in sys.path:
        sys.path.insert(0, str(EVAL_SCRIPTS))
    spec = importlib.util.spec_from_file_location("_fault_plot", EVAL_SCRIPTS / "plot_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
