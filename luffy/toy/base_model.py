"""The toy's base policy: a tiny Qwen2 model pre-trained on the task's *format only*.

:func:`build_base_model` trains the byte-level BPE tokenizer of ``luffy.tiny`` on the task's text,
builds the random-weight model, then runs a short plain-torch next-token pre-training on
prompt + format-only trace pairs (:func:`luffy.toy.task.format_only_trace`: right layout, operands
copied, random digit sums). The result writes well-formed answers that are almost never right, the
position of a weak base model: on-policy GRPO's reward starts near 0.
"""

from __future__ import annotations

import random
from pathlib import Path

from luffy.toy.task import Problem, format_only_trace, format_trace, prompt_messages

TOKENIZER_VOCAB = 320
"""Small enough that BPE learns no digit-pair token: every digit stays its own token."""


def encode_pair(tokenizer, problem: Problem, trace: str) -> tuple[list[int], int]:
    """Token ids of the chat prompt + ``trace`` + EOS, and the prompt's length in tokens."""
    prompt = tokenizer.apply_chat_template(prompt_messages(problem), add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(trace, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + response_ids, len(prompt_ids)


def pretrain_format(model, tokenizer, problems: list[Problem], steps: int, batch_size: int, lr: float,
                    seed: int, progress: bool = True) -> list[float]:
    """Next-token pre-training on response tokens of format-only traces; returns the loss per step.

    Each step draws ``batch_size`` problems and fresh random digit sums (seeded by ``seed``).
    """
    import torch
    from tqdm import tqdm

    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc="format pre-training", disable=not progress, mininterval=5):
        batch = [encode_pair(tokenizer, p, format_only_trace(p, rng)) for p in rng.choices(problems, k=batch_size)]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((batch_size, width), tokenizer.pad_token_id, dtype=torch.long)  # (B, T)
        labels = torch.full((batch_size, width), -100, dtype=torch.long)  # (B, T): -100 = no loss
        attention = torch.zeros((batch_size, width), dtype=torch.long)  # (B, T)
        for row, (ids, n_prompt) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
            attention[row, : len(ids)] = 1
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def build_base_model(out_dir: str | Path, pool: list[Problem], *, hidden_size: int = 64, num_layers: int = 2,
                     steps: int = 300, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
                     progress: bool = True) -> dict[str, float]:
    """Tokenizer + format-pre-trained model saved in ``out_dir``; returns the first and last losses.

    Only ``pool`` problems' prompts are seen (with random sums, :func:`luffy.toy.task.format_pool`),
    never a true sum.
    """
    import torch

    from luffy.tiny import build_model, build_tokenizer

    torch.manual_seed(seed)
    sample = pool[:: max(1, len(pool) // 50)]
    corpus = [format_trace(p) for p in sample] + [p.question for p in sample]
    tokenizer = build_tokenizer(out_dir, corpus=corpus, vocab_size=TOKENIZER_VOCAB)
    model = build_model(None, tokenizer, hidden_size=hidden_size, num_layers=num_layers, seed=seed)
    losses = pretrain_format(model, tokenizer, pool, steps, batch_size, lr, seed, progress)
    model.save_pretrained(str(out_dir))
    return {"first_loss": losses[0], "last_loss": losses[-1]} if losses else {}
