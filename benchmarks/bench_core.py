"""Benchmark LUFFY's split GRPO advantage and mixed on/off-policy loss against veRL and a loop reference.

Times, in one run and on the same inputs:

* advantage: ``compute_grpo_outcome_advantage_split`` vs veRL's ``grpo`` (and ``grpo_vectorized``)
  estimators, and a per-sample Python loop;
* loss, forward + backward: ``compute_token_on_off_policy_loss`` (LUFFY recipe: one sequence in eight
  off-policy, ``p_div_p_0.1`` shaping; its hand-written elementwise backward, aggregated by veRL's
  ``agg_loss``) vs veRL's ``vanilla`` PPO loss (token-mean) on the same tensors, the same mixed loss
  written as plain torch ops differentiated by autograd (checked equal first), and a per-token Python
  loop (on a small slice; reported per element and extrapolated).

Examples::

    python benchmarks/bench_core.py --quick
    python benchmarks/bench_core.py --batch 256 --length 4096 --repeats 5
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from luffy.mix_src.advantage import compute_grpo_outcome_advantage_split
from luffy.mix_src.core_algos import compute_token_on_off_policy_loss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_many(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median wall time of each function in milliseconds.

    Calls are interleaved round-robin (one warm-up round first) so that load drifting on a shared
    machine affects every candidate alike.
    """
    for fn in fns.values():
        fn()
    _sync(device)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            _sync(device)
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(v) for name, v in samples.items()}


def make_inputs(batch: int, length: int, group: int, dtype: torch.dtype, device: torch.device, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(batch, length, generator=gen) * 4  # (B, T)
    log_prob = old + torch.randn(batch, length, generator=gen) * 0.1  # (B, T)
    log_prob = log_prob.clamp(max=0.0)
    lengths = torch.randint(length // 4, length + 1, (batch,), generator=gen)  # (B,)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).float()  # (B, T)
    rewards = torch.zeros(batch, length)  # (B, T)
    rewards[torch.arange(batch), lengths - 1] = (torch.rand(batch, generator=gen) < 0.5).float()
    index = np.array([f"uid-{i // group}" for i in range(batch)], dtype=object)  # (B,)
    off = torch.zeros(batch, dtype=torch.bool)  # (B,) one off-policy sample per group, as in LUFFY
    off[group - 1 :: group] = True
    adv, _ = compute_grpo_outcome_advantage_split(rewards, mask, index, off)
    return {
        "old": old.to(device, dtype),
        "log_prob": log_prob.to(device, dtype),
        "adv": adv.to(device, dtype),
        "mask": mask.to(device),
        "rewards": rewards.to(device),
        "index": index,
        "off": off.to(device),
    }


# ---------------------------------------------------------------------------------------------------------
# Loop references (plain Python floats)
# ---------------------------------------------------------------------------------------------------------
def loop_advantage(scores: list[float], index: list[str], epsilon: float = 1e-6) -> list[float]:
    groups: dict[str, list[float]] = {}
    for s, uid in zip(scores, index):
        groups.setdefault(uid, []).append(s)
    out = []
    for s, uid in zip(scores, index):
        vals = groups[uid]
        mean, std = (statistics.mean(vals), statistics.stdev(vals)) if len(vals) > 1 else (0.0, 1.0)
        out.append((s - mean) / (std + epsilon))
    return out


def loop_loss(old, log_prob, adv, mask, off, cliprange=0.2, gamma=0.1):
    """Recipe loss (PPO on-policy, p/(p+gamma) off-policy, token mean) and its gradient, token by token."""
    rows, cols = len(old), len(old[0])
    total, count = 0.0, 0
    grad = [[0.0] * cols for _ in range(rows)]
    for b in range(rows):
        for t in range(cols):
            if mask[b][t] == 0:
                continue
            a, lp = adv[b][t], log_prob[b][t]
            if off[b]:
                p = math.exp(lp)
                total += -a * p / (p + gamma)
                grad[b][t] = -a * p * gamma / (p + gamma) ** 2
            else:
                r = math.exp(max(-20.0, min(20.0, lp - old[b][t])))
                rc = min(max(r, 1 - cliprange), 1 + cliprange)
                if -a * rc > -a * r:
                    total += -a * rc
                else:
                    total += -a * r
                    grad[b][t] = -a * r
            count += 1
    n = max(count, 1)
    return total / n, [[g / n for g in row] for row in grad]


def autograd_loss(old, log_prob, adv, mask, off, cliprange=0.2, gamma=0.1) -> torch.Tensor:
    """The recipe's mixed loss as plain torch ops (autograd backward), aggregated by veRL's ``agg_loss``."""
    from verl.trainer.ppo.core_algos import agg_loss

    lp = log_prob.float()
    neg_adv = -adv.float()
    # on-policy: max(-A r, -A clamp(r, 1 - eps, 1 + eps)), r = exp(clamp(log p - log p_old, -20, 20))
    ratio = (lp - old.float()).clamp(-20.0, 20.0).exp()
    on_loss = torch.maximum(neg_adv * ratio, neg_adv * ratio.clamp(1.0 - cliprange, 1.0 + cliprange))
    # off-policy: -A p / (p + gamma)
    p = lp.exp()
    off_loss = neg_adv * p / (p + gamma)
    tok_loss = torch.where(off[:, None], off_loss, on_loss)
    return agg_loss(loss_mat=tok_loss, loss_mask=mask, loss_agg_mode="token-mean")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1024, help="number of sequences (default 1024)")
    parser.add_argument("--length", type=int, default=8192, help="response length in tokens (default 8192)")
    parser.add_argument("--group", type=int, default=8, help="sequences per prompt group (default 8)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions, median reported (default 5)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="log-prob dtype")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--loop-batch", type=int, default=8, help="sequences for the loop reference")
    parser.add_argument("--loop-length", type=int, default=256, help="tokens for the loop reference")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a busy CPU, multi-threaded kernels stall on starved workers "
        "and timings stop meaning anything; 0: torch default)",
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run: 64 x 512, 3 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.length, args.repeats = 64, 512, 3
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    from verl.trainer.ppo.core_algos import (
        compute_grpo_outcome_advantage,
        compute_grpo_vectorized_outcome_advantage,
        compute_policy_loss_vanilla,
    )
    from verl.workers.config import ActorConfig

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    data = make_inputs(args.batch, args.length, args.group, dtype, device)
    # clip_ratio_c huge: no dual clip, i.e. the same objective as LUFFY's on-policy part
    actor_cfg = ActorConfig(
        strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, clip_ratio=0.2, clip_ratio_c=1e9
    )
    n_elem = args.batch * args.length
    rows: list[tuple[str, float, str]] = []

    # ---- advantage ----
    rewards, mask, index, off = data["rewards"], data["mask"], data["index"], data["off"]
    idx_list = index.tolist()

    def loop_adv_step() -> torch.Tensor:
        per_sample = loop_advantage(rewards.sum(-1).tolist(), idx_list)
        return torch.tensor(per_sample, device=device)[:, None] * mask

    t = time_many(
        {
            "luffy": lambda: compute_grpo_outcome_advantage_split(rewards, mask, index, off),
            "verl": lambda: compute_grpo_outcome_advantage(rewards, mask, index),
            "verl_vec": lambda: compute_grpo_vectorized_outcome_advantage(rewards, mask, index),
            "loop": loop_adv_step,
        },
        args.repeats,
        device,
    )
    t_adv, t_verl_grpo = t["luffy"], t["verl"]
    rows += [
        ("advantage: luffy grpo_split", t_adv, f"{t_adv / t_verl_grpo:.2f}x veRL grpo"),
        ("advantage: veRL grpo", t_verl_grpo, "1.00x"),
        ("advantage: veRL grpo_vectorized", t["verl_vec"], f"{t['verl_vec'] / t_verl_grpo:.2f}x veRL grpo"),
        ("advantage: Python loop reference", t["loop"], f"{t['loop'] / t_verl_grpo:.2f}x veRL grpo"),
    ]

    # ---- loss, forward + backward ----
    old, adv = data["old"], data["adv"]
    base_lp = data["log_prob"]
    all_on = torch.zeros_like(off)

    def luffy_step() -> None:
        lp = base_lp.detach().requires_grad_(True)
        loss, _ = compute_token_on_off_policy_loss(old, lp, adv, mask, off, off_policy_reshape="p_div_p_0.1")
        loss.backward()

    def verl_step() -> None:
        lp = base_lp.detach().requires_grad_(True)
        loss, _ = compute_policy_loss_vanilla(old, lp, adv, mask, "token-mean", actor_cfg)
        loss.backward()

    def autograd_step() -> None:
        lp = base_lp.detach().requires_grad_(True)
        autograd_loss(old, lp, adv, mask, off).backward()

    # the autograd version computes the same loss and gradient (checked on a slice)
    check_lp = base_lp[:16].detach().double().requires_grad_(True)
    check_args = (old[:16].double(), check_lp, adv[:16].double(), mask[:16], off[:16])
    got, _ = compute_token_on_off_policy_loss(*check_args, off_policy_reshape="p_div_p_0.1")
    got.backward()
    got_grad, check_lp.grad = check_lp.grad, None
    autograd_loss(*check_args).backward()
    torch.testing.assert_close(got_grad.float(), check_lp.grad.float(), rtol=1e-4, atol=1e-9)

    def luffy_on_only_step() -> None:
        lp = base_lp.detach().requires_grad_(True)
        loss, _ = compute_token_on_off_policy_loss(old, lp, adv, mask, all_on)
        loss.backward()

    t = time_many(
        {"luffy": luffy_step, "verl": verl_step, "on": luffy_on_only_step, "autograd": autograd_step},
        args.repeats,
        device,
    )
    t_luffy, t_verl, t_on, t_auto = t["luffy"], t["verl"], t["on"], t["autograd"]

    lb, ll = min(args.loop_batch, args.batch), min(args.loop_length, args.length)
    sub = [data[k][:lb, :ll].float().tolist() for k in ("old", "log_prob", "adv", "mask")]
    sub_off = data["off"][:lb].tolist()
    t_loop = time_many({"loop": lambda: loop_loss(*sub, sub_off)}, max(1, min(args.repeats, 3)), device)["loop"]
    t_loop_full = t_loop * n_elem / (lb * ll)
    rows += [
        ("loss fwd+bwd: luffy mixed (p_div_p_0.1)", t_luffy, f"{t_luffy / t_verl:.2f}x veRL vanilla"),
        ("loss fwd+bwd: luffy all on-policy", t_on, f"{t_on / t_verl:.2f}x veRL vanilla"),
        ("loss fwd+bwd: veRL vanilla", t_verl, "1.00x"),
        (
            "loss fwd+bwd: same mixed loss, autograd",
            t_auto,
            f"{t_auto / t_verl:.2f}x veRL vanilla; luffy {t_luffy / t_auto:.2f}x of it",
        ),
        (
            f"loss fwd+bwd: Python loop (extrapolated from {lb}x{ll})",
            t_loop_full,
            f"{t_loop_full / t_verl:.0f}x veRL vanilla",
        ),
    ]

    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    print(
        f"size {args.batch} x {args.length} ({n_elem / 1e6:.1f}M tokens), dtype {args.dtype}, "
        f"device {device}, threads {threads}, median of {args.repeats}"
    )
    width = max(len(r[0]) for r in rows)
    rwidth = max(len(r[2]) for r in rows)
    print(f"| {'case'.ljust(width)} | {'median ms':>11} | {'ratio'.ljust(rwidth)} |")
    print(f"|{'-' * (width + 2)}|{'-' * 13}|{'-' * (rwidth + 2)}|")
    for name, ms, ratio in rows:
        print(f"| {name.ljust(width)} | {ms:11.2f} | {ratio.ljust(rwidth)} |")
    print(
        f"targets: mixed loss <= 1.30x veRL vanilla -> {t_luffy / t_verl:.2f}x; "
        f"hand-written backward < autograd of the same loss -> {t_luffy / t_auto:.2f}x; "
        f"advantage <= 1.50x veRL grpo -> {t_adv / t_verl_grpo:.2f}x"
    )


if __name__ == "__main__":
    main()
