"""Tiny, offline model and tokenizer for tests and the embedded CPU run.

Nothing here downloads: the tokenizer is a byte-level BPE trained in about a second on a built-in
corpus (plus any text passed in), with a Qwen2.5-style chat template; the model is a random-weight
2-layer Qwen2 causal LM built from a config. Byte-level BPE makes ``decode(encode(text)) == text``
hold for any string, which the off-policy tokenisation relies on.

Command line: ``python -m luffy.tiny OUT_DIR [--corpus FILE ...] [--hidden_size N]`` writes both into
``OUT_DIR``. The default hidden size 64 (head size 16) keeps the CPU tests fast; vLLM's CPU attention
needs a head size of at least 32, hence ``--hidden_size 128`` (:data:`VLLM_CPU_HIDDEN_SIZE`) there, and
the GPU smoke run uses 256 (:data:`GPU_HIDDEN_SIZE`, head size 64).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path

from luffy.model_folder import read_model_config
from luffy.prompts import LUFFY_SYSTEM_PROMPT

PAD_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, "<|im_start|>", EOS_TOKEN]
THINK_TOKENS = ["<think>", "</think>"]
NUM_ATTENTION_HEADS = 4
DEFAULT_HIDDEN_SIZE = 64
VLLM_CPU_HIDDEN_SIZE = 128
"""Smallest hidden size whose head size (hidden / 4 heads = 32) vLLM's CPU attention accepts."""
GPU_HIDDEN_SIZE = 256
"""Head size 64: accepted by vLLM's GPU attention backends (FlashAttention: multiples of 8 up to 256;
FlashInfer: 64, 128, 256, 512; ROCm AITER: 64, 128, 256), where 32 is not by FlashInfer."""

# Qwen2.5's template, reduced to plain messages: a system turn if given, each message framed by
# <|im_start|>role\n ... <|im_end|>\n, and "<|im_start|>assistant\n" as the generation prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_BUILTIN_CORPUS = [
    LUFFY_SYSTEM_PROMPT,
    "<think>\nOkay, let me work through this problem step by step.\n</think>\n\n",
    "The final answer is $\\boxed{42}$. So the fraction is \\frac{1}{7} and x = 6.",
    "What is $74 \\times 68$? Solve for $x$: $3x + 20 = 38$. Simplify the fraction $\\frac{4}{28}$.",
    "What is the area of a circle of radius 5? The area is $25\\pi$. Answer: C. ANSWER: A",
    "Let me double-check this carefully. That confirms it. 0 1 2 3 4 5 6 7 8 9 + - * / = ( ) [ ] { }",
]


def build_tokenizer(out_dir: str | Path | None = None, corpus: Iterable[str] = (), vocab_size: int = 512):
    """Train a byte-level BPE tokenizer offline and wrap it as a ``PreTrainedTokenizerFast``.

    Args:
        out_dir: if given, the tokenizer is saved there (``AutoTokenizer.from_pretrained`` loads it).
        corpus: extra training text (e.g. the sample data's problems and traces).
        vocab_size: BPE vocabulary size including the 256 byte symbols and the special tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*_BUILTIN_CORPUS, *corpus], trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    # The think tags are whole tokens (as in Qwen/DeepSeek-R1 vocabularies) but not "special":
    # decoding with skip_special_tokens must keep them.
    hf.add_tokens(THINK_TOKENS, special_tokens=False)
    hf.chat_template = CHAT_TEMPLATE
    if out_dir is not None:
        hf.save_pretrained(str(out_dir))
    return hf


def build_model(
    out_dir: str | Path | None,
    tokenizer,
    hidden_size: int = DEFAULT_HIDDEN_SIZE,
    num_layers: int = 2,
    seed: int = 0,
):
    """Random-weight Qwen2-style causal LM sized for CPU tests; saved to ``out_dir`` when given.

    Four attention heads (two key/value heads): the head size is ``hidden_size // 4``.
    """
    if hidden_size % (2 * NUM_ATTENTION_HEADS):
        raise ValueError(f"hidden_size={hidden_size} must be a multiple of {2 * NUM_ATTENTION_HEADS}")
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=NUM_ATTENTION_HEADS,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation="sdpa",
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if out_dir is not None:
        model.save_pretrained(str(out_dir))
    return model


def _read_corpus(paths: Iterable[str | Path]) -> list[str]:
    """Text fields of JSONL files (problems, answers, traces) as extra tokenizer training text."""
    texts: list[str] = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            for value in row.values():
                if isinstance(value, str):
                    texts.append(value)
                elif isinstance(value, list):
                    texts.extend(v for v in value if isinstance(v, str))
    return texts


def build_tiny_checkpoint(
    out_dir: str | Path,
    corpus_files: Iterable[str | Path] = (),
    seed: int = 0,
    hidden_size: int = DEFAULT_HIDDEN_SIZE,
) -> Path:
    """Write tokenizer + random model into ``out_dir`` (skipped if already complete); return the path.

    Raises:
        ValueError: a complete checkpoint already in ``out_dir`` has another hidden size.
    """
    out = Path(out_dir)
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        found = (read_model_config(out) or {}).get("hidden_size")
        if found != hidden_size:
            raise ValueError(
                f"{out} already holds a tiny model with hidden_size={found}, not {hidden_size}; "
                "use another folder or delete it"
            )
        return out
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out, corpus=_read_corpus(corpus_files))
    build_model(out, tokenizer, hidden_size=hidden_size, seed=seed)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="folder to write config, weights and tokenizer into")
    parser.add_argument("--corpus", nargs="*", default=[], help="JSONL files whose text trains the tokenizer")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument(
        "--hidden_size",
        type=int,
        default=DEFAULT_HIDDEN_SIZE,
        help=f"hidden size, 4 heads (default {DEFAULT_HIDDEN_SIZE}; vLLM on CPU needs >= {VLLM_CPU_HIDDEN_SIZE})",
    )
    args = parser.parse_args(argv)
    if args.hidden_size < 2 * NUM_ATTENTION_HEADS or args.hidden_size % (2 * NUM_ATTENTION_HEADS):
        parser.error(f"--hidden_size must be a positive multiple of {2 * NUM_ATTENTION_HEADS}")
    try:
        path = build_tiny_checkpoint(args.out_dir, args.corpus, seed=args.seed, hidden_size=args.hidden_size)
    except ValueError as err:
        parser.error(str(err))
    print(f"tiny model and tokenizer in {path}")


if __name__ == "__main__":
    main()
