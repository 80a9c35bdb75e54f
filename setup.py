"""Install luffy: LUFFY (off-policy guided RL for reasoning) on top of veRL 0.9.1."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
DEV_TOOLS = ("pytest", "hypothesis", "ruff")


def _requirements() -> list[str]:
    lines = (HERE / "requirements.txt").read_text().splitlines()
    reqs = [ln.split("#")[0].strip() for ln in lines]
    return [r for r in reqs if r and not r.startswith(DEV_TOOLS)]


setup(
    name="luffy",
    version="0.1.0",
    description="LUFFY: learning to reason under off-policy guidance, as a veRL 0.9.1 extension",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["luffy", "luffy.*"]),
    package_data={"luffy": ["mix_src/config/*.yaml", "cpu/config/*.yaml"]},
    install_requires=_requirements(),
    extras_require={
        "dev": ["pytest==9.2.0", "hypothesis==6.170.17", "ruff==0.17.6"],
        # GPU stack pinned by verl 0.9.1's own `vllm` extra: it needs torch 2.11, never installed on CPU.
        "gpu": ["verl[vllm]==0.9.1", "vllm==0.24.0", "flash-attn==2.8.3"],
    },
    entry_points={"verl.plugins": ["luffy = luffy.plugin"]},
)
