"""Hang guards for the subprocesses of the end-to-end tests, and the one way they start the tiny CPU run.

A guard only has to turn a hang into a failure with a log before CI's own 30-minute limit. In CI each
end-to-end run shares the 2 cores with the other pytest worker and vLLM's tests: the embedded run took
~270 s alone, 814 s in one CI run and over 900 s in another, so the guard sits well above that.
"""

END_TO_END_S = 1500


def run_tiny_cpu(out, *overrides: str, **settings) -> None:
    """``exp_scripts/train_tiny_cpu.sh`` into ``out`` with ``settings`` as its environment variables (values
    turned to strings) and ``overrides`` as hydra overrides; fails the test with the log's tail."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHON=sys.executable, OUT_DIR=str(out), **{k: str(v) for k, v in settings.items()})
    proc = subprocess.run(
        ["bash", str(repo / "exp_scripts" / "train_tiny_cpu.sh"), *overrides],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=END_TO_END_S,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]


def step_metrics(path) -> dict[int, dict]:
    """veRL's ``file`` metrics log as {step: metrics}, lines without data left out."""
    import json
    from pathlib import Path

    return {r["step"]: r["data"] for r in map(json.loads, Path(path).read_text().splitlines()) if r.get("data")}
