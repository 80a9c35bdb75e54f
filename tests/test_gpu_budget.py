"""Per-GPU memory and checkpoint disk estimates (``luffy.mix_src.gpu_budget``) on the recipe's numbers:
Qwen2.5-Math-7B (7.6B parameters) on 8 x 80 GB and 8 x 141 GB cards, with and without offload."""

from __future__ import annotations

import pytest
import torch

from luffy.mix_src import gpu_budget as gb

# Qwen2.5-Math-7B with the 16k context LUFFY trains (its config.json's sizes)
QWEN_MATH_7B = {
    "model_type": "qwen2",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "tie_word_embeddings": False,
    "max_position_embeddings": 16384,
    "rope_theta": 40000.0,
}
H100_GIB = 81559 / 1024  # nvidia-smi's total for an H100 80GB HBM3: 79.6 GiB
H200_GIB = 143771 / 1024  # H200 141GB: 140.4 GiB
GIB = 2**30


def _count_in_transformers(config: dict) -> int:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    with torch.device("meta"):  # sizes only, no memory
        model = Qwen2ForCausalLM(Qwen2Config(**config))
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def qwen() -> gb.ModelShape:
    return gb.model_shape(QWEN_MATH_7B)


def test_parameter_count_equals_transformers_own(qwen, tiny_model_dir):
    assert qwen.n_params == _count_in_transformers(QWEN_MATH_7B)
    assert 7.6e9 < qwen.n_params < 7.7e9
    import json

    tiny = json.loads((tiny_model_dir / "config.json").read_text())
    from transformers import AutoModelForCausalLM

    real = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    # tied embeddings: the lm_head is the embedding matrix, counted once by parameters()
    assert gb.model_shape(tiny).n_params == sum(p.numel() for p in real.parameters())
    assert gb.model_shape({"hidden_size": 8}) is None  # not a config this formula sizes


def _run(**kw) -> gb.GpuRun:
    return gb.GpuRun(n_gpus=8, gpu_memory_utilization=kw.pop("util", 0.8), tokens_per_gpu=32768, **kw)


def test_rollout_on_80gb_without_offload_is_over_the_card(qwen):
    est = gb.rollout_phase(qwen, _run(), H100_GIB)
    per_gpu = qwen.n_params / 8 / GIB
    assert est.parts[f"vLLM (0.8 x {H100_GIB:.1f})"] == pytest.approx(0.8 * H100_GIB)  # 63.7 GiB
    assert est.parts["actor fp32 params"] == pytest.approx(4 * per_gpu)  # 3.5 GiB
    assert est.parts["Adam state"] == pytest.approx(8 * per_gpu)  # 7.1 GiB
    assert est.total_gib == pytest.approx(0.8 * H100_GIB + 12 * per_gpu + gb.CONTEXT_GIB)  # 76.4 GiB
    assert est.total_gib < H100_GIB and not est.fits  # under the card, but not under the 5% headroom


@pytest.mark.parametrize(
    "kw",
    [{"optimizer_offload": True}, {"util": 0.7}, {"param_offload": True, "optimizer_offload": True}],
    ids=["optimizer_offload", "util_0.7", "both_offloads"],
)
def test_rollout_on_80gb_fits_with_offload_or_a_smaller_vllm_share(qwen, kw):
    est = gb.rollout_phase(qwen, _run(**kw), H100_GIB)
    assert est.fits and est.total_gib <= H100_GIB * 0.95
    if kw.get("optimizer_offload"):
        assert est.parts["Adam state"] == 0.0


@pytest.mark.parametrize("offload", [False, True])
def test_141gb_cards_have_room_with_or_without_offload(qwen, offload):
    run = _run(optimizer_offload=offload, param_offload=offload)
    assert gb.rollout_phase(qwen, run, H200_GIB).fits
    assert gb.training_phase(qwen, run, H200_GIB).fits


def test_training_phase_of_the_recipe(qwen):
    est = gb.training_phase(qwen, _run(), H100_GIB)
    tokens, h, inter, layers, vocab = 32768, 3584, 18944, 28, 152064
    acts = (layers * tokens * h * 2 + tokens * (8 * h + 3 * inter) * 2 + 4 * tokens * vocab * 2 + 2 * 1024 * vocab * 4)
    assert est.parts["activations (32768 tokens)"] == pytest.approx(acts / GIB)
    assert 55 < est.total_gib < 70 and est.fits  # the 55-67 GiB
    # veRL loads the Adam state back for the whole update: offloading it does not lower this phase
    assert gb.training_phase(qwen, _run(optimizer_offload=True), H100_GIB).total_gib == est.total_gib
    assert gb.training_phase(qwen, _run(offload_policy=True), H100_GIB).parts["Adam state"] == 0.0
    assert not gb.training_phase(qwen, _run(gradient_checkpointing=False), H100_GIB).fits


def test_largest_settings_that_fit_are_on_the_edge(qwen):
    util = gb.max_gpu_memory_utilization(qwen, _run(), H100_GIB)
    assert util == pytest.approx(0.75)
    assert gb.rollout_phase(qwen, _run(util=util), H100_GIB).fits
    assert not gb.rollout_phase(qwen, _run(util=util + 0.05), H100_GIB).fits
    tokens = gb.max_tokens_per_gpu(qwen, _run(), H100_GIB)
    assert tokens % 1024 == 0 and tokens >= 32768
    fits = gb.training_phase(qwen, gb.GpuRun(8, 0.8, tokens), H100_GIB).fits
    over = gb.training_phase(qwen, gb.GpuRun(8, 0.8, tokens + 1024), H100_GIB).fits
    assert fits and not over


def test_sharding_over_fsdp_size(qwen):
    whole = gb.rollout_phase(qwen, _run(fsdp_size=1), H200_GIB).parts["Adam state"]
    assert whole == pytest.approx(8 * gb.rollout_phase(qwen, _run(), H200_GIB).parts["Adam state"])


def test_checkpoint_size_and_how_many_veRL_keeps(qwen):
    one = gb.checkpoint_bytes(qwen.n_params, ["model", "optimizer", "extra"])
    assert one == qwen.n_params * 12 and 91e9 < one < 92e9  # fp32 params + Adam state
    assert gb.checkpoint_bytes(qwen.n_params, ["model", "optimizer", "extra", "hf_model"]) == qwen.n_params * 14
    assert [gb.checkpoints_on_disk(k) for k in (None, 0, 1, 2, 5)] == [None, None, 2, 2, 5]
