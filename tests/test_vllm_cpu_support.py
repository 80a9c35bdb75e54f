"""vLLM on CPU, the parts that run without vLLM: the preflight refusal, the tiny model's head size,
``/dev/shm`` segment records and removal, and the CPU defaults of the evaluation engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from multiprocessing import shared_memory
from pathlib import Path

import pytest

from luffy.cpu import shm_segments
from luffy.cpu.vllm_support import INSTALL_COMMAND, check_vllm_rollout_on_cpu, head_size, vllm_cpu_problem

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_head_size_from_config():
    assert head_size({"hidden_size": 128, "num_attention_heads": 4}) == 32
    assert head_size({"hidden_size": 64, "num_attention_heads": 4, "head_dim": 48}) == 48
    assert head_size({"text_config": {"hidden_size": 96, "num_attention_heads": 3}}) == 32
    assert head_size({"hidden_size": 64}) is None


def test_tiny_model_hidden_size_option(tmp_path):
    from luffy.tiny import VLLM_CPU_HIDDEN_SIZE, build_tiny_checkpoint

    out = build_tiny_checkpoint(tmp_path / "m", hidden_size=VLLM_CPU_HIDDEN_SIZE)
    config = json.loads((out / "config.json").read_text())
    assert head_size(config) == 32
    with pytest.raises(ValueError, match="hidden_size=128, not 64"):
        build_tiny_checkpoint(out)  # an existing checkpoint of another size is not silently reused
    proc = subprocess.run(
        [sys.executable, "-m", "luffy.tiny", str(tmp_path / "bad"), "--hidden_size", "20"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "--hidden_size must be a positive multiple of 8" in proc.stderr


@pytest.mark.skipif(vllm_cpu_problem() is None, reason="vLLM's CPU build is installed here")
def test_rollout_vllm_on_cpu_without_vllm_is_one_error_before_ray(tmp_path, monkeypatch):
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    with pytest.raises(ValueError, match="rollout.name=vllm") as err:
        check_vllm_rollout_on_cpu("vllm", tmp_path)
    assert INSTALL_COMMAND in str(err.value) and "\n" not in str(err.value)
    check_vllm_rollout_on_cpu("hf_cpu", tmp_path)  # other rollouts: nothing to check
    monkeypatch.setenv("VERL_PLATFORM", "")
    check_vllm_rollout_on_cpu("vllm", tmp_path)  # a GPU run: vLLM's GPU build is veRL's business


def test_the_check_reaches_luffys_preflight_through_its_entry_point():
    """LUFFY's code never imports luffy.cpu: the check is found in the ``luffy.preflight`` group."""
    from luffy.cpu.vllm_support import preflight_check
    from luffy.mix_src.platform_checks import registered_checks

    assert preflight_check in registered_checks()


@pytest.mark.skipif(vllm_cpu_problem() is None, reason="vLLM's CPU build is installed here")
def test_luffys_preflight_runs_the_registered_check(tmp_path, monkeypatch):
    from _compose import compose_luffy

    from luffy.mix_src.platform_checks import run_platform_checks

    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    with pytest.raises(ValueError, match="rollout.name=vllm on the CPU platform"):
        run_platform_checks(
            compose_luffy("actor_rollout_ref.rollout.name=vllm", f"actor_rollout_ref.model.path={tmp_path}")
        )
    run_platform_checks(
        compose_luffy("actor_rollout_ref.rollout.name=hf_cpu", f"actor_rollout_ref.model.path={tmp_path}")
    )


@pytest.mark.skipif(vllm_cpu_problem() is None, reason="vLLM's CPU build is installed here")
@pytest.mark.slow  # starts the entry point in a subprocess
def test_luffy_entry_point_refuses_vllm_on_cpu_without_it(tiny_model_dir, tmp_path):
    """The LUFFY command line: exit status 2, one error line naming the install command, no Ray."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "data.parquet"  # the data checks run first and need a readable file
    pq.write_table(pa.table({"prompt": ["x"]}), data)
    env = dict(os.environ, VERL_PLATFORM="cpu", LUFFY_DEBUG="0")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "luffy.mix_src.main_mix_ppo",
            f"actor_rollout_ref.model.path={tiny_model_dir}",
            "actor_rollout_ref.rollout.name=vllm",
            "actor_rollout_ref.rollout.n_prefix=0",
            "data.max_prompt_length=64",
            "data.max_response_length=64",
            f"data.train_files={data}",
            f"data.val_files={data}",
            "trainer.logger=[console]",
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=300,
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(errors) == 1 and INSTALL_COMMAND in errors[0], proc.stderr[-3000:]
    assert "ray" not in proc.stdout.lower()


def test_vllm_head_size_refused_on_cpu(tiny_model_dir, monkeypatch):
    """A head size under 32 is refused (when vLLM is installed; otherwise the install error comes first)."""
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    match = "head size 16" if vllm_cpu_problem() is None else INSTALL_COMMAND
    with pytest.raises(ValueError, match=match):
        check_vllm_rollout_on_cpu("vllm", tiny_model_dir)


def _segment(prefix: str = "psm_") -> shared_memory.SharedMemory:
    return shared_memory.SharedMemory(name=f"{prefix}luffytest_{uuid.uuid4().hex[:12]}", create=True, size=4096)


def test_mapped_segments_and_records(tmp_path):
    seg = _segment()
    try:
        assert seg.name in shm_segments.mapped_segments()
        record = tmp_path / "record.txt"
        names = shm_segments.record_tree(os.getpid(), record)
        assert seg.name in names and seg.name in shm_segments.recorded(record)
        # Ray's object store and other names are never recorded
        shm_segments.record(["plasma_abc", "other"], record)
        assert not {"plasma_abc", "other"} & shm_segments.recorded(record)
        # a mapped segment is kept; unmapped, it is removed
        assert shm_segments.remove_unmapped([seg.name]) == []
        seg.close()
        assert shm_segments.remove_unmapped([seg.name]) == [seg.name]
        assert not (shm_segments.SHM_DIR / seg.name).exists()
    finally:
        seg.close()
        try:
            seg.unlink()
        except FileNotFoundError:
            pass


def test_cleanup_waits_for_a_killed_process_then_removes_its_segments(tmp_path):
    """A child creates, maps and records a segment and is killed (as Ray kills vLLM's server); the
    command-line cleanup over the record folder removes the segment and the record file."""
    record = tmp_path / "luffy_vllm_shm_0_test.txt"
    code = (
        "import os, time\n"
        "from multiprocessing import resource_tracker, shared_memory\n"
        "from luffy.cpu import shm_segments\n"
        f"seg = shared_memory.SharedMemory(name='psm_luffytest_{uuid.uuid4().hex[:12]}', create=True, size=4096)\n"
        "resource_tracker.unregister(seg._name, 'shared_memory')  # like vLLM's: nobody unlinks it at exit\n"
        f"shm_segments.record_tree(os.getpid(), {str(record)!r})\n"
        "print(seg.name, flush=True)\n"
        "time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        name = child.stdout.readline().strip()
        assert (shm_segments.SHM_DIR / name).exists()
        removed, total = shm_segments.cleanup([tmp_path])  # still mapped: kept, record kept
        assert (removed, total) == ([], 1) and record.exists()
    finally:
        child.kill()
        child.wait()
    proc = subprocess.run(
        [sys.executable, "-m", "luffy.cpu.shm_segments", str(tmp_path), "--wait", "30"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "removed 1 of 1" in proc.stdout, proc.stderr
    assert not (shm_segments.SHM_DIR / name).exists()
    assert not record.exists()


def test_cpu_engine_kwargs():
    from luffy.data.errors import LuffyDataError
    from luffy.evaluation.engines import CPU_KV_CACHE_GB, vllm_engine_kwargs

    cpu = vllm_engine_kwargs(True, max_model_len=1024, seed=3)
    assert cpu == {
        "tensor_parallel_size": 1,
        "seed": 3,
        "max_model_len": 1024,
        "enforce_eager": True,
        "dtype": "float32",  # as the HF engine on a CPU (vLLM would downcast to bf16)
        "kv_cache_memory_bytes": int(CPU_KV_CACHE_GB * 2**30),
    }
    assert vllm_engine_kwargs(True, kv_cache_gb=0.5)["kv_cache_memory_bytes"] == 2**29
    gpu = vllm_engine_kwargs(False, tensor_parallel_size=2)
    assert "enforce_eager" not in gpu and "kv_cache_memory_bytes" not in gpu and "dtype" not in gpu
    with pytest.raises(LuffyDataError, match="tensor_parallel_size=2"):
        vllm_engine_kwargs(True, tensor_parallel_size=2)


@pytest.mark.slow  # a subprocess that imports veRL
def test_registration_maps_vllm_to_the_cpu_replica_on_the_cpu_platform():
    """In a fresh process with VERL_PLATFORM=cpu, veRL's "vllm" loader is luffy's (not imported yet)."""
    code = (
        "import verl, sys\n"
        "from verl.workers.rollout.replica import RolloutReplicaRegistry\n"
        "loader = RolloutReplicaRegistry._registry['vllm']\n"
        "print(loader.__module__, loader.__name__, 'vllm' in sys.modules)\n"
    )
    env = dict(os.environ, VERL_PLATFORM="cpu", VERL_USE_EXTERNAL_MODULES="luffy.plugin")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["luffy.cpu.registration", "_load_cpu_vllm_replica", "False"]
