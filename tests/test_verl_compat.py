"""The drift guard: every veRL method luffy overrides or relies on, and every private veRL attribute it
touches, is a row of ``luffy.verl_compat.TOUCHES`` whose recorded source hash matches installed veRL."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import luffy
import luffy.plugin  # noqa: F401
from luffy import verl_compat
from luffy.verl_compat import TOUCHES, VerlTouch

LUFFY_DIR = Path(luffy.__file__).parent


@pytest.mark.parametrize("touch", TOUCHES, ids=[f"{t.kind}:{t.target.split(':')[1]}" for t in TOUCHES])
def test_verl_source_unchanged(touch: VerlTouch):
    if touch.needs_vllm and not verl_compat.vllm_installed():
        pytest.skip("veRL's vLLM rollout imports only with vLLM installed (CI checks it in .venv-vllm)")
    installed = verl_compat.source_hash(touch.target)
    assert installed == touch.sha, (
        f"veRL changed {touch.target} ({touch.verl_file}), which luffy {touch.kind} in {touch.luffy}: "
        f"source hash {installed}, recorded {touch.sha} for veRL {verl_compat.VERL_VERSION}. Read the new "
        f"source, check that this still holds: {touch.why}; then record the new hash in luffy/verl_compat.py"
    )


def test_drift_check_names_a_changed_row(monkeypatch):
    row = TOUCHES[2]
    changed = dataclasses.replace(row, sha="0" * 12)
    monkeypatch.setattr(verl_compat, "TOUCHES", (TOUCHES[0], changed))
    assert verl_compat.drifted() == [(changed, verl_compat.source_hash(row.target))]


def _luffy_modules():
    for info in pkgutil.walk_packages([str(LUFFY_DIR)], prefix="luffy."):
        if info.name.startswith(("luffy.scoring._mv_worker", "luffy.cpu.main_cpu_ppo", "luffy.mix_src.main_mix_ppo")):
            continue  # entry points (argument parsing at import) define no veRL subclass
        if info.name == "luffy.cpu.vllm_rollout" and not verl_compat.vllm_installed():
            continue  # imports veRL's vLLM rollout (CI checks it in .venv-vllm)
        yield importlib.import_module(info.name)


def test_every_override_of_a_verl_method_is_listed():
    listed = {t.target for t in TOUCHES if t.kind == "override"}
    missing = []
    for module in _luffy_modules():
        for cls in vars(module).values():
            cls = getattr(cls, "__ray_actor_class__", cls)
            if not inspect.isclass(cls) or cls.__module__ != module.__name__:
                continue
            verl_bases = [b for b in cls.__mro__[1:] if b.__module__.startswith("verl.")]
            for name, member in vars(cls).items():
                if not inspect.isfunction(member) or name == "__init_subclass__":
                    continue
                if dataclasses.is_dataclass(cls) and name in ("__init__", "__repr__", "__eq__"):
                    continue  # written by @dataclass
                owner = next((b for b in verl_bases if name in vars(b)), None)
                if owner is None or getattr(vars(owner)[name], "__isabstractmethod__", False):
                    continue  # not a veRL method, or the implementation of an abstract interface
                qual = owner.__qualname__
                if owner.__module__ == "verl.trainer.main_ppo" and qual == "TaskRunnerV1":
                    qual = "TaskRunnerV1.__ray_actor_class__"
                target = f"{owner.__module__}:{qual}.{name}"
                if target not in listed:
                    missing.append(f"{cls.__module__}.{cls.__qualname__}.{name} overrides {target}")
    assert not missing, "overrides of veRL methods missing from luffy/verl_compat.py: " + "; ".join(missing)


# private veRL names that only luffy/verl_compat.py may use
PRIVATE = re.compile(
    r"TRAINER_REGISTRY|EngineRegistry\._engines|_ROLLOUT_REGISTRY|\.keywords\[|transformer_impl\.logprobs_from_logits"
)


def test_private_verl_attributes_are_touched_only_in_verl_compat():
    users = [
        f"{path.relative_to(LUFFY_DIR.parent)}:{n}"
        for path in LUFFY_DIR.rglob("*.py")
        if path.name != "verl_compat.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(line.split("#")[0]) and not line.strip().startswith(("#", '"', "``", "veRL"))
    ]
    assert not users, users


def test_docs_table_lists_every_row():
    page = (LUFFY_DIR.parent / "docs" / "verl-integration.md").read_text()
    missing = [t.target for t in TOUCHES if f"`{t.verl_file}`: `{t.target.split(':')[1]}`" not in page]
    assert not missing, f"rows of luffy/verl_compat.py missing from docs/verl-integration.md: {missing}"
