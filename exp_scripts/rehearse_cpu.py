#!/usr/bin/env python3
"""CPU rehearsal of a GPU recipe: runs ``exp_scripts/train.sh`` (or one of its baselines) itself.

The script is started as users start it, with ``PYTHON`` pointing at a small wrapper: the wrapper
receives the recipe's exact command line, replaces only the settings in :data:`SWAPS` (hardware:
model, rollout backend, GPU count, tensor parallel size, precision, lengths and batch sizes scaled
down), adds :data:`ADDITIONS` (what veRL needs on a CPU and the step count), prints the table of
both, and runs the trainer. Everything else (``use_dynamic_bsz``, remove-padding, gradient
checkpointing, LUFFY's loss and mixing keys, validation before training, ``resume_mode=auto``, the
logger default, the flash-attn -> sdpa fallback) is the recipe's own. Validation runs on an
evaluation parquet written by ``data/prepare_eval.py`` from ``data/sample/eval_sample.jsonl``.
``train_sft_rl.sh`` starts from an SFT checkpoint: the tiny model is written in the layout of veRL's SFT
trainer output (``global_step_N/huggingface/`` and ``latest_checkpointed_iteration.txt``) and ``SFT_CKPT``
points at it, so the recipe resolves and loads it itself.

    python exp_scripts/rehearse_cpu.py [--script train.sh] [--out DIR] [--steps 2] [--nnodes 1]
                                       [-- extra hydra overrides]

``--nnodes 2`` expects a Ray cluster of two nodes with one logical GPU each at ``RAY_ADDRESS``
(``tests/test_rehearsal.py`` starts one on this machine). ``--print-swaps`` prints the
swap table and exits.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAINER_MODULE = "luffy.mix_src.main_mix_ppo"
SCRIPTS = ("train.sh", "train_on_policy.sh", "train_rl_sft_loss.sh", "train_sft_rl.sh")
SFT_STEP = 2  # the step of the SFT checkpoint written for train_sft_rl.sh

# Tiny sizes: 4 prompts x the recipe's n = 8 per step, 2 optimizer steps per step as the recipe's
# 128 / 64, responses long enough for the sample traces to fit whole.
PROMPT_LEN, RESPONSE_LEN, TOKENS_PER_RANK = 512, 256, 1024

#: recipe key -> CPU value: the only settings of the recipe that the rehearsal changes.
SWAPS: dict[str, str] = {
    "actor_rollout_ref.model.path": "{model}",  # the offline tiny random-weight model
    "actor_rollout_ref.rollout.name": "hf_cpu",  # vLLM needs CUDA: luffy's transformers server
    "actor_rollout_ref.rollout.tensor_model_parallel_size": "1",
    "trainer.n_gpus_per_node": "1",  # logical Ray GPUs, one rank per node
    "data.train_batch_size": "4",
    "actor_rollout_ref.actor.ppo_mini_batch_size": "2",
    "data.max_prompt_length": str(PROMPT_LEN),
    "data.max_response_length": str(RESPONSE_LEN),
    "actor_rollout_ref.rollout.max_prefix_len": str(RESPONSE_LEN),
    "actor_rollout_ref.actor.ppo_max_token_len_per_gpu": str(TOKENS_PER_RANK),  # several dynamic micro-batches
    "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu": str(TOKENS_PER_RANK),
}

#: keys the recipe leaves at veRL's GPU defaults, set for the CPU (and the step count).
ADDITIONS: dict[str, str] = {
    "trainer.device": "cpu",
    "actor_rollout_ref.actor.fsdp_config.dtype": "float32",  # bf16 on GPU
    "actor_rollout_ref.actor.use_torch_compile": "false",
    "actor_rollout_ref.rollout.checkpoint_engine.backend": "naive",  # weight sync without NCCL
    "actor_rollout_ref.rollout.agent.num_workers": "1",  # 2 CPU cores
    "reward.num_workers": "1",
    "data.dataloader_num_workers": "0",
    "transfer_queue.backend.SimpleStorage.num_data_storage_units": "1",
    "trainer.v1.sampler.custom_sampler.path": "pkg://luffy.cpu.replay_buffer",  # 50 ms poll, not 2 s
    "trainer.v1.sampler.custom_sampler.name": "FastPollReplayBuffer",
    "+trainer.v1.sampler.sampler_kwargs.poll_interval_s": "0.05",
    "trainer.total_training_steps": "{steps}",
}

#: on one node veRL starts Ray itself: logical resources (no GPU exists; veRL counts Ray GPUs).
LOCAL_RAY: dict[str, str] = {
    "+ray_kwargs.ray_init.num_cpus": "16",
    "+ray_kwargs.ray_init.num_gpus": "1",
    "+ray_kwargs.ray_init.include_dashboard": "false",
}

#: environment of every process of the run (read by Ray's workers too).
ENV: dict[str, str] = {
    "VERL_PLATFORM": "cpu",
    "VERL_USE_EXTERNAL_MODULES": "luffy.plugin",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
    "RAY_DEDUP_LOGS": "0",
    "HYDRA_FULL_ERROR": "1",
    "VERL_LOGGING_LEVEL": "WARN",
    "RAY_prestart_worker_first_driver": "0",  # as exp_scripts/common_tiny_cpu.sh
    "RAY_enable_metrics_collection": "0",
}


def _split(arg: str) -> tuple[str, str]:
    key, _, value = arg.partition("=")
    return key, value


def swap_overrides(argv: list[str], values: dict[str, str], local_ray: bool) -> tuple[list[str], list[tuple]]:
    """The recipe's overrides with :data:`SWAPS` replaced and :data:`ADDITIONS` appended.

    Args:
        argv: the recipe's hydra overrides, in order.
        values: fills the ``{model}`` / ``{steps}`` placeholders.
        local_ray: add :data:`LOCAL_RAY` (veRL starts a one-node Ray itself).

    Returns:
        (new overrides, table rows ``(key, recipe value or None, rehearsal value)``).

    Raises:
        ValueError: a swapped key the recipe no longer sets, or an added key it now sets (the
        rehearsal would silently stop matching the recipe).
    """
    recipe = dict(_split(a) for a in argv)
    missing = [k for k in SWAPS if k not in recipe]
    if missing:
        raise ValueError(f"the recipe no longer sets {missing}; update SWAPS in {Path(__file__).name}")
    added = {**ADDITIONS, **(LOCAL_RAY if local_ray else {})}
    clash = [k for k in added if k.lstrip("+") in recipe]
    if clash:
        raise ValueError(f"the recipe now sets {clash}; move them to SWAPS in {Path(__file__).name}")
    out, rows = [], []
    for arg in argv:
        key, value = _split(arg)
        if key in SWAPS:
            new = SWAPS[key].format(**values)
            rows.append((key, value, new))
            arg = f"{key}={new}"
        out.append(arg)
    for key, value in added.items():
        rows.append((key, None, value.format(**values)))
        out.append(f"{key}={value.format(**values)}")
    return out, rows


def format_table(rows: list[tuple]) -> str:
    width = max(len(r[0]) for r in rows)
    lines = [f"{'key':{width}}  {'recipe':>10}  ->  rehearsal on CPU"]
    for key, recipe, new in rows:
        lines.append(f"{key:{width}}  {'(default)' if recipe is None else recipe:>10}  ->  {new}")
    return "\n".join(lines)


def wrapper_main(argv: list[str]) -> int:
    """Run as the recipe's PYTHON: swap, print, then exec the real interpreter on the trainer."""
    if argv[:2] != ["-m", TRAINER_MODULE]:
        raise SystemExit(f"rehearsal: expected '-m {TRAINER_MODULE} ...' from the recipe, got {argv[:2]}")
    values = {"model": os.environ["REHEARSAL_MODEL"], "steps": os.environ["REHEARSAL_STEPS"]}
    local_ray = not os.environ.get("RAY_ADDRESS")
    overrides, rows = swap_overrides(argv[2:], values, local_ray)
    print("CPU rehearsal: settings swapped or added (everything else is the recipe's own)", flush=True)
    print(format_table(rows), flush=True)
    record = os.environ.get("REHEARSAL_RECORD")
    if record:
        Path(record).write_text("\n".join(argv[2:]) + "\n")
    os.environ.update(ENV)
    python = os.environ["REHEARSAL_PYTHON"]
    os.execv(python, [python, "-m", TRAINER_MODULE, *overrides])
    return 1  # not reached


def prepare_inputs(out: Path, python: str) -> dict[str, Path]:
    """Tiny model, training parquet (data/prepare_train.py) and eval parquet (data/prepare_eval.py)."""
    model, data = out / "tiny_model", out / "data"
    sample = REPO / "data" / "sample"
    subprocess.run([python, "-m", "luffy.tiny", str(model), "--corpus", str(sample / "openr1_sample.jsonl")],
                   check=True, cwd=REPO)
    if not (data / "train.parquet").is_file():
        subprocess.run([python, "data/prepare_train.py", "--input", str(sample / "openr1_sample.jsonl"),
                        "--output_dir", str(data), "--no_progress"], check=True, cwd=REPO)
    val = data / "valid.eval.parquet"
    if not val.is_file():
        subprocess.run([python, "data/prepare_eval.py", "--input", str(sample / "eval_sample.jsonl"),
                        "--output", str(val)], check=True, cwd=REPO)
    return {"model": model, "data": data, "val": val}


def write_sft_checkpoint(model: Path, ckpt_dir: Path, step: int = SFT_STEP) -> Path:
    """``model`` (an HF folder) as veRL's SFT trainer leaves it with ``hf_model`` saved; returns the HF folder.

    ``CKPT_DIR/latest_checkpointed_iteration.txt`` names the step; ``CKPT_DIR/global_step_N/huggingface/``
    holds the whole HF model (config, weights, tokenizer), beside the sharded files veRL also writes.
    """
    hf_dir = ckpt_dir / f"global_step_{step}" / "huggingface"
    if hf_dir.exists():
        shutil.rmtree(hf_dir)
    shutil.copytree(model, hf_dir)
    (ckpt_dir / "latest_checkpointed_iteration.txt").write_text(str(step))
    return hf_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--script", default="train.sh", choices=SCRIPTS, help="recipe in exp_scripts/")
    parser.add_argument("--out", default="/tmp/luffy_rehearsal", help="inputs, checkpoints, metrics, log")
    parser.add_argument("--steps", type=int, default=2, help="training steps")
    parser.add_argument("--nnodes", type=int, default=1, help="NNODES for the recipe (>1 needs RAY_ADDRESS)")
    parser.add_argument("--print-swaps", action="store_true", help="print the swap table and exit")
    parser.add_argument("overrides", nargs="*", help="extra hydra overrides, passed to the recipe")
    args = parser.parse_args(argv)
    if args.print_swaps:
        rows = [(k, "(recipe)", v) for k, v in SWAPS.items()] + [(k, None, v) for k, v in ADDITIONS.items()]
        print(format_table(rows + [(k, None, v) for k, v in LOCAL_RAY.items()]))
        return 0
    if args.nnodes > 1 and not os.environ.get("RAY_ADDRESS"):
        parser.error("--nnodes > 1 needs RAY_ADDRESS of a running Ray cluster with that many nodes")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    inputs = prepare_inputs(out, sys.executable)
    extra_env = {}
    if args.script == "train_sft_rl.sh":  # the recipe loads the SFT checkpoint itself; the swap keeps it
        inputs["model"] = write_sft_checkpoint(inputs["model"], out / "sft_checkpoints")
        extra_env["SFT_CKPT"] = str(out / "sft_checkpoints")
    wrapper = out / "python"
    this = shlex.quote(str(Path(__file__).resolve()))
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {this} --as-python "$@"\n')
    wrapper.chmod(0o755)
    env = dict(
        os.environ,
        PYTHON=str(wrapper),
        REHEARSAL_PYTHON=sys.executable,
        REHEARSAL_MODEL=str(inputs["model"]),
        REHEARSAL_STEPS=str(args.steps),
        REHEARSAL_RECORD=str(out / "recipe_overrides.txt"),
        DATA_DIR=str(inputs["data"]),
        VAL_FILE=str(inputs["val"]),
        CKPT_DIR=str(out / "checkpoints"),
        VERL_FILE_LOGGER_PATH=str(out / "metrics.jsonl"),
        NNODES=str(args.nnodes),
        **extra_env,
    )
    cmd = ["bash", str(REPO / "exp_scripts" / args.script), *args.overrides]
    print("running:", " ".join(shlex.quote(c) for c in cmd), flush=True)
    return subprocess.run(cmd, cwd=REPO, env=env).returncode


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--as-python":
        sys.exit(wrapper_main(sys.argv[2:]))
    sys.exit(main())
