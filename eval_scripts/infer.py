"""Answer one question with a model (vLLM when installed, else transformers).

Example::

    python eval_scripts/infer.py "What is 3 + 4?" --model_path Elliott/LUFFY-Qwen-Math-7B-Zero

The prompt is built with the chat template and LUFFY's training system prompt (``--template own``),
sampled at temperature 0.6 as in the README.
"""

from __future__ import annotations

import argparse
import logging
import sys

import _bootstrap  # noqa: F401

from luffy.evaluation.engines import SamplingConfig, make_engine, render_prompt
from luffy.prompts import TEMPLATES
from luffy.scoring import extract_math_answer

logger = logging.getLogger("infer")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("question", help="the question text")
    p.add_argument("--model_path", required=True, help="local model directory (or name known to the engine)")
    p.add_argument("--template", default="own", choices=TEMPLATES)
    p.add_argument("--remove_system", action="store_true")
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top_p", type=float, default=0.95)
    p.add_argument("--max_tokens", type=int, default=8192)
    p.add_argument("--n", type=int, default=1)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--tensor_parallel_size", type=int, default=1)
    p.add_argument("--max_model_len", type=int, default=None)
    p.add_argument("--cpu_threads", type=int, default=None, help="torch CPU threads for --engine hf")
    p.add_argument("--engine", default="auto", choices=("auto", "vllm", "hf"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if not args.question.strip():
        logger.error("the question is empty")
        return 2
    try:
        sampling = SamplingConfig(args.n, args.temperature, args.top_p, args.max_tokens, args.seed)
        engine = make_engine(
            args.engine, args.model_path, args.tensor_parallel_size, args.max_model_len, args.seed, args.cpu_threads
        )
        prompt = render_prompt(engine.tokenizer, args.question, args.template, args.remove_system)
        samples = engine.generate([prompt], sampling, [args.seed])[0]
    except (ValueError, RuntimeError, OSError) as exc:
        logger.error("%s", exc)
        return 2
    for i, (text, _) in enumerate(samples):
        if len(samples) > 1:
            print(f"===== response {i} =====")
        print(text)
        print(f"\n[extracted answer: {extract_math_answer(text)}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
