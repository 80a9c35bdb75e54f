"""CPU rehearsals of the GPU recipes (exp_scripts/rehearse_cpu.py), run through the recipe scripts themselves.

- ``train.sh``: 2 steps with the recipe's dynamic batch size, remove-padding and checkpointing, the
  flash-attn -> sdpa fallback and the worker's fp32 log-probs, validation (before training and at the
  end) on a ``prepare_eval.py`` parquet with per-``data_source`` metrics, no wandb configured;
- ``train_sft_rl.sh`` (on-policy GRPO from an SFT checkpoint, written here in veRL's SFT output layout) with
  ``NNODES=2`` on a two-node Ray cluster on this machine (the node IP Ray detects) that this test starts
  (its own temp dir and ports) and stops: 1 step, no targets, no validation, ranks on both nodes, no Ray
  process left (one run covers the hand-off and the multi-node command, to keep CI short);
- ``train_rl_sft_loss.sh``: 1 step of the SFT multitask loss through LUFFY's worker.

The other recipes' command lines (``train_on_policy.sh``, and both baselines' settings) are recorded and
composed without training.

The swap logic itself (what is replaced, what is refused) is checked without training.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from _limits import END_TO_END_S

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "exp_scripts" / "rehearse_cpu.py"


def _module():
    spec = importlib.util.spec_from_file_location("rehearse_cpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rehearse = _module()


def _child_env(**extra: str) -> dict[str, str]:
    """This environment without wandb keys, a Ray address, or Ray's auth mode.

    Any earlier in-process ``ray.init`` leaves ``RAY_AUTH_MODE=token`` in this process's environment; the
    runs below live in their own HOME (no token there), so they must not inherit that mode.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB", "RAY_ADDRESS", "RAY_AUTH"))}
    env.update(extra)
    return env


def _recipe_overrides(script: str, tmp_path: Path, **env) -> list[str]:
    """The recipe's own override list, recorded by a PYTHON that only writes its argv."""
    record = tmp_path / "argv.txt"
    fake = tmp_path / "record_python"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {record}\n")
    fake.chmod(0o755)
    clean = _child_env(PYTHON=str(fake), HOME=str(tmp_path), CKPT_DIR=str(tmp_path / "ckpt"), **env)
    subprocess.run(["bash", str(REPO_ROOT / "exp_scripts" / script)], env=clean, check=True, cwd=REPO_ROOT)
    argv = record.read_text().splitlines()
    assert argv[:2] == ["-m", rehearse.TRAINER_MODULE]
    return argv[2:]


def test_swaps_replace_only_listed_keys_of_the_recipe(tmp_path):
    recipe = _recipe_overrides("train.sh", tmp_path)
    swapped, rows = rehearse.swap_overrides(recipe, {"model": "/m", "steps": "2"}, local_ray=True)
    before, after = dict(a.split("=", 1) for a in recipe), dict(a.split("=", 1) for a in swapped)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == set(rehearse.SWAPS) - {k for k, v in rehearse.SWAPS.items() if before[k] == v}
    assert after["actor_rollout_ref.rollout.name"] == "hf_cpu" and before["actor_rollout_ref.rollout.name"] == "vllm"
    assert after["actor_rollout_ref.actor.use_dynamic_bsz"] == "true"  # the recipe's, untouched
    assert set(after) - set(before) == set(rehearse.ADDITIONS) | set(rehearse.LOCAL_RAY)
    assert len(rows) == len(rehearse.SWAPS) + len(rehearse.ADDITIONS) + len(rehearse.LOCAL_RAY)
    # safe defaults of the recipe itself: no wandb without a key, metrics file under CKPT_DIR
    assert before["trainer.logger"] == "[console,file]"
    metrics_file = before["+ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH"]
    assert metrics_file.startswith(str(tmp_path / "ckpt") + "/metrics_") and metrics_file.endswith(".jsonl")
    recipe_key = _recipe_overrides("train.sh", tmp_path, WANDB_API_KEY="k" * 40)
    assert dict(a.split("=", 1) for a in recipe_key)["trainer.logger"] == "[console,file,wandb]"


def _compose_recipe(overrides: list[str]):
    from _compose import compose_luffy

    from luffy.mix_src.config_check import check_luffy_config
    from luffy.mix_src.original_keys import translate_overrides

    cfg = compose_luffy(*translate_overrides(overrides))
    check_luffy_config(cfg)
    return cfg


def test_baseline_recipes_compose_with_their_settings(tmp_path):
    on_policy = _compose_recipe(_recipe_overrides("train_on_policy.sh", tmp_path))
    assert on_policy.actor_rollout_ref.rollout.n_prefix == 0
    sft_loss = _compose_recipe(_recipe_overrides("train_rl_sft_loss.sh", tmp_path, SFT_LOSS_COEF="0.5"))
    actor = sft_loss.actor_rollout_ref.actor
    assert (actor.use_sft_multitask_loss, actor.sft_loss_coef, actor.off_policy_reshape) == (True, 0.5, "no_reshape")
    assert sft_loss.algorithm.adv_estimator == "grpo_split" and sft_loss.actor_rollout_ref.rollout.n_prefix == 1
    assert sft_loss.actor_rollout_ref.rollout.min_prefix_ratio == 1.0 and actor.loss_remove_token_mean is True
    # SFT then RL: SFT_CKPT as train_sft.sh leaves it (CKPT_DIR), or one of its steps, gives the HF folder
    model = tmp_path / "hf"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"")
    sft_dir = tmp_path / "sft"
    hf_dir = rehearse.write_sft_checkpoint(model, sft_dir, step=7)
    assert hf_dir == sft_dir / "global_step_7" / "huggingface"
    for sft_ckpt in (sft_dir, sft_dir / "global_step_7", hf_dir):
        recipe = _recipe_overrides("train_sft_rl.sh", tmp_path, SFT_CKPT=str(sft_ckpt))
        cfg = _compose_recipe(recipe)
        assert cfg.actor_rollout_ref.model.path == str(hf_dir)
    assert cfg.actor_rollout_ref.rollout.n_prefix == 0 and cfg.actor_rollout_ref.actor.loss_remove_clip is False
    assert cfg.algorithm.adv_estimator == "grpo"
    assert cfg.data.train_files == "data/openr1_complement/train.parquet"


def test_train_sh_defaults_pass_the_memory_estimate_on_8x80gb(tmp_path):
    """train.sh as a user starts it (Qwen2.5-Math-7B's sizes at MODEL_PATH) on eight 80 GB cards: no refusal;
    without its optimizer offload the rollout phase would be refused."""
    from test_gpu_budget import H100_GIB, QWEN_MATH_7B

    from luffy.mix_src import gpu_preflight as gp

    model = tmp_path / "Qwen2.5-Math-7B-16k"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(QWEN_MATH_7B))
    h100 = gp.DeviceFacts("2.11.0+cu130", "13.0", True, 8, "580.95.05", H100_GIB, "NVIDIA H100 80GB HBM3")
    cfg = _compose_recipe(_recipe_overrides("train.sh", tmp_path, MODEL_PATH=str(model)))
    assert cfg.actor_rollout_ref.actor.strategy == "fsdp2" and cfg.actor_rollout_ref.ref.strategy == "fsdp2"
    gp.check_gpu_run(cfg, h100, {}, 10**13, log=lambda line: None)
    no_offload = _compose_recipe(_recipe_overrides("train.sh", tmp_path, MODEL_PATH=str(model), OPTIM_OFFLOAD="false"))
    with pytest.raises(ValueError, match="during rollout is estimated at"):
        gp.check_gpu_run(no_offload, h100, {}, 10**13, log=lambda line: None)


def test_sft_rl_refuses_a_checkpoint_without_an_hf_model(tmp_path):
    step = tmp_path / "sft" / "global_step_3"
    step.mkdir(parents=True)
    (step / "model_world_size_1_rank_0.pt").write_bytes(b"")  # veRL's shards only, no huggingface/ weights
    (tmp_path / "sft" / "latest_checkpointed_iteration.txt").write_text("3\n")
    env = _child_env(PYTHON="false", HOME=str(tmp_path), SFT_CKPT=str(tmp_path / "sft"))
    proc = subprocess.run(["bash", str(REPO_ROOT / "exp_scripts" / "train_sft_rl.sh")], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: SFT_CKPT={tmp_path / 'sft'}: no HF model") and str(step) in lines[0]
    assert "python -m verl.model_merger merge --backend fsdp" in lines[0]


def test_swaps_refuse_a_drifted_recipe():
    with pytest.raises(ValueError, match="no longer sets"):
        rehearse.swap_overrides(["data.train_batch_size=128"], {"model": "m", "steps": "1"}, local_ray=True)
    recipe = [f"{k}=x" for k in rehearse.SWAPS] + ["trainer.device=cuda"]
    with pytest.raises(ValueError, match="now sets"):
        rehearse.swap_overrides(recipe, {"model": "m", "steps": "1"}, local_ray=True)


def _nul_separated(path: Path) -> list[str]:
    return [item for item in path.read_text().split("\0") if item]


def test_environment_and_local_ray_settings_are_those_of_the_tiny_cpu_runs(tmp_path):
    """rehearse_cpu.py's ENV and LOCAL_RAY repeat what exp_scripts/common_tiny_cpu.sh sets: the variables it
    exports (values at their defaults) and the Ray settings of a local one-node cluster in CPU_ARGS."""
    common = REPO_ROOT / "exp_scripts" / "common_tiny_cpu.sh"
    shell = (f'env -0 > {tmp_path}/before; source {common}; env -0 > {tmp_path}/after; '
             f'printf "%s\\0" "${{CPU_ARGS[@]}}" > {tmp_path}/args')
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}  # no inherited value hides a default
    subprocess.run(["bash", "-c", shell], env=base, check=True, cwd=REPO_ROOT, timeout=120)
    before, after = (dict(v.split("=", 1) for v in _nul_separated(tmp_path / n)) for n in ("before", "after"))
    exported = {k: v for k, v in after.items() if before.get(k) != v and k not in ("_", "LUFFY_RAY_TMP")}
    assert exported == rehearse.ENV
    args = _nul_separated(tmp_path / "args")
    assert all(f"{k}={v}" in args for k, v in rehearse.LOCAL_RAY.items()), args


def _run(tmp_path: Path, *args: str, env: dict | None = None, timeout: int = END_TO_END_S) -> tuple[Path, str]:
    out = tmp_path / "run"
    clean = _child_env(HOME=str(tmp_path), **(env or {}))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args],
        cwd=REPO_ROOT, env=clean, capture_output=True, text=True, timeout=timeout,
    )
    log = proc.stdout + proc.stderr
    (tmp_path / "rehearsal.log").write_text(log)
    assert proc.returncode == 0, log[-6000:]
    return out, log


def _metrics(out: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    merged: dict[int, dict] = {}
    for row in rows:
        merged.setdefault(row["step"], {}).update(row["data"])
    return merged


def _eval_sources() -> set[str]:
    rows = (REPO_ROOT / "data" / "sample" / "eval_sample.jsonl").read_text().splitlines()
    return {json.loads(r)["data_source"] for r in rows if r.strip()}


@pytest.mark.slow
def test_train_sh_rehearsal_two_steps_dynamic_bsz_and_eval_validation(tmp_path):
    out, log = _run(tmp_path, "--script", "train.sh", "--steps", "2")
    assert "CPU rehearsal: settings swapped" in log and "hf_cpu" in log
    assert "[luffy] flash-attn is not installed: the actor uses attn_implementation=sdpa" in log
    assert "[luffy] no flash-attn cross-entropy: actor log-probs come from fp32 logits, chunked" in log  # the worker
    recorded = dict(a.split("=", 1) for a in (out / "recipe_overrides.txt").read_text().splitlines())
    assert recorded["actor_rollout_ref.actor.use_dynamic_bsz"] == "true"
    assert recorded["actor_rollout_ref.actor.strategy"] == "fsdp2"  # the recipe's own engine, not swapped
    assert recorded["actor_rollout_ref.actor.fsdp_config.optimizer_offload"] == "true"
    assert recorded["data.val_files"].endswith("valid.eval.parquet")
    metrics = _metrics(out)
    train_steps = [s for s, m in metrics.items() if "actor/pg_loss" in m]
    assert train_steps == [1, 2]
    for step in train_steps:
        m = metrics[step]
        assert math.isfinite(m["actor/pg_loss"]) and math.isfinite(m["actor/grad_norm"])
        assert m["luffy/off_policy_sample_share"] == pytest.approx(1 / 8)  # recipe: n_prefix 1 of n 8
        # remove-padding with sdpa: the actor's log-probs agree with the rollout server's
        assert m["training/rollout_probs_diff_max"] < 0.05
    val_keys = {k for m in metrics.values() for k in m if k.startswith("val-core/")}
    sources = {k.split("/")[1] for k in val_keys}
    assert sources == _eval_sources(), sorted(val_keys)
    assert 0 in metrics and any(k.startswith("val-core/") for k in metrics[0])  # val_before_train


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("", 0))  # free on every interface: the nodes listen on the node IP
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


WORKER_PORTS_FROM = 10000


class LocalTwoNodeCluster:
    """Two ``ray start --block`` nodes on this machine with this test's temp dir and free ports.

    Nothing here touches another Ray instance: no default ports, no ``/tmp/ray``, stop by own PIDs.
    """

    def __init__(self, env: dict[str, str]):
        self.temp_dir = tempfile.mkdtemp(prefix="lr9_", dir="/tmp")  # short: Ray's socket paths
        self.env = env
        self.procs: list[subprocess.Popen] = []
        self.gcs_port = _free_ports(1)[0]
        # Ray rewrites a 127.0.0.1 --address into the node IP it detects, so the nodes, the address and the
        # run's driver all use that IP: no node registers under one address and dials another.
        self.ip = self._ray("from ray._private.services import get_node_ip_address as f; print(f())").strip()
        self.address = f"{self.ip}:{self.gcs_port}"

    def _ray(self, code: str, *args: str) -> str:
        proc = subprocess.run([sys.executable, "-c", code, *args], env=self.env, capture_output=True, text=True,
                              timeout=120)
        return proc.stdout if proc.returncode == 0 else ""

    def _start(self, head: bool) -> None:
        ports = _free_ports(7)
        # 200 worker ports a node (a run starts ~15 workers; Ray refuses new ones when its range is used up,
        # and the run then waits), head and worker node side by side, below Linux's ephemeral range
        worker_base = WORKER_PORTS_FROM + (self.gcs_port % 50) * 400 + (0 if head else 200)
        args = [
            str(Path(sys.executable).parent / "ray"), "start", "--block", "--disable-usage-stats",
            f"--node-ip-address={self.ip}", f"--temp-dir={self.temp_dir}",
            "--num-cpus=12", "--num-gpus=1", "--object-store-memory=200000000",
            f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
            f"--dashboard-agent-listen-port={ports[2]}", f"--dashboard-agent-grpc-port={ports[3]}",
            f"--runtime-env-agent-port={ports[4]}", f"--metrics-export-port={ports[5]}",
            f"--min-worker-port={worker_base}", f"--max-worker-port={worker_base + 199}",
        ]
        if head:
            args += ["--head", f"--port={self.gcs_port}", "--include-dashboard=false",
                     f"--ray-client-server-port={ports[6]}"]
        else:
            args += [f"--address={self.address}"]
        log = open(Path(self.temp_dir) / f"{'head' if head else 'worker'}.log", "w")  # noqa: SIM115
        self.procs.append(subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def node_ids(self, expected: int, timeout: float = 120) -> list[str]:
        code = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR');"
                "print(' '.join(n['NodeID'] for n in ray.nodes() if n['Alive']))")
        deadline = time.monotonic() + timeout
        while True:
            ids = self._ray(code, self.address).split()
            exited = [p.args[-1] for p in self.procs if p.poll() is not None]
            if len(ids) == expected or exited or time.monotonic() > deadline:
                return ids
            time.sleep(2)

    def start(self) -> list[str]:
        """The head, then (once it answers) the worker node; the alive node IDs."""
        self._start(head=True)
        if len(self.node_ids(expected=1)) != 1:
            return []
        self._start(head=False)
        return self.node_ids(expected=2)

    def logs(self, chars: int = 3000) -> str:
        """The tails of both ``ray start`` logs and of every raylet/GCS error log, for a failure message."""
        paths = sorted(Path(self.temp_dir).glob("*.log")) + sorted(Path(self.temp_dir).glob("session_*/logs/*.err"))
        tails = [f"--- {p.name}: {p.read_text(errors='replace')[-chars:]}" for p in paths if p.stat().st_size]
        return "\n".join(tails)

    def stop(self) -> list[int]:
        """SIGTERM our two ``ray start`` processes (worker first); returns PIDs of leftovers, killed."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (left := _processes_mentioning(self.temp_dir)) and time.monotonic() < deadline:
            time.sleep(1)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return left

    def remove_temp_dir(self) -> None:
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_rl_with_sft_loss_recipe_one_step(tmp_path):
    out, log = _run(tmp_path, "--script", "train_rl_sft_loss.sh", "--steps", "1",
                    "trainer.val_before_train=false", "trainer.test_freq=-1")  # validation: the train.sh test
    m = _metrics(out)[1]
    assert m["luffy/off_policy_sample_share"] == pytest.approx(1 / 8)  # n_prefix 1 of n 8, whole traces
    for key in ("actor/pg_loss", "actor/sft_loss", "actor/on_pg_loss", "actor/grad_norm"):
        assert math.isfinite(m[key]), key
    # a random model's NLL of the trace tokens: about log(vocabulary) per token, far from 0
    assert m["actor/sft_loss"] > 1.0
    assert "actor/off_pg_loss" not in m


@pytest.mark.slow
def test_sft_then_rl_recipe_on_two_nodes(tmp_path):
    """train_sft_rl.sh from an SFT checkpoint, NNODES=2, on two Ray nodes of this machine: 1 step (no
    validation), a rank per node."""
    env = _child_env()
    env.update(rehearse.ENV)  # the nodes' workers get the same environment as a one-node run's
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env["HOME"] = str(tmp_path)  # Ray's auth token (~/.ray) shared by the nodes and the run's driver only
    cluster = LocalTwoNodeCluster(env)
    try:
        node_ids = cluster.start()
        assert len(node_ids) == 2, f"cluster did not come up at {cluster.address}: {node_ids}\n{cluster.logs()}"
        out, log = _run(
            tmp_path, "--script", "train_sft_rl.sh", "--steps", "1", "--nnodes", "2",
            "trainer.val_before_train=false", "trainer.test_freq=-1",  # validation: the train.sh test
            env={"RAY_ADDRESS": cluster.address},
        )
    finally:
        leftovers = cluster.stop()
    placed = dict(re.findall(r"\[luffy\] gloo rank (\d+) of 2 on ray node (\w+)", log))
    assert set(placed) == {"0", "1"}, log[-4000:]
    assert set(placed.values()) == set(node_ids), (placed, node_ids)
    recorded = dict(a.split("=", 1) for a in (out / "recipe_overrides.txt").read_text().splitlines())
    sft_model = out / "sft_checkpoints" / f"global_step_{rehearse.SFT_STEP}" / "huggingface"
    assert recorded["actor_rollout_ref.model.path"] == str(sft_model)  # resolved by the recipe from SFT_CKPT
    m = _metrics(out)[1]
    assert m["luffy/off_policy_sample_share"] == 0  # N_PREFIX=0: plain GRPO
    assert math.isfinite(m["actor/pg_loss"]) and math.isfinite(m["actor/grad_norm"])
    assert leftovers == [], f"Ray processes left behind: {leftovers}"
    cluster.remove_temp_dir()  # kept (with Ray's logs) when the test failed


@pytest.mark.slow  # runs the script in a subprocess
def test_sft_recipe_composes_in_verls_sft_config_and_reads_prepare_sft_output(tmp_path):
    """train_sft.sh is not trained on the CPU (docs/gpu.md: veRL's sft_trainer process group); its command
    line is: recorded through TORCHRUN, composed against veRL's own sft_trainer_engine config, and its
    data settings load a data/prepare_sft.py parquet in veRL's MultiTurnSFTDataset."""
    from hydra import compose, initialize_config_dir
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    from luffy.tiny import build_tokenizer

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    sample = REPO_ROOT / "data" / "sample" / "openr1_sample.jsonl"
    subprocess.run([sys.executable, "data/prepare_train.py", "--input", str(sample), "--output_dir", str(data_dir),
                    "--no_progress"], check=True, cwd=REPO_ROOT, capture_output=True)
    subprocess.run([sys.executable, "data/prepare_sft.py", "--input", str(data_dir / "train.parquet"), "--output",
                    str(data_dir / "sft_train.parquet")], check=True, cwd=REPO_ROOT, capture_output=True)
    record = tmp_path / "argv.txt"
    fake = tmp_path / "record_torchrun"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {record}\n")
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env.update(TORCHRUN=str(fake), HOME=str(tmp_path), DATA_DIR=str(data_dir), CKPT_DIR=str(tmp_path / "ckpt"))
    subprocess.run(["bash", str(REPO_ROOT / "exp_scripts" / "train_sft.sh")], env=env, check=True, cwd=REPO_ROOT)
    argv = record.read_text().splitlines()
    module_at = argv.index("-m")
    assert argv[module_at + 1] == "verl.trainer.sft_trainer"
    overrides = argv[module_at + 2:]
    import verl

    config_dir = Path(verl.__file__).parent / "trainer" / "config"
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        cfg = compose(config_name="sft_trainer_engine", overrides=overrides)  # every key exists in veRL's
    assert cfg.data.train_files == str(data_dir / "sft_train.parquet")
    assert list(cfg.trainer.logger) == ["console", "file"]
    assert cfg.data.use_dynamic_bsz is True
    # each global_step_N also holds the whole model as an HF folder (huggingface/), train_sft_rl.sh's input
    assert "hf_model" in cfg.checkpoint.save_contents and "hf_model" not in cfg.checkpoint.load_contents
    tokenizer = build_tokenizer(tmp_path / "tok")
    data_cfg = dict(cfg.data)
    data_cfg["max_length"] = 4096  # the tiny tokenizer splits finer than Qwen's
    dataset = MultiTurnSFTDataset(cfg.data.train_files, tokenizer, data_cfg)
    item = dataset[0]
    assert 0 < int(item["loss_mask"].sum()) < len(item["input_ids"])  # loss on the trace only
