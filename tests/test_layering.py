"""Imports run one way: data preparation and tokenisation sit below the trainer, the trainer below the
CPU platform package (which extends LUFFY's worker, never the reverse)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import luffy

LUFFY_DIR = Path(luffy.__file__).parent
# package (or module) -> luffy packages it must not import, at module level or inside a function
FORBIDDEN = {
    "luffy/tokens.py": ("luffy.mix_src", "luffy.cpu", "luffy.data"),
    "luffy/data": ("luffy.mix_src", "luffy.cpu"),
    "luffy/scoring": ("luffy.mix_src", "luffy.cpu", "luffy.data"),
    "luffy/mix_src": ("luffy.cpu",),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


@pytest.mark.parametrize("where", sorted(FORBIDDEN))
def test_imports_run_one_way(where: str):
    root = LUFFY_DIR.parent / where
    files = [root] if root.suffix == ".py" else sorted(root.rglob("*.py"))
    bad = [
        f"{path.relative_to(LUFFY_DIR.parent)}:{line} imports {name}"
        for path in files
        for line, name in _imports(path)
        if name.startswith(FORBIDDEN[where])
    ]
    assert not bad, bad


def test_cpu_package_extends_luffys_worker():
    import luffy.plugin  # noqa: F401  (registers the CPU worker)
    from luffy.cpu.worker import CpuMixActorRolloutRefWorker
    from luffy.mix_src.mix_worker import MixActorRolloutRefWorker
    from luffy.mix_src.worker_registry import actor_worker_class

    assert actor_worker_class("cpu") is CpuMixActorRolloutRefWorker
    assert issubclass(CpuMixActorRolloutRefWorker, MixActorRolloutRefWorker)
    assert actor_worker_class("cuda") is MixActorRolloutRefWorker
