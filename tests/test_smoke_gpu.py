"""The short GPU run (``exp_scripts/smoke_gpu.sh``): the tiny model for a few LUFFY steps with vLLM.

The run itself is behind the ``gpu`` marker and skipped without a CUDA device, so CI (CPU only) never runs
it; on a GPU node run it with ``python -m pytest -m gpu tests``. The tiny model's sizes are checked here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from luffy.tiny import GPU_HIDDEN_SIZE, NUM_ATTENTION_HEADS

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "exp_scripts" / "smoke_gpu.sh"
STEPS = 2
# head sizes of vLLM's GPU attention backends: FlashInfer's list (the narrowest), FlashAttention's rule
FLASHINFER_HEAD_SIZES = (64, 128, 256, 512)


def test_smoke_model_head_size_is_one_every_vllm_gpu_backend_accepts(tmp_path):
    default = re.search(r'TINY_HIDDEN_SIZE="\$\{TINY_HIDDEN_SIZE:-(\d+)\}"', SCRIPT.read_text())
    assert default and int(default.group(1)) == GPU_HIDDEN_SIZE
    subprocess.run(
        [sys.executable, "-m", "luffy.tiny", str(tmp_path), "--hidden_size", default.group(1)],
        cwd=REPO_ROOT, check=True, capture_output=True,
    )
    config = json.loads((tmp_path / "config.json").read_text())
    head = config["hidden_size"] // config["num_attention_heads"]
    assert config["hidden_size"] >= 128 and config["num_attention_heads"] == NUM_ATTENTION_HEADS
    assert head in FLASHINFER_HEAD_SIZES and head % 8 == 0 and head <= 256


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (and vLLM for its rollout)")
def test_smoke_gpu_trains_and_logs_every_step(tmp_path):
    env = dict(os.environ, OUT_DIR=str(tmp_path), STEPS=str(STEPS))
    proc = subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the script logs to the console only: veRL's console logger prints "step:N - key:value - ..."
    assert f"step:{STEPS} -" in proc.stdout
    assert "luffy/off_policy_sample_share" in proc.stdout
