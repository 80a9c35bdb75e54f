"""Benchmark ``data/prepare_train.py`` on a synthetic 46k-scale input against a plain read+write.

Generates ``--rows`` raw OpenR1-Math rows (one or two generations of 2-8k characters each, the
first marked correct) as parquet, builds the tiny offline byte-level BPE tokenizer, then times:

- baseline: ``pandas.read_parquet`` + ``DataFrame.to_parquet`` of the same file;
- prepare_train.py with a token budget of 8192 (LUFFY's; short traces are accepted by the exact
  byte bound of byte-level BPE, long ones tokenised);
- prepare_train.py with a budget of 1024 and ``--overlong truncate``, where every trace is
  tokenised (the worst case for the budget check), with 1 and ``--num-proc`` processes, on the
  first ``--worst_rows`` rows (a separate, smaller file: tokenising everything is slow).

Each prepare run is a fresh ``python data/prepare_train.py`` process, imports included; with
``--repeats N`` the best of N runs counts (on a shared machine single runs vary several-fold).
Prints a table of seconds, rows/s and the ratio to the baseline.

A second table times ``TargetEncoder.encode`` (the per-sample call in the agent loop) on the same
kind of traces: first sight of a trace (tokenised) and a repeat (cached), against a plain
``tokenizer.encode`` call as the baseline, in microseconds per sample. ``--encoder_only`` runs just
that table.

A third table gives the peak memory (max RSS of the prepare process) and time with one
``--huge_trace_mb`` (50) MB trace among ``--huge_rows`` ordinary rows (budget 8192 with drop, and
1024 with truncate, where every trace is tokenised), against the same input without the huge
trace. ``--huge_only`` runs just that table.

    python benchmarks/bench_prepare.py --rows 50000 --num-proc 2
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = (
    "Let me double-check this carefully . So the fraction is \\frac{1}{7} and x = 6 . We compute "
    "the sum of the first n terms , then subtract 2a_{n} from both sides ; hmm , wait , that gives "
    "\\sqrt{3} over 2 . Alternatively consider the triangle ABC with AB = 13 , BC = 14 and CA = 15 ."
).split()


def make_input(path: Path, rows: int, seed: int = 0) -> int:
    """Write ``rows`` synthetic raw rows to parquet; return the total trace characters."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    segments = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(60, 120))) + f" step {i}.\n" for i in range(4000)]
    problems, answers, generations, marks = [], [], [], []
    total = 0
    for i in range(rows):
        traces = []
        for _ in range(1 + (i % 3 == 0)):
            body, target = [], rng.randint(2000, 8000)
            length = 0
            while length < target:
                seg = segments[rng.randrange(len(segments))]
                body.append(seg)
                length += len(seg)
            trace = "<think>\n" + "".join(body) + f"</think>\n\nThe answer is $\\boxed{{{i}}}$."
            traces.append(trace)
            total += len(trace)
        problems.append(f"Problem {i}: find the value of $x$ when $3x + {i} = {3 * i + 6}$.")
        answers.append(str(i))
        generations.append(traces)
        marks.append([True] + [False] * (len(traces) - 1))
    table = pa.table(
        {"problem": problems, "answer": answers, "generations": generations, "correctness_math_verify": marks}
    )
    pq.write_table(table, path)
    return total


def timed(cmd: list[str], repeats: int = 1) -> float:
    """Best wall time of ``repeats`` runs (the least disturbed by other load on the machine)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        best = min(best, time.perf_counter() - start)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return best


def bench_target_encoder(samples: int = 300) -> None:
    """Microseconds per ``TargetEncoder.encode`` call, uncached and cached, vs ``tokenizer.encode``."""
    import pyarrow.parquet as pq

    from luffy.tiny import build_tokenizer
    from luffy.tokens import TargetEncoder

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "raw.parquet"
        make_input(src, samples, seed=1)
        traces = [g[0] for g in pq.read_table(src).column("generations").to_pylist()]
    tokenizer = build_tokenizer()
    encoder = TargetEncoder(tokenizer, max_response_length=8192)
    messages = [{"role": "user", "content": "Q"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)

    def per_sample(fn) -> float:
        start = time.perf_counter()
        for trace in traces:
            fn(trace)
        return (time.perf_counter() - start) / len(traces) * 1e6

    base = per_sample(lambda t: tokenizer.encode(t, add_special_tokens=False))
    cold = per_sample(lambda t: encoder.encode(t, prompt_ids))
    warm = per_sample(lambda t: encoder.encode(t, prompt_ids))
    chars = sum(map(len, traces)) / len(traces)
    print(f"\nTargetEncoder.encode, {len(traces)} traces of {chars:.0f} chars on average (tiny tokenizer)")
    print(f"{'call':<44}{'us/sample':>12}{'vs baseline':>13}")
    for name, us in (("baseline: tokenizer.encode", base), ("TargetEncoder.encode, first sight", cold),
                     ("TargetEncoder.encode, cached", warm)):
        print(f"{name:<44}{us:>12.1f}{base / us:>12.1f}x")


def run_peak(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MB) of one child process."""
    import os

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def bench_huge_trace(rows: int, megabytes: int) -> None:
    """Peak memory of prepare_train.py with one huge trace in the input vs without it."""
    import json

    import pyarrow.parquet as pq

    from luffy.tiny import build_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_input(work / "raw.parquet", rows, seed=2)
        records = pq.read_table(work / "raw.parquet").to_pylist()
        plain, huge = work / "plain.jsonl", work / "huge.jsonl"
        plain.write_text("".join(json.dumps(r) + "\n" for r in records))
        sentence = "We compute the sum of the first n terms and check it again . "
        body = sentence * (megabytes * 2**20 // len(sentence))
        records[rows // 2]["generations"][0] = f"<think>\n{body}</think>"
        huge.write_text("".join(json.dumps(r) + "\n" for r in records))
        build_tokenizer(work / "tok")
        base = [sys.executable, "data/prepare_train.py", "--tokenizer", str(work / "tok"), "--no_progress"]
        drop = ["--max_target_tokens", "8192"]
        cut = ["--max_target_tokens", "1024", "--overlong", "truncate"]
        results = []
        for name, path, extra in (
            (f"{rows} rows, budget 8192, drop (baseline)", plain, drop),
            (f"same + one {megabytes} MB trace", huge, drop),
            (f"{rows} rows, budget 1024, truncate (baseline)", plain, cut),
            (f"same + one {megabytes} MB trace", huge, cut),
        ):
            out = work / f"out_{len(results)}"
            seconds, peak = run_peak([*base, "--input", str(path), "--output_dir", str(out), *extra])
            results.append((name, seconds, peak))
    print(f"\n{'prepare_train.py run':<48}{'seconds':>9}{'peak MB':>9}{'peak vs baseline':>18}")
    for i, (name, seconds, peak) in enumerate(results):
        print(f"{name:<48}{seconds:>9.1f}{peak:>9.0f}{peak / results[i - i % 2][2]:>17.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--num-proc", dest="num_proc", type=int, default=2)
    parser.add_argument("--worst_rows", type=int, default=5_000, help="rows for the all-tokenised runs")
    parser.add_argument("--encoder_only", action="store_true", help="only the TargetEncoder table")
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration; the best time counts")
    parser.add_argument("--huge_trace_mb", type=int, default=50, help="size of the one huge trace (MB)")
    parser.add_argument("--huge_rows", type=int, default=500, help="ordinary rows beside the huge trace")
    parser.add_argument("--huge_only", action="store_true", help="only the huge-trace memory table")
    args = parser.parse_args()
    if args.encoder_only:
        bench_target_encoder()
        return
    if args.huge_only:
        bench_huge_trace(args.huge_rows, args.huge_trace_mb)
        return

    import pandas as pd

    from luffy.tiny import build_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src, small = work / "raw.parquet", work / "raw_small.parquet"
        start = time.perf_counter()
        chars = make_input(src, args.rows)
        make_input(small, args.worst_rows)
        print(f"input: {args.rows} rows, {chars / 1e6:.0f} M trace chars, {src.stat().st_size / 1e6:.0f} MB "
              f"(generated in {time.perf_counter() - start:.0f} s)")
        build_tokenizer(work / "tok")

        baseline = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            pd.read_parquet(src).to_parquet(work / "copy.parquet")
            baseline = min(baseline, time.perf_counter() - start)
        results = [("baseline: pandas read + write", args.rows, baseline)]

        base = [sys.executable, "data/prepare_train.py", "--tokenizer", str(work / "tok"), "--no_progress"]
        procs = str(args.num_proc)
        luffy = ["--max_target_tokens", "8192"]
        worst = ["--max_target_tokens", "1024", "--overlong", "truncate"]
        runs = [
            ("prepare, budget 8192, 1 proc", src, args.rows, luffy),
            (f"prepare, budget 8192, {procs} proc", src, args.rows, [*luffy, "--num-proc", procs]),
            ("prepare, budget 1024 (all tokenised), 1 proc", small, args.worst_rows, worst),
            (f"prepare, budget 1024 (all tokenised), {procs} proc", small, args.worst_rows,
             [*worst, "--num-proc", procs]),
        ]
        for i, (name, path, rows, extra) in enumerate(runs):
            seconds = timed([*base, "--input", str(path), "--output_dir", str(work / f"out{i}"), *extra], args.repeats)
            results.append((name, rows, seconds))

    baseline_rate = results[0][1] / results[0][2]
    print(f"\n{'run':<50}{'rows':>8}{'seconds':>9}{'rows/s':>9}{'vs baseline':>13}")
    for name, rows, seconds in results:
        rate = rows / seconds
        print(f"{name:<50}{rows:>8}{seconds:>9.1f}{rate:>9.0f}{rate / baseline_rate:>12.3f}x")
    bench_target_encoder()
    bench_huge_trace(args.huge_rows, args.huge_trace_mb)


if __name__ == "__main__":
    main()
