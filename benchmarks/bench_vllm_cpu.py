"""Generation throughput on the CPU: vLLM's CPU build vs luffy's ``hf_cpu`` rollout server vs the HF engine.

The same tiny model (built offline with head size 32, or ``--model_path``), the same prompts (the
evaluation sample under LUFFY's chat template) and the same sampling (temperature 1, ``--n`` samples per
prompt, ``--max_tokens`` new tokens; vLLM and the server ignore EOS so every sample is full length, the
HF engine stops at EOS and counts what it made), in one process, one after the other:

- ``vllm``: ``generate_vllm.py``'s vLLM engine (``vllm.LLM``, eager, 2 GiB KV cache), all prompts in one call;
- ``hf_cpu server``: :class:`luffy.cpu.hf_server.HFRolloutServer` without Ray, every sample a concurrent
  request (the trainer's path: one left-padded batch);
- ``hf engine``: ``generate_vllm.py --engine hf`` (``model.generate``, prompt by prompt).

Engine start-up (model load, vLLM's KV cache and warm-up) is timed apart; tokens/s counts generation only.
Needs vLLM's CPU build (``scripts/install_vllm_cpu.sh``)::

    .venv-vllm/bin/python benchmarks/bench_vllm_cpu.py
    .venv-vllm/bin/python benchmarks/bench_vllm_cpu.py --prompts 16 --n 4 --max_tokens 128
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", default=None, help="model folder (default: a tiny model with head size 32)")
    p.add_argument("--input_file", default=str(REPO / "data" / "sample" / "eval_sample.jsonl"))
    p.add_argument("--prompts", type=int, default=16, help="prompts from the input file")
    p.add_argument("--n", type=int, default=2, help="samples per prompt")
    p.add_argument("--max_tokens", type=int, default=64, help="new tokens per sample")
    p.add_argument("--threads", type=int, default=2, help="torch threads for the HF engine and the server")
    p.add_argument("--out", default=None, help="also write the table as JSON here")
    return p.parse_args(argv)


def _tiny_model() -> str:
    from luffy.tiny import VLLM_CPU_HIDDEN_SIZE, build_tiny_checkpoint

    folder = Path(tempfile.gettempdir()) / f"luffy_bench_vllm_tiny_{VLLM_CPU_HIDDEN_SIZE}"
    corpus = [REPO / "data" / "sample" / "openr1_sample.jsonl"]
    return str(build_tiny_checkpoint(folder, corpus, hidden_size=VLLM_CPU_HIDDEN_SIZE))


def _prompts(tokenizer, path: str, count: int) -> list[str]:
    from luffy.evaluation.data import load_problems
    from luffy.evaluation.engines import render_prompt

    problems = load_problems(path, None, count, None)
    return [render_prompt(tokenizer, p.question, "own") for p in problems]


def bench_vllm(model: str, prompts: list[str], n: int, max_tokens: int) -> dict:
    from vllm import SamplingParams

    from luffy.evaluation.engines import VLLMEngine

    start = time.perf_counter()
    engine = VLLMEngine(model)
    startup = time.perf_counter() - start
    params = SamplingParams(n=n, temperature=1.0, max_tokens=max_tokens, ignore_eos=True, seed=0)
    start = time.perf_counter()
    outs = engine.llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    tokens = sum(len(o.token_ids) for out in outs for o in out.outputs)
    return {"engine": "vllm (CPU build)", "startup_s": startup, "gen_s": seconds, "tokens": tokens}


def bench_hf_server(model: str, prompt_ids: list[list[int]], n: int, max_tokens: int) -> dict:
    from luffy.cpu.hf_server import HFRolloutServer

    config = SimpleNamespace(
        prompt_length=max(map(len, prompt_ids)), response_length=max_tokens, max_model_len=None, seed=0
    )
    start = time.perf_counter()
    server = HFRolloutServer(config, {"local_path": model})
    startup = time.perf_counter() - start

    async def run() -> list:
        params = {"max_tokens": max_tokens, "temperature": 1.0, "ignore_eos": True, "logprobs": 0}
        return await asyncio.gather(
            *[server.generate(ids, params, f"r{i}_{k}") for i, ids in enumerate(prompt_ids) for k in range(n)]
        )

    start = time.perf_counter()
    outs = asyncio.run(run())
    seconds = time.perf_counter() - start
    tokens = sum(len(o.token_ids) for o in outs)
    return {"engine": "hf_cpu rollout server", "startup_s": startup, "gen_s": seconds, "tokens": tokens}


def bench_hf_engine(model: str, prompts: list[str], n: int, max_tokens: int, threads: int) -> dict:
    from luffy.evaluation.engines import HFEngine, SamplingConfig

    start = time.perf_counter()
    engine = HFEngine(model, cpu_threads=threads)
    startup = time.perf_counter() - start
    sampling = SamplingConfig(n=n, temperature=1.0, top_p=1.0, max_tokens=max_tokens, seed=0)
    start = time.perf_counter()
    tokens = 0
    for i, prompt in enumerate(tqdm(prompts, desc="hf engine", file=sys.stderr)):
        tokens += sum(len(ids) for _, ids in engine.generate([prompt], sampling, [i])[0])
    seconds = time.perf_counter() - start
    return {
        "engine": "hf engine (generate_vllm.py --engine hf)",
        "startup_s": startup,
        "gen_s": seconds,
        "tokens": tokens,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    model = args.model_path or _tiny_model()
    tokenizer = AutoTokenizer.from_pretrained(model)
    prompts = _prompts(tokenizer, args.input_file, args.prompts)
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    print(
        f"model {model}: {len(prompts)} prompts (mean {sum(map(len, prompt_ids)) / len(prompt_ids):.0f} tokens), "
        f"n={args.n}, {args.max_tokens} new tokens, {args.threads} torch threads",
        flush=True,
    )
    rows = []
    for name in tqdm(("vllm", "hf_cpu server", "hf engine"), desc="engines", file=sys.stderr):
        if name == "vllm":
            rows.append(bench_vllm(model, prompts, args.n, args.max_tokens))
        elif name == "hf_cpu server":
            rows.append(bench_hf_server(model, prompt_ids, args.n, args.max_tokens))
        else:
            rows.append(bench_hf_engine(model, prompts, args.n, args.max_tokens, args.threads))
    base = rows[-1]["tokens"] / rows[-1]["gen_s"]
    print("\n| engine | start-up s | generation s | tokens | tokens/s | vs HF engine |\n|---|---|---|---|---|---|")
    for row in rows:
        row["tokens_per_s"] = row["tokens"] / row["gen_s"]
        row["vs_hf_engine"] = row["tokens_per_s"] / base
        print(
            f"| {row['engine']} | {row['startup_s']:.1f} | {row['gen_s']:.2f} | {row['tokens']} | "
            f"{row['tokens_per_s']:.0f} | {row['vs_hf_engine']:.1f}x |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
