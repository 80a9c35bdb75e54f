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

    from luffy.mix_src.target_tokens import TargetEncoder
    from luffy.tiny import build_tokenizer

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--num-proc", dest="num_proc", type=int, default=2)
    parser.add_argument("--worst_rows", type=int, default=5_000, help="rows for the all-tokenised runs")
    parser.add_argument("--encoder_only", action="store_true", help="only the TargetEncoder table")
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration; the best time counts")
    args = parser.parse_args()
    if args.encoder_only:
        bench_target_encoder()
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


if __name__ == "__main__":
    main()
