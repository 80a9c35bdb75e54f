"""Held-out checks of a saved toy policy with plain transformers: accuracy and trace log-probability.

Both read the HF weights a run saved (``.../actor/huggingface``) and score with the project's
scorer (``luffy.scoring``), so they do not depend on the trainer that produced the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from luffy.toy.task import DATA_SOURCE, Problem, format_trace, prompt_messages


@dataclass(frozen=True)
class PolicyEval:
    """Held-out results of one policy."""

    greedy_acc: float
    sampled_acc: float
    sample_entropy: float
    """mean next-token entropy (nats) over the policy's own sampled response tokens."""
    trace_logprob: float
    """mean over held-out problems of the summed log-probability of the reference trace + EOS."""


def load_policy(path: str | Path, tokenizer_path: str | Path | None = None):
    """(model, tokenizer) in float32 eval mode; the tokenizer from ``tokenizer_path`` (default ``path``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path or path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype="float32")
    model.eval()
    return model, tokenizer


def trace_logprob(model, tokenizer, problems: list[Problem]) -> float:
    """Mean over ``problems`` of ``sum_t log p(trace_t | prompt, trace_<t)`` (trace then EOS)."""
    import torch

    from luffy.toy.base_model import encode_pair

    total = 0.0
    with torch.no_grad():
        for p in problems:
            ids, n_prompt = encode_pair(tokenizer, p, format_trace(p))
            x = torch.tensor([ids])  # (1, T)
            logp = torch.log_softmax(model(input_ids=x).logits[0, :-1].float(), dim=-1)  # (T-1, V)
            picked = logp.gather(1, x[0, 1:, None])[:, 0]  # (T-1,): log p of token t+1
            total += float(picked[n_prompt - 1 :].sum())
    return total / len(problems)


def generate(model, tokenizer, problems: list[Problem], *, do_sample: bool, num_samples: int, max_new_tokens: int,
             seed: int) -> tuple[list[list[str]], float]:
    """``num_samples`` responses per problem (greedy: 1), decoded without special tokens, and the mean
    entropy (nats) of the policy's next-token distribution over the generated tokens (EOS included)."""
    import torch

    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    prompts = [tokenizer.apply_chat_template(prompt_messages(p), add_generation_prompt=True, tokenize=False)
               for p in problems]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    sampling = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0} if do_sample else {"do_sample": False}
    with torch.no_grad():
        out = model.generate(
            **enc, **sampling, num_return_sequences=num_samples, max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            output_logits=True, return_dict_in_generate=True,
        )
    new = out.sequences[:, enc["input_ids"].shape[1] :]  # (P * num_samples, L)
    logits = torch.stack(out.logits, dim=1).float()  # (P * num_samples, L, V), before any sampling processor
    logp = torch.log_softmax(logits, dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)  # (P * num_samples, L)
    # a position counts up to and including the first EOS
    is_eos = (new == tokenizer.eos_token_id).long()
    live = (is_eos.cumsum(dim=1) - is_eos) == 0  # (P * num_samples, L)
    mean_entropy = float((entropy * live).sum() / live.sum().clamp(min=1))
    texts = tokenizer.batch_decode(new, skip_special_tokens=True)
    return [texts[i * num_samples : (i + 1) * num_samples] for i in range(len(problems))], mean_entropy


def accuracy(responses: list[list[str]], problems: list[Problem]) -> float:
    """Fraction of all responses whose boxed answer the project's scorer accepts."""
    from luffy.scoring import is_correct

    verdicts = [is_correct(DATA_SOURCE, r, str(p.answer)) for p, rs in zip(problems, responses) for r in rs]
    return sum(verdicts) / len(verdicts)


def evaluate_policy(path: str | Path, problems: list[Problem], *, tokenizer_path: str | Path | None = None,
                    num_samples: int = 4, max_new_tokens: int = 48, seed: int = 0) -> PolicyEval:
    """Greedy accuracy, sampled accuracy and entropy (temperature 1, ``num_samples`` per problem) and
    trace log-prob of the weights in ``path`` (tokenizer from ``tokenizer_path``, default ``path``)."""
    model, tokenizer = load_policy(path, tokenizer_path)
    greedy, _ = generate(model, tokenizer, problems, do_sample=False, num_samples=1, max_new_tokens=max_new_tokens,
                         seed=seed)
    sampled, entropy = generate(model, tokenizer, problems, do_sample=True, num_samples=num_samples,
                                max_new_tokens=max_new_tokens, seed=seed)
    return PolicyEval(
        greedy_acc=accuracy(greedy, problems),
        sampled_acc=accuracy(sampled, problems),
        sample_entropy=entropy,
        trace_logprob=trace_logprob(model, tokenizer, problems),
    )
