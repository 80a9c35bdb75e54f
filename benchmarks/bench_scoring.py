"""Throughput of answer verification: luffy.scoring vs math-verify called directly in-process.

Builds realistic math responses (a few hundred characters of reasoning ending in ``\\boxed{}``, with
integer, fraction, decimal, symbolic and interval answers, right and wrong), scores them

* baseline: ``verify(parse(gold), parse(response))`` in this process (math-verify's defaults,
  signal-based timeouts, main thread only);
* luffy.scoring ``is_correct`` one by one (bounded worker processes, fast path, cache);
* luffy.scoring ``score_responses`` in groups of 8 (all workers busy);

and prints answers/s with the ratio to the baseline, then the wall time one pathological answer
costs each way, then pathological ground truths and responses (huge, deeply nested, brace bombs;
each must cost at most its bound) and the realistic mix with 1% of its ground truths replaced by them.

    python benchmarks/bench_scoring.py [--n 400] [--timeout 5]
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

FILLER = (
    "Let me set up the problem carefully. We denote the unknown by $x$ and write the given condition "
    "as an equation. Expanding and collecting terms gives a simpler form; checking the edge cases "
    "confirms nothing is lost. "
)


KINDS = {  # share of each answer kind in the realistic mix (competition math: mostly integers)
    "integer": 0.45,
    "integer_wrong": 0.20,
    "fraction": 0.10,
    "decimal": 0.05,
    "symbolic": 0.12,
    "interval": 0.08,
}


def make_cases(n: int, seed: int = 0, kinds: dict[str, float] = KINDS) -> list[tuple[str, str, str]]:
    """(kind, response, ground truth) triples; answers vary so the cache rarely helps."""
    rng = random.Random(seed)
    names, weights = list(kinds), list(kinds.values())
    cases = []
    for i in range(n):
        kind = rng.choices(names, weights)[0]
        a, b = rng.randint(2, 999), rng.randint(2, 97)
        if kind == "integer":
            gold, pred = str(a), str(a)
        elif kind == "integer_wrong":
            gold, pred = str(a), str(a + 1)
        elif kind == "fraction":
            gold, pred = f"\\frac{{{a}}}{{{b}}}", f"\\dfrac{{{a}}}{{{b}}}" if i % 2 else f"{a}/{b}"
        elif kind == "decimal":
            gold, pred = f"\\frac{{{a}}}{{4}}", f"{a / 4:g}"
        elif kind == "symbolic":
            gold, pred = f"{a}\\sqrt{{{b}}} + {a}\\pi", f"{a}\\pi + {a}\\sqrt{{{b}}}"
        else:
            gold, pred = f"({a}, {a + b}]", f"\\left({a},{a + b}\\right]"
        response = f"<think>\n{FILLER * 3}</think>\n\n{FILLER}Therefore the answer is $\\boxed{{{pred}}}$."
        cases.append((kind, response, gold))
    return cases


def baseline_verify(response: str, gold: str) -> bool:
    """math-verify used directly on the whole response (main thread; its own timeouts)."""
    from math_verify import parse, verify

    return bool(verify(parse(f"${gold}$"), parse(response)))


def _worker_cpu_s() -> float:
    """CPU seconds used so far by the verification worker processes (Linux ``/proc``)."""
    import luffy.scoring.math_verify_bounded as mvb

    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for worker in list(mvb.get_verifier()._all):
        try:
            fields = Path(f"/proc/{worker.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def timed(fn: Callable[[], list[bool]]) -> tuple[float, float, list[bool]]:
    """Wall time and CPU time (this process + verification workers) of ``fn()``, and its result."""
    cpu0 = time.process_time() + _worker_cpu_s()
    start = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - start
    return wall, time.process_time() + _worker_cpu_s() - cpu0, out


def compare(label: str, cases: list[tuple[str, str, str]]) -> None:
    """Time the three ways on ``cases`` and print one table."""
    import luffy.scoring.math_verify_bounded as mvb
    from luffy.scoring import extract_answer, is_correct

    verifier = mvb.get_verifier()
    t_base, c_base, v_base = timed(lambda: [baseline_verify(r, g) for _, r, g in cases])
    verifier._cache.clear()
    t_seq, c_seq, v_seq = timed(lambda: [is_correct("math", r, g) for _, r, g in cases])
    verifier._cache.clear()
    t_par, c_par, v_par = timed(lambda: verifier.verify_many([(g, extract_answer("math", r)) for _, r, g in cases]))
    agree = sum(a == b for a, b in zip(v_base, v_seq))
    print(
        f"\n{label}: {len(cases)} responses, verdicts agree with the baseline on {agree}/{len(cases)}, "
        f"parallel == sequential: {v_par == v_seq}"
    )
    n = len(cases)
    print(f"{'method':40s} {'answers/s':>10s} {'vs base':>8s} {'CPU ms/answer':>14s} {'answers/CPU-s':>14s}")
    for name, t, c in [
        ("math-verify in-process (baseline)", t_base, c_base),
        ("luffy.scoring is_correct, sequential", t_seq, c_seq),
        ("luffy.scoring verify_many, all workers", t_par, c_par),
    ]:
        print(f"{name:40s} {n / t:10.0f} {t_base / t:7.2f}x {1000 * c / n:14.2f} {n / max(c, 1e-9):14.0f}")


PATHOLOGICAL_GOLDS = {  # name -> ground truth (the juxtaposed answer below makes the fast path inspect it)
    "'{}1' x 1333 (4 kB, under the cap)": "{}1" * 1333,
    "'{'*2000 + '}1'*1000 (4 kB)": "{" * 2000 + "}1" * 1000,
    "'{}1' x 350000 (1 MB, over the cap)": "{}1" * 350000,
}
PATHOLOGICAL_RESPONSES = {
    "16k unterminated \\boxed{": "\\boxed{" * 2300,
    "16k blank lines": "\n" * 16000,
    "'the answer is' + 16k newlines": "the answer is" + "\n" * 16000,
}


def pathological(cases: list[tuple[str, str, str]]) -> None:
    """Time pathological ground truths and responses, then the realistic mix with 1% of them mixed in."""
    import luffy.scoring.math_verify_bounded as mvb
    from luffy.scoring import is_correct

    print(f"\n{'pathological input':44s} {'wall s':>8s}  verdict")
    for name, gold in PATHOLOGICAL_GOLDS.items():
        start = time.perf_counter()
        verdict = is_correct("math", "so \\boxed{x^{2}1}", gold)
        print(f"gold {name:39s} {time.perf_counter() - start:8.3f}  {verdict}")
    for name, response in PATHOLOGICAL_RESPONSES.items():
        start = time.perf_counter()
        verdict = is_correct("math", response, "5")
        print(f"response {name:35s} {time.perf_counter() - start:8.3f}  {verdict}")
    golds = list(PATHOLOGICAL_GOLDS.values())
    mixed = [(k, r, golds[i % len(golds)] if i % 100 == 0 else g) for i, (k, r, g) in enumerate(cases)]
    verifier = mvb.get_verifier()
    verifier._cache.clear()
    timeouts, refused = verifier.stats["timeouts"], verifier.stats["slow_gold"]
    wall, _, _ = timed(lambda: [is_correct("math", r, g) for _, r, g in mixed])
    print(f"realistic mix, 1% pathological ground truths: {len(mixed) / wall:.0f} answers/s, "
          f"{verifier.stats['timeouts'] - timeouts} deadline(s) paid, {verifier.stats['slow_gold'] - refused} "
          "answer(s) refused at once (a ground truth that ran out of time is not waited on again)")


def main() -> None:
    """Run the comparison and the pathological-answer timing."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=600, help="number of responses in the realistic mix")
    parser.add_argument("--timeout", type=float, default=5.0, help="per-answer bound for luffy.scoring")
    args = parser.parse_args()

    import luffy.scoring.math_verify_bounded as mvb
    from luffy.scoring import is_correct

    mvb._DEFAULT = mvb.BoundedVerifier(timeout_s=args.timeout)
    cases = make_cases(args.n)
    baseline_verify(cases[0][1], cases[0][2])  # import + warm caches
    is_correct("math", "\\boxed{x+1}", "1+x")  # start the workers (not timed)
    compare("realistic mix " + ", ".join(f"{k} {v:.0%}" for k, v in KINDS.items()), cases)
    compare("symbolic and interval answers only", make_cases(args.n // 3, 1, {"symbolic": 0.6, "interval": 0.4}))
    print(f"\nworker pool: {mvb._DEFAULT.num_workers} processes; path counts {mvb._DEFAULT.stats}")
    pathological(cases)

    bad = "So the answer is \\boxed{9^{9^{9^{9^{9}}}}}."
    start = time.perf_counter()
    verdict = is_correct("math", bad, "5")
    t_bad = time.perf_counter() - start
    print(f"\npathological answer {bad[-25:]!r}:")
    print(f"  luffy.scoring (bound {args.timeout:g}s, any thread): {t_bad:6.2f}s -> {verdict}")
    start = time.perf_counter()
    try:
        verdict_b = baseline_verify(bad, "5")
    except Exception as exc:  # noqa: BLE001
        verdict_b = f"raised {type(exc).__name__}"
    print(f"  math-verify in main thread (its 5s alarms): {time.perf_counter() - start:6.2f}s -> {verdict_b}")
    mvb._DEFAULT.close()


if __name__ == "__main__":
    main()
