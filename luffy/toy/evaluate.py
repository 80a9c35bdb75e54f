"""Sampling, log-probabilities and held-out metrics of a toy policy, with plain transformers.

Shared by the in-process training loop (:mod:`luffy.toy.lab`) and the check of the real trainer's saved
weights, so both are measured the same way. Answers are scored with the project's scorer
(``luffy.scoring``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from luffy.toy.task import DATA_SOURCE, Problem, format_trace, prompt_messages

METRICS = ("id_greedy", "id_pass8", "id_sampled", "entropy", "trace_logprob", "retention_greedy",
           "transfer_greedy")
"""Keys of :func:`evaluate`'s result."""


def load_policy(path: str | Path, tokenizer_path: str | Path | None = None):
    """(model, tokenizer) in float32 eval mode; the tokenizer from ``tokenizer_path`` (default ``path``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path or path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype="float32")
    model.eval()
    return model, tokenizer


class Prompts:
    """Token ids of each problem's chat prompt (cached) and left-padded batches of them."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._cache: dict[Problem, list[int]] = {}

    def ids(self, p: Problem) -> list[int]:
        if p not in self._cache:
            text = self.tokenizer.apply_chat_template(prompt_messages(p), add_generation_prompt=True, tokenize=False)
            self._cache[p] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._cache[p]

    def batch(self, problems: list[Problem]):
        """``(input_ids, attention_mask)``, both ``(B, P)``, left-padded."""
        import torch

        rows = [self.ids(p) for p in problems]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r)
            attn[i, width - len(r):] = 1
        return ids, attn

    def trace_ids(self, p: Problem) -> list[int]:
        """The correct trace's token ids + EOS."""
        return self.tokenizer(format_trace(p), add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]


def sample(model, prompts: Prompts, problems: list[Problem], *, num_samples: int, max_new_tokens: int,
           greedy: bool = False) -> tuple[list[list[int]], float]:
    """``num_samples`` responses per problem (problem-major; temperature 1, no top-k/top-p, or greedy),
    each as token ids up to and including the first EOS, and the mean entropy (nats) of the policy's
    next-token distribution over those tokens. Draws from torch's global generator."""
    import torch

    tok = prompts.tokenizer
    ids, attn = prompts.batch(problems)
    sampling = {"do_sample": False} if greedy else {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0}
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=attn, **sampling, num_return_sequences=num_samples,
                             max_new_tokens=max_new_tokens, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, output_logits=True, return_dict_in_generate=True)
    new = out.sequences[:, ids.shape[1]:]  # (B * num_samples, L)
    is_eos = (new == tok.eos_token_id).long()
    live = (is_eos.cumsum(dim=1) - is_eos) == 0  # (B * num_samples, L): up to and including the first EOS
    logp = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1)  # (B * num_samples, L, V)
    entropy = -(logp.exp() * logp).sum(-1)  # (B * num_samples, L)
    mean_entropy = float((entropy * live).sum() / live.sum().clamp(min=1))
    lengths = live.sum(dim=1).tolist()
    return [new[i, :n].tolist() for i, n in enumerate(lengths)], mean_entropy


def response_logprobs(model, prompts: Prompts, problems: list[Problem], responses: list[list[int]], width: int):
    """Per-token log-probabilities of ``responses[i]`` after ``problems[i]``'s prompt.

    Returns:
        ``(log_prob, mask)``, both ``(B, width)``: ``log_prob`` differentiable (zero off the mask),
        ``mask`` 1 on the response tokens (responses longer than ``width`` are cut).
    """
    import torch

    pad = prompts.tokenizer.pad_token_id
    p_ids, p_attn = prompts.batch(problems)  # (B, P)
    r_ids = torch.full((len(responses), width), pad, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(responses), width), dtype=torch.long)
    for i, r in enumerate(responses):
        r = r[:width]
        r_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    ids = torch.cat([p_ids, r_ids], dim=1)  # (B, P + T)
    attn = torch.cat([p_attn, mask], dim=1)
    positions = (attn.cumsum(dim=1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=attn, position_ids=positions).logits  # (B, P + T, V)
    P = p_ids.shape[1]
    logp = torch.log_softmax(logits[:, P - 1 : P - 1 + width].float(), dim=-1)  # (B, T, V): predicts r_t
    picked = logp.gather(-1, r_ids.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return picked * mask, mask


def correct(responses: list[list[int]], problems: list[Problem], tokenizer, per_problem: int) -> list[bool]:
    """Whether each response's boxed answer is right (responses problem-major, ``per_problem`` each)."""
    from luffy.scoring import is_correct

    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    return [is_correct(DATA_SOURCE, t, str(problems[i // per_problem].answer)) for i, t in enumerate(texts)]


def trace_logprob(model, prompts: Prompts, problems: list[Problem]) -> float:
    """Mean over ``problems`` of ``sum_t log p(trace_t | prompt, trace_<t)`` (the correct trace then EOS)."""
    import torch

    traces = [prompts.trace_ids(p) for p in problems]
    with torch.no_grad():
        logp, _ = response_logprobs(model, prompts, problems, traces, max(map(len, traces)))
    return float(logp.sum()) / len(problems)


@dataclass(frozen=True)
class EvalSettings:
    k: int = 8
    """samples per problem for pass@k and the sampled accuracy"""
    max_new_tokens: int = 64


def evaluate(model, prompts: Prompts, held_out: dict[str, list[Problem]], seed: int,
             settings: EvalSettings = EvalSettings()) -> dict[str, float]:
    """The held-out metrics of :data:`METRICS`: ID greedy accuracy, pass@k and mean sampled accuracy
    (temperature 1), the mean entropy of those samples, the ID trace log-prob, and the greedy accuracy
    on the retention and transfer splits. Sampling is seeded with ``seed``."""
    import torch

    tok, k, m = prompts.tokenizer, settings.k, settings.max_new_tokens
    out = {}
    for split in ("id", "retention", "transfer"):
        problems = held_out[split]
        greedy, _ = sample(model, prompts, problems, num_samples=1, max_new_tokens=m, greedy=True)
        out[f"{split}_greedy"] = sum(correct(greedy, problems, tok, 1)) / len(problems)
    problems = held_out["id"]
    torch.manual_seed(seed)
    sampled, entropy = sample(model, prompts, problems, num_samples=k, max_new_tokens=m)
    ok = correct(sampled, problems, tok, k)
    out["id_pass8"] = sum(any(ok[i * k : (i + 1) * k]) for i in range(len(problems))) / len(problems)
    out["id_sampled"] = sum(ok) / len(ok)
    out["entropy"] = entropy
    out["trace_logprob"] = trace_logprob(model, prompts, problems)
    return {key: out[key] for key in METRICS}
