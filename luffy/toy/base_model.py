"""The toy's base policy: a tiny Qwen2 model pre-trained in plain torch on a noisy-carry mixture.

:func:`build_base_model` trains the byte-level BPE tokenizer of ``luffy.tiny`` on the task's text,
builds the random-weight model, then runs a short next-token pre-training on prompt + trace pairs of
:func:`luffy.toy.task.pretraining_example`: correct carry-free traces, carry problems whose carries are
kept only with probability ``q``, borrow-free subtractions and carry-free 4-digit additions. The result
solves the carry-free problems and writes a carry only some of the time: a partly competent base.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from luffy.toy.task import Problem, format_trace, pretraining_example, prompt_messages, random_problem

TOKENIZER_VOCAB = 300
"""Small enough that BPE learns no digit-pair token: every digit stays its own token."""


def encode_pair(tokenizer, problem: Problem, trace: str) -> tuple[list[int], int]:
    """Token ids of the chat prompt + ``trace`` + EOS, and the prompt's length in tokens."""
    prompt = tokenizer.apply_chat_template(prompt_messages(problem), add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(trace, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + response_ids, len(prompt_ids)


def pad_pairs(pairs: list[tuple[list[int], int]], pad_id: int):
    """``(input_ids, attention_mask, labels)``, each ``(B, T)``, right-padded; labels -100 off the response."""
    import torch

    width = max(len(ids) for ids, _ in pairs)
    input_ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), width), -100, dtype=torch.long)
    attention = torch.zeros((len(pairs), width), dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(pairs):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
        attention[row, : len(ids)] = 1
    return input_ids, attention, labels


def pretrain(model, tokenizer, exclude: set[Problem], *, q: float, steps: int, batch_size: int, lr: float,
             seed: int, format_only: bool = False, progress: bool = True) -> list[float]:
    """Next-token pre-training on response tokens of the mixture; returns the loss per step.

    Cosine-decayed AdamW; each step draws ``batch_size`` fresh examples (seeded by ``seed``), never
    a problem in ``exclude``.
    """
    import torch
    from tqdm import tqdm

    rng = random.Random(f"pretrain-{seed}")
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.05)
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc="pre-training", disable=not progress, mininterval=10):
        pairs = [encode_pair(tokenizer, *pretraining_example(rng, q, exclude, format_only)) for _ in range(batch_size)]
        input_ids, attention, labels = pad_pairs(pairs, tokenizer.pad_token_id)
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def tokenizer_corpus(seed: int = 0) -> list[str]:
    """Questions and traces of every kind with their digits stripped: BPE then learns merges of the
    template's words only, never a digit pair (every digit stays its own token)."""
    rng = random.Random(seed)
    sample = [random_problem(rng, kind) for kind in ("add3", "sub3", "add4") for _ in range(30)]
    return [re.sub(r"[0-9]", "", text) for p in sample for text in (format_trace(p), p.question)]


def build_base_model(out_dir: str | Path, exclude: set[Problem], *, q: float, hidden_size: int = 64,
                     num_layers: int = 2, steps: int = 2000, batch_size: int = 64, lr: float = 3e-3, seed: int = 0,
                     format_only: bool = False, progress: bool = True) -> dict[str, float]:
    """Tokenizer + pre-trained model saved in ``out_dir``; returns the first and last losses.

    ``exclude`` (the held-out problems) is never shown.
    """
    import torch

    from luffy.tiny import build_model, build_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(out_dir, corpus=tokenizer_corpus(seed), vocab_size=TOKENIZER_VOCAB)
    model = build_model(None, tokenizer, hidden_size=hidden_size, num_layers=num_layers, seed=seed)
    losses = pretrain(model, tokenizer, exclude, q=q, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                      format_only=format_only, progress=progress)
    model.save_pretrained(str(out_dir))
    return {"first_loss": losses[0], "last_loss": losses[-1]} if losses else {}
