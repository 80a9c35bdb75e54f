"""The floor of one tiny training step: the same work as the trainer's step, in plain transformers.

One process, no Ray, no veRL: take ``batch`` prompts of the training parquet (chat template applied as
the dataset applies it), sample ``generated`` responses per prompt with ``model.generate`` (temperature
1, up to ``response_len`` new tokens), append ``n - generated`` copies of the row's target trace
(LUFFY's off-policy slots), score every response with :mod:`luffy.scoring`, compute the token
log-probs of all ``batch x n`` sequences once without gradients, then one forward/backward over them
(a policy-gradient loss with group-normalised advantages) and one AdamW step. Each phase is timed.

:func:`measure_floor` is what ``bench_step.py`` prints beside each trainer run. Run alone:

    python benchmarks/step_floor.py MODEL_DIR DATA_DIR/train.parquet --batch 4 --n 4 --generated 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

PHASES = ("gen", "reward", "old_log_prob", "update_actor")


@dataclass(frozen=True)
class FloorWork:
    """What one step does: ``batch`` prompts x ``n`` sequences, of which ``generated`` sampled per prompt."""

    batch: int
    n: int
    generated: int
    response_len: int
    prompt_len: int = 512


def _rows(parquet: Path, count: int) -> list[dict]:
    import pandas as pd

    frame = pd.read_parquet(parquet).head(count)
    if len(frame) < count:
        raise SystemExit(f"{parquet} has {len(frame)} rows; the floor needs {count}")
    return frame.to_dict("records")


def _token_logprobs(model, ids: torch.Tensor, mask: torch.Tensor, start: int) -> torch.Tensor:
    """Log-probs (B, T - start) of ``ids[:, start:]`` under ``model``; ids/mask (B, T)."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, start - 1 : -1].float()  # (B, R, V)
    return torch.log_softmax(logits, dim=-1).gather(-1, ids[:, start:, None]).squeeze(-1)


def _one_step(model, tokenizer, optimizer, rows: list[dict], work: FloorWork) -> dict[str, float]:
    from luffy.scoring import score_responses
    from luffy.scoring.ground_truth import ground_truth_text
    from luffy.tokens import pick_target

    times: dict[str, float] = {}
    t = time.perf_counter()
    texts = [
        tokenizer.apply_chat_template(list(r["prompt"]), add_generation_prompt=True, tokenize=False) for r in rows
    ]
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    width = enc["input_ids"].shape[1]
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        out = model.generate(
            **enc,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            max_new_tokens=work.response_len,
            num_return_sequences=work.generated,
            pad_token_id=pad,
        )  # (B * generated, width + R)
    responses = [out[i, width:].tolist() for i in range(out.shape[0])]
    responses = [[tok for tok in seq if tok != pad] for seq in responses]
    groups: list[list[list[int]]] = []
    for i, row in enumerate(rows):
        trace = tokenizer(pick_target(row["target"]), add_special_tokens=False)["input_ids"]
        own = responses[i * work.generated : (i + 1) * work.generated]
        groups.append(own + [trace[: work.response_len]] * (work.n - work.generated))
    times["gen"] = time.perf_counter() - t

    t = time.perf_counter()
    scores = []
    for row, group in zip(rows, groups):
        truth = ground_truth_text(row["reward_model"]["ground_truth"])
        texts_out = tokenizer.batch_decode(group, skip_special_tokens=True)
        scores += [float(s.correct) for s in score_responses(row["data_source"], texts_out, truth)]
    times["reward"] = time.perf_counter() - t

    # [left-padded prompt | right-padded response] for all B * n sequences
    prompt_ids = enc["input_ids"].repeat_interleave(work.n, dim=0)  # (B*n, P)
    prompt_mask = enc["attention_mask"].repeat_interleave(work.n, dim=0)
    flat = [seq for group in groups for seq in group]
    resp = torch.full((len(flat), max(map(len, flat))), pad, dtype=torch.long)  # (B*n, R)
    resp_mask = torch.zeros_like(resp)
    for i, seq in enumerate(flat):
        resp[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        resp_mask[i, : len(seq)] = 1
    ids, mask = torch.cat([prompt_ids, resp], 1), torch.cat([prompt_mask, resp_mask], 1)

    t = time.perf_counter()
    with torch.no_grad():
        old = _token_logprobs(model, ids, mask, width)  # (B*n, R)
    times["old_log_prob"] = time.perf_counter() - t

    t = time.perf_counter()
    rewards = torch.tensor(scores).view(work.batch, work.n)
    adv = (rewards - rewards.mean(-1, keepdim=True)).flatten()[:, None]  # (B*n, 1)
    new = _token_logprobs(model, ids, mask, width)
    ratio = torch.exp(new - old)
    m = resp_mask.float()
    loss = -(ratio * adv * m).sum() / m.sum()
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    times["update_actor"] = time.perf_counter() - t
    return times


def measure_floor(
    model_dir: Path, parquet: Path, work: FloorWork, steps: int = 4, seed: int = 0, threads: int = 1
) -> dict[str, float]:
    """Warm medians (seconds) of each phase and ``step`` over ``steps`` steps after one warm-up step.

    ``threads``: torch intra-op threads; 1 by default, as every process of the tiny CPU runs has
    (``OMP_NUM_THREADS=1`` in ``common_tiny_cpu.sh``), so floor and trainer get the same per-process budget.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.01)
    rows = _rows(parquet, work.batch)
    runs = [_one_step(model, tokenizer, optimizer, rows, work) for _ in range(steps + 1)][1:]
    result = {p: statistics.median(r[p] for r in runs) for p in PHASES}
    result["step"] = statistics.median(sum(r.values()) for r in runs)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path, help="HF checkpoint folder (the tiny model)")
    parser.add_argument("parquet", type=Path, help="training parquet (prompt, target, reward_model columns)")
    parser.add_argument("--batch", type=int, default=4, help="prompts per step")
    parser.add_argument("--n", type=int, default=4, help="sequences per prompt")
    parser.add_argument("--generated", type=int, default=None, help="sampled sequences per prompt (default --n)")
    parser.add_argument("--response_len", type=int, default=128, help="max new tokens")
    parser.add_argument("--steps", type=int, default=4, help="warm steps measured after one warm-up step")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1, as the trainer's)")
    args = parser.parse_args(argv)
    work = FloorWork(args.batch, args.n, args.generated or args.n, args.response_len)
    result = measure_floor(args.model_dir, args.parquet, work, args.steps, threads=args.threads)
    print(f"threads {torch.get_num_threads()}; " + "  ".join(f"{k} {v:.3f} s" for k, v in result.items()))


if __name__ == "__main__":
    main()
