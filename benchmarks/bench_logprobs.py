"""Benchmark token log-probs from bf16 logits: LUFFY's chunked fp32 kernel against veRL's fallback.

On the same bf16 ``(tokens, vocab)`` logits, forward + backward of:

* ``chunked_fp32_logprobs`` (``luffy/mix_src/logprobs.py``, what the actor runs without flash-attn);
* veRL's ``logprobs_from_logits_v2`` (what veRL runs without flash-attn: a Python loop over tokens, bf16 out);
* ``log_softmax(logits.float())`` gathered (fp32, one full-size upcast: the memory the chunks avoid).

Each row gives the median time, the ratio to veRL's fallback, and the largest error against fp64. On a
CUDA device the peak memory above the logits is printed too.

Examples::

    python benchmarks/bench_logprobs.py --quick
    python benchmarks/bench_logprobs.py --tokens 8192 --vocab 152064 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from verl.utils.torch_functional import logprobs_from_logits_v2

from luffy.mix_src.logprobs import DEFAULT_CHUNK, chunked_fp32_logprobs


def _full_fp32(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.float(), -1).gather(-1, labels[:, None]).squeeze(-1)


def _measure(
    fn: Callable, logits: torch.Tensor, labels: torch.Tensor, repeats: int
) -> tuple[float, float, torch.Tensor]:
    """Median ms of forward + backward, peak extra MB (CUDA only, else nan), and the forward's output."""
    times, peak = [], float("nan")
    for _ in range(repeats):
        x = logits.detach().clone().requires_grad_(True)
        if x.is_cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        out = fn(x, labels)
        out.float().sum().backward()
        if x.is_cuda:
            torch.cuda.synchronize()
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), peak, out.detach()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=4096, help="rows of logits (packed tokens)")
    parser.add_argument("--vocab", type=int, default=32768, help="vocabulary size (Qwen2.5: 152064)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="1024 tokens x 16384 vocabulary, 2 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.tokens, args.vocab, args.repeats = 1024, 16384, 2
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(args.tokens, args.vocab, generator=gen) * 4).to(torch.bfloat16).to(args.device)
    labels = torch.randint(0, args.vocab, (args.tokens,), generator=gen).to(args.device)
    ref = torch.log_softmax(logits.double(), -1).gather(-1, labels[:, None]).squeeze(-1)

    rows = {
        f"luffy chunked fp32 (chunk {DEFAULT_CHUNK})": chunked_fp32_logprobs,
        "veRL logprobs_from_logits_v2 (bf16)": logprobs_from_logits_v2,
        "full fp32 upcast": _full_fp32,
    }
    results = {name: _measure(fn, logits, labels, args.repeats) for name, fn in rows.items()}
    base = results["veRL logprobs_from_logits_v2 (bf16)"][0]
    print(f"{args.tokens} tokens x {args.vocab} vocabulary, bf16 logits on {args.device}, forward + backward")
    print(f"{'kernel':40} {'ms':>10} {'vs veRL':>8} {'max |err|':>10} {'out dtype':>10} {'peak MB':>8}")
    for name, (ms, peak, out) in results.items():
        err = (out.double() - ref).abs().max().item()
        print(f"{name:40} {ms:10.1f} {ms / base:7.2f}x {err:10.2e} {str(out.dtype)[6:]:>10} {peak:8.0f}")


if __name__ == "__main__":
    main()
