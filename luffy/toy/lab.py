"""A small in-process training loop for seed sweeps of the toy: the trainer's update, without the trainer.

One step of :func:`run_arm` does what one step of ``luffy.mix_src.main_mix_ppo`` does with the toy's
settings, in one process and plain torch:

1. ``batch`` prompts in the seed's data order; per prompt ``n - n_prefix`` samples of the current
   policy (temperature 1) plus ``n_prefix`` copies of the correct trace (off-policy, whole trace);
2. rewards from the project's scorer; advantages from this package's estimator
   (:func:`luffy.mix_src.advantage.compute_grpo_outcome_advantage_split`: ``stats_from="all"`` is
   veRL's ``grpo``, ``"on_policy"`` is ``grpo_split``), no std normalisation (``grpo_use_std=false``);
3. the old log-probs, then ``batch / mini_batch`` AdamW updates (veRL's defaults: weight decay 0.01,
   gradient-norm clip 1.0, no shuffle), each on this package's loss
   (:func:`luffy.mix_src.core_algos.compute_token_on_off_policy_loss`, off-policy shaping parsed by
   :class:`luffy.mix_src.reshape.Reshape`, ``loss_remove_token_mean`` and ``loss_remove_clip``) or SFT
   loss (:func:`luffy.mix_src.sft_loss.sft_nll_loss`), with veRL's global-batch counts of the mini-batch.

The arms (:data:`ARMS`) are the reproduction's; every arm of one seed starts from the same weights and
sees the same prompts in the same order and the same sampling seeds. The successors' arms add, each
through this package's function: a per-group guidance gate (:func:`luffy.mix_src.guidance.gated_grpo_advantage`:
HPT's accuracy gate, BREAD's "only where the group fails"), per-token weights and a scheduled
coefficient of the SFT term (:func:`luffy.mix_src.reshape.token_weight` inside ``sft_nll_loss``,
:func:`luffy.mix_src.guidance.sft_coef`: CHORD), and an annealed hint (the trace slot keeps a
:func:`luffy.mix_src.prefix.prefix_ratio` fraction of the trace and the policy continues it: UFT,
Prefix-RFT). Training progress is ``step / (steps - 1)``, the trainer's.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

import luffy.plugin  # noqa: F401  (before luffy.mix_src: it registers luffy in veRL, see its docstring)
from luffy.toy.evaluate import EvalSettings, Prompts, correct, evaluate, response_logprobs, sample
from luffy.toy.task import Problem, ToyData

DEFAULT_EVAL = EvalSettings()


@dataclass(frozen=True)
class Arm:
    """One training recipe. ``n_prefix``: off-policy trace slots per group (0 on-policy, ``n`` = SFT);
    ``sft``: ``"none"``, ``"only"`` (pure SFT on the traces) or ``"multitask"`` (PPO on the samples +
    ``sft_loss_coef`` x the traces' NLL); ``sft_first``: SFT-then-RL, pure SFT for this fraction of the
    steps, then this arm's RL with a fresh optimizer."""

    adv_estimator: str = "grpo"
    n_prefix: int = 1
    off_policy_reshape: str = "p_div_p_0.1"
    sft: str = "none"
    sft_loss_coef: float = 1.0
    sft_first: float = 0.0
    gate: str = "none"
    """``algorithm.guidance_gate``, with ``accuracy_threshold`` / ``max_successes`` (guidance.py)"""
    accuracy_threshold: float = 0.5
    max_successes: int = 0
    sft_token_weight: str = "none"
    sft_coef_schedule: str = "constant"
    """``constant`` or ``warmup_cosine`` (peak ``sft_loss_coef``, ``sft_coef_valley``, ``sft_coef_warmup``)"""
    sft_coef_valley: float = 0.0
    sft_coef_warmup: float = 0.0
    sft_rl_complement: bool = False
    """the PPO term weighted ``1 - mu``"""
    prefix_strategy: str = ""
    """empty: whole traces; else the trace slot keeps ``prefix_ratio(strategy, 0, 1, progress)`` of the trace"""


ARMS: dict[str, Arm] = {
    "luffy": Arm("grpo", 1),
    "luffy_split": Arm("grpo_split", 1),
    "grpo": Arm("grpo", 0),
    "sft": Arm("grpo_split", -1, "no_reshape", sft="only"),
    "rl_sft_loss": Arm("grpo_split", 1, "no_reshape", sft="multitask"),
    "sft_rl": Arm("grpo", 0, sft_first=0.5),
    "hpt": Arm("grpo_split", 1, "no_reshape", sft="multitask", gate="accuracy", accuracy_threshold=0.5),
    "bread": Arm("grpo", 1, gate="successes", max_successes=0),
    "chord": Arm("grpo_split", 1, "no_reshape", sft="multitask", sft_loss_coef=0.9, sft_token_weight="p_one_minus_p",
                 sft_coef_schedule="warmup_cosine", sft_coef_valley=0.05, sft_coef_warmup=0.1,
                 sft_rl_complement=True),
    "hint_anneal": Arm("grpo", 1, "no_reshape", sft="multitask", prefix_strategy="progress_cosine"),
}
"""``-1`` as ``n_prefix`` means ``n`` (every slot a trace)."""

LABELS = {
    "luffy": "LUFFY (recipe: grpo, n_prefix=1, p_div_p_0.1)",
    "luffy_split": "LUFFY, grpo_split",
    "grpo": "on-policy GRPO (n_prefix=0)",
    "sft": "SFT on the traces",
    "rl_sft_loss": "RL with an SFT loss",
    "sft_rl": "SFT then RL",
    "hpt": "HPT gate (SFT where accuracy < 0.5)",
    "bread": "BREAD gate (trace where 0 of 7 succeed)",
    "chord": "CHORD (p(1-p) SFT, mu 0.9 to 0.05)",
    "hint_anneal": "hint annealed 1 to 0 (cosine), SFT on it",
}
#: the successors' arms (docs/successors.md)
SUCCESSOR_ARMS = ("hpt", "bread", "chord", "hint_anneal")


@dataclass(frozen=True)
class LabConfig:
    """Sizes of a run; ``batch`` / ``mini_batch`` prompts per step / per optimizer update."""

    steps: int = 60
    batch: int = 16
    mini_batch: int = 16
    n: int = 8
    lr: float = 3e-4
    max_response: int = 64
    """the trainer's ``max_response_length``: generation cap and the loss's length normaliser"""
    eval_every: int = 10
    weight_decay: float = 0.01
    grad_clip: float = 1.0


def data_order(train: list[Problem], seed: int) -> list[Problem]:
    """The training prompts in seed ``seed``'s order (the trainer reads its parquet in this order)."""
    return random.Random(f"order-{seed}").sample(train, len(train))


def step_prompts(order: list[Problem], step: int, batch: int) -> list[Problem]:
    """Prompts of training step ``step`` (from 0): consecutive slices of ``order``, wrapping around."""
    start = step * batch
    return [order[(start + i) % len(order)] for i in range(batch)]


def last_token_rewards(rewards, response_mask):
    """Sequence ``rewards`` ``(B,)`` placed on each response's last token: ``(B, T)`` float32."""
    import torch

    lengths = response_mask.sum(dim=1)  # (B,)
    token_rewards = torch.zeros(response_mask.shape, dtype=torch.float32)
    token_rewards[torch.arange(len(lengths)), (lengths - 1).clamp(min=0)] = rewards.float()
    return token_rewards


def advantages(rewards, off_policy, group, response_mask, estimator: str):
    """This package's GRPO advantages (``(B, T)``) for sequence ``rewards`` ``(B,)``, ``off_policy``
    ``(B,)`` bool, ``group`` ``(B,)`` prompt ids, no std normalisation."""
    from luffy.mix_src.advantage import compute_grpo_outcome_advantage_split

    adv, _ = compute_grpo_outcome_advantage_split(
        last_token_rewards(rewards, response_mask), response_mask, group, off_policy_mask=off_policy,
        norm_adv_by_std=False, stats_from="on_policy" if estimator == "grpo_split" else "all")
    return adv


def policy_loss(old_log_prob, log_prob, adv, mask, off_tokens, arm: Arm, cfg: LabConfig, progress: float = 0.0):
    """This package's loss on one mini-batch (all ``(B, T)``), with veRL's global counts of that mini-batch."""
    import torch

    from luffy.mix_src.core_algos import compute_token_on_off_policy_loss
    from luffy.mix_src.guidance import sft_coef
    from luffy.mix_src.sft_loss import sft_nll_loss

    maskb = mask.bool()
    if arm.sft == "only":
        return sft_nll_loss(log_prob, maskb & off_tokens, int((maskb & off_tokens).sum()))
    if arm.sft == "multitask":  # mix_loss.luffy_ppo_loss: PPO on the on-policy tokens, their own counts
        on = maskb & ~off_tokens
        info = {"dp_size": 1, "batch_num_tokens": max(int(on.sum()), 1),
                "global_batch_size": max(int(on.any(dim=1).sum()), 1), "loss_scale_factor": cfg.max_response}
        pg, _ = compute_token_on_off_policy_loss(
            old_log_prob, log_prob, adv, on.float(), torch.zeros_like(off_tokens), off_policy_reshape="no_reshape",
            loss_remove_token_mean=True, loss_remove_clip=True, global_batch_info=info)
        target = maskb & off_tokens
        mu = sft_coef(arm.sft_coef_schedule, progress, arm.sft_loss_coef, arm.sft_coef_valley, arm.sft_coef_warmup)
        rl_scale = 1.0 - mu if arm.sft_rl_complement else 1.0
        return rl_scale * pg + mu * sft_nll_loss(log_prob, target, int(target.sum()), token_weight=arm.sft_token_weight)
    info = {"dp_size": 1, "batch_num_tokens": int(mask.sum()), "global_batch_size": int(maskb.any(dim=1).sum()),
            "loss_scale_factor": cfg.max_response}
    loss, _ = compute_token_on_off_policy_loss(
        old_log_prob, log_prob, adv, mask.float(), off_tokens, off_policy_reshape=arm.off_policy_reshape,
        loss_remove_token_mean=True, loss_remove_clip=True, global_batch_info=info)
    return loss


def make_optimizer(model, cfg: LabConfig):
    import torch

    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)


def hinted_traces(model, prompts: Prompts, problems: list[Problem], traces: list[list[int]], ratio: float,
                  max_new_tokens: int) -> tuple[list[list[int]], list[int]]:
    """Trace slots with a hint: the first ``floor(ratio * n)`` trace tokens (``n`` without its EOS, the
    agent loop's rule in ``luffy.tokens``), then the policy's sampled continuation (temperature 1, up to
    ``max_new_tokens`` in all). Returns the responses and their hint lengths; ratio 1 keeps the traces."""
    import math

    import torch

    if ratio >= 1.0:
        return traces, [len(t) for t in traces]
    tok = prompts.tokenizer
    out, kept = [], []
    for p, trace in zip(problems, traces):
        k = math.floor(ratio * (len(trace) - 1))
        ids = torch.tensor([prompts.ids(p) + trace[:k]], dtype=torch.long)
        with torch.no_grad():
            seq = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0,
                                 top_p=1.0, top_k=0, max_new_tokens=max_new_tokens - k, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
        if tok.eos_token_id in seq:
            seq = seq[: seq.index(tok.eos_token_id) + 1]
        out.append(trace[:k] + seq)
        kept.append(k)
    return out, kept


def gated_advantages(rewards, off_policy, group, response_mask, arm: Arm):
    """:func:`luffy.mix_src.guidance.gated_grpo_advantage` with the lab's rewards (no std normalisation):
    ``(advantages (B, T), kept samples (B,), gate metrics)``."""
    from luffy.mix_src.guidance import gated_grpo_advantage

    settings = {"gate": arm.gate, "accuracy_threshold": arm.accuracy_threshold, "max_successes": arm.max_successes,
                "trace_in_stats": arm.adv_estimator != "grpo_split", "gated_trace_in_stats": False}
    return gated_grpo_advantage(
        last_token_rewards(rewards, response_mask), response_mask, group, off_policy, settings, norm_adv_by_std=False
    )


def train_step(model, opt, prompts: Prompts, problems: list[Problem], arm: Arm, cfg: LabConfig,
               sample_seed: int, progress: float = 0.0) -> dict[str, float]:
    """One training step on ``problems`` at training ``progress`` in [0, 1]; returns its rollout statistics."""
    import torch

    from luffy.mix_src.prefix import prefix_ratio

    n = cfg.n
    n_prefix = n if arm.n_prefix < 0 else arm.n_prefix
    n_gen = n - n_prefix
    traces = [prompts.trace_ids(p) for p in problems]
    generated: list[list[int]] = []
    if n_gen:
        torch.manual_seed(sample_seed)
        model.eval()
        generated, _ = sample(model, prompts, problems, num_samples=n_gen, max_new_tokens=cfg.max_response)
    hint = [len(t) for t in traces]
    if arm.prefix_strategy and n_prefix:
        model.eval()
        ratio = prefix_ratio(arm.prefix_strategy, 0.0, 1.0, progress, 0, n_prefix, "", True)
        traces, hint = hinted_traces(model, prompts, problems, traces, ratio, cfg.max_response)
    rows_problem, rows_resp, rows_off, rows_group, rows_hint = [], [], [], [], []
    for i, p in enumerate(problems):
        # SFT: every slot is the same trace, and the token-mean NLL of n copies is that of one
        slots = [traces[i]] * (1 if arm.sft == "only" else n_prefix) + generated[i * n_gen : (i + 1) * n_gen]
        for j, r in enumerate(slots):
            is_trace = j < (1 if arm.sft == "only" else n_prefix)
            rows_problem.append(p)
            rows_resp.append(r)
            rows_off.append(is_trace and hint[i] > 0)  # a hint of 0 tokens leaves a generated sample
            rows_hint.append(hint[i] if is_trace else 0)
            rows_group.append(i)
    rewards = torch.tensor(correct(rows_resp, rows_problem, prompts.tokenizer, 1), dtype=torch.float32)
    off = torch.tensor(rows_off)
    group = torch.tensor(rows_group)
    with torch.no_grad():
        old_lp, mask = response_logprobs(model, prompts, rows_problem, rows_resp, cfg.max_response)
    gate_stats: dict[str, float] = {}
    if arm.gate != "none":
        adv, keep, gate_stats = gated_advantages(rewards, off, group, mask, arm)
        mask = mask * keep.long().unsqueeze(1)  # dropped traces leave the loss (the trainer's response_mask)
    else:
        adv = advantages(rewards, off, group, mask, arm.adv_estimator)
    hint_tokens = torch.arange(mask.shape[1])[None, :] < torch.tensor(rows_hint)[:, None]  # (B, T)
    model.train()
    per_update = cfg.mini_batch
    for start in range(0, len(problems), per_update):
        rows = [k for k, g in enumerate(rows_group) if start <= g < start + per_update]
        idx = torch.tensor(rows)
        lp, _ = response_logprobs(model, prompts, [rows_problem[k] for k in rows], [rows_resp[k] for k in rows],
                                  cfg.max_response)
        off_tokens = hint_tokens[idx] & mask[idx].bool()
        loss = policy_loss(old_lp[idx], lp, adv[idx], mask[idx], off_tokens, arm, cfg, progress)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
    model.eval()
    on = ~off
    solved_groups = sum(bool(rewards[(group == g) & on].sum() > 0) for g in range(len(problems))) if n_gen else 0
    stats = {"reward": float(rewards[on].mean()) if n_gen else float("nan"), "groups_with_success":
             solved_groups / len(problems)}
    if "luffy/guided_group_frac" in gate_stats:
        stats["guided_groups"] = gate_stats["luffy/guided_group_frac"]
    return stats


def run_arm(name: str, base_dir: str | Path, data: ToyData, seed: int, cfg: LabConfig,
            eval_settings: EvalSettings = DEFAULT_EVAL, base_eval: dict[str, float] | None = None,
            save_at: dict[int, Path] | None = None, progress=None) -> dict:
    """Train arm ``name`` from ``base_dir`` for ``cfg.steps`` steps with seed ``seed``.

    Returns ``{"eval": {step: metrics}, "train": {step: rollout stats}}``; step 0 is the base model
    (``base_eval`` when given). ``save_at``: HF weights (and tokenizer) saved after those steps.
    """
    import torch

    from luffy.toy.evaluate import load_policy

    arm = ARMS[name]
    model, tokenizer = load_policy(base_dir)
    prompts = Prompts(tokenizer)
    order = data_order(data.train, seed)
    torch.manual_seed(seed)
    opt = make_optimizer(model, cfg)
    switch = round(arm.sft_first * cfg.steps)
    evals = {0: base_eval or evaluate(model, prompts, data.held_out, seed=eval_seed(seed, 0), settings=eval_settings)}
    train = {}
    for step in range(cfg.steps):
        current = arm
        if step < switch:
            current = ARMS["sft"]
        elif step == switch and switch:
            opt = make_optimizer(model, cfg)  # SFT then RL: a second training from the SFT weights
        train[step + 1] = train_step(model, opt, prompts, step_prompts(order, step, cfg.batch), current, cfg,
                                     sample_seed=seed * 100_003 + step, progress=step / max(cfg.steps - 1, 1))
        done = step + 1
        if save_at and done in save_at:
            model.save_pretrained(str(save_at[done]))
            tokenizer.save_pretrained(str(save_at[done]))
        if done % cfg.eval_every == 0 or done == cfg.steps:
            evals[done] = evaluate(model, prompts, data.held_out, seed=eval_seed(seed, done), settings=eval_settings)
            if progress:
                progress(name, seed, done, evals[done], train[done])
    return {"eval": evals, "train": train, "config": asdict(cfg), "arm": asdict(arm)}


def eval_seed(seed: int, step: int) -> int:
    """The sampling seed of the held-out evaluation after ``step`` steps (the same for every arm)."""
    return 7919 * seed + step + 1

