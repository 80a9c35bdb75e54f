"""Install luffy: LUFFY (off-policy guided RL for reasoning) on top of veRL 0.9.1.

``install_requires`` holds version *ranges* that both stacks satisfy: the CPU stack locked in
``requirements.txt`` (torch 2.13 CPU build; README's first command and CI install it with
``pip install -r requirements.txt -e .``) and the GPU stack of the ``gpu`` extra (veRL 0.9.1's own
``vllm`` extra: torch 2.11, transformers 5.9, vLLM 0.24 with its fastapi range). Exact pins live in
the lock file only, so ``pip install -e ".[gpu]"`` resolves on its own.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

INSTALL_REQUIRES = [
    "verl==0.9.1",
    "torch>=2.11,<2.14",  # GPU: 2.11 (vLLM 0.24); CPU lock: 2.13
    "transferqueue>=0.1.11,<0.2",
    "ray[default]>=2.48",
    "transformers>=5.9,<5.11,!=5.6.0",  # veRL 0.9.1's range; its vllm extra pins 5.9.0
    "tokenizers>=0.22,<0.23",
    "math-verify>=0.9,<0.10",
    "pandas>=2.2",
    "pyarrow>=19",
    "hydra-core>=1.3,<1.4",
    "omegaconf>=2.3,<2.4",
    "datasets>=3.0",
    "cachetools>=5.0",
    "fastapi>=0.115",  # vLLM 0.24 needs <0.137; the CPU lock has 0.165
    "uvicorn>=0.30",
    "tqdm>=4.66",
    "matplotlib>=3.8",
]

setup(
    name="luffy",
    version="0.1.0",
    description="LUFFY: learning to reason under off-policy guidance, as a veRL 0.9.1 extension",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["luffy", "luffy.*"]),
    package_data={"luffy": ["mix_src/config/*.yaml", "cpu/config/*.yaml"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "dev": ["pytest==9.2.0", "pytest-xdist==3.8.0", "hypothesis==6.170.17", "ruff==0.17.6"],
        # GPU stack as veRL 0.9.1's own `vllm` extra pins it (torch 2.11, transformers 5.9, vLLM 0.24).
        # flash-attn is not in it: the index has no binary wheel of 2.8.3, only a source build that needs
        # nvcc; without it the recipe trains with sdpa attention (exp_scripts/train.sh says which).
        "gpu": ["verl[vllm]==0.9.1", "vllm==0.24.0"],
        # veRL's name for flash-attn 2.8.3 built for CUDA 13 / torch 2.11: a source build (nvcc, and
        # `pip install --no-build-isolation`), or a prebuilt wheel of that build installed by file.
        "flash-attn": ["verl[flash-attn-cu130torch211]==0.9.1"],
    },
    entry_points={
        "verl.plugins": ["luffy = luffy.plugin"],
        # pre-start checks of platform packages, run by luffy.mix_src.preflight before veRL is imported
        "luffy.preflight": ["cpu_vllm = luffy.cpu.vllm_support:preflight_check"],
    },
)
