"""The offline tiny tokenizer and model that tests and the embedded CPU run are built on."""

from hypothesis import given, settings
from hypothesis import strategies as st

from luffy.tiny import EOS_TOKEN, PAD_TOKEN, build_tokenizer

TOKENIZER = build_tokenizer(corpus=["<think>\nLet x = 1.\n</think>\n\nThe answer is $\\boxed{1}$."])


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_byte_level_round_trip_on_any_text(text: str) -> None:
    ids = TOKENIZER.encode(text, add_special_tokens=False)
    assert TOKENIZER.decode(ids) == text


def test_chat_template_and_special_tokens() -> None:
    text = TOKENIZER.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    assert TOKENIZER.eos_token == EOS_TOKEN and TOKENIZER.pad_token == PAD_TOKEN
    assert TOKENIZER.eos_token_id != TOKENIZER.pad_token_id
    # Think tags are single tokens and survive skip_special_tokens.
    ids = TOKENIZER.encode("<think>\nhi</think>", add_special_tokens=False)
    assert TOKENIZER.convert_ids_to_tokens(ids[0]) == "<think>"
    assert TOKENIZER.decode(ids, skip_special_tokens=True) == "<think>\nhi</think>"


def test_tiny_checkpoint_loads_and_generates(tiny_model_dir) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.vocab_size == len(tok)
    text = tok.apply_chat_template([{"role": "user", "content": "1+1?"}], add_generation_prompt=True, tokenize=False)
    prompt_ids = torch.tensor([tok.encode(text, add_special_tokens=False)])
    out = model.generate(prompt_ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] <= prompt_ids.shape[1] + 5
