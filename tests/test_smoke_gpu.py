"""The short GPU run (``exp_scripts/smoke_gpu.sh``): the tiny model for a few LUFFY steps with vLLM.

Behind the ``gpu`` marker and skipped without a CUDA device, so CI (CPU only) never runs it; on a GPU
node run it with ``python -m pytest -m gpu tests``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
STEPS = 2

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (and vLLM for its rollout)"),
]


def test_smoke_gpu_trains_and_logs_every_step(tmp_path):
    env = dict(os.environ, OUT_DIR=str(tmp_path), STEPS=str(STEPS))
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "exp_scripts" / "smoke_gpu.sh")],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the script logs to the console only: veRL's console logger prints "step:N - key:value - ..."
    assert f"step:{STEPS} -" in proc.stdout
    assert "luffy/off_policy_sample_share" in proc.stdout
