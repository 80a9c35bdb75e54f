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
sees the same prompts in the same order and the same sampling seeds.
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


ARMS: dict[str, Arm] = {
    "luffy": Arm("grpo", 1),
    "luffy_split": Arm("grpo_split", 1),
    "grpo": Arm("grpo", 0),
    "sft": Arm("grpo_split", -1, "no_reshape", sft="only"),
    "rl_sft_loss": Arm("grpo_split", 1, "no_reshape", sft="multitask"),
    "sft_rl": Arm("grpo", 0, sft_first=0.5),
}
"""``-1`` as ``n_prefix`` means ``n`` (every slot a trace)."""

LABELS = {
    "luffy": "LUFFY (recipe: grpo, n_prefix=1, p_div_p_0.1)",
    "luffy_split": "LUFFY, grpo_split",
    "grpo": "on-policy GRPO (n_prefix=0)",
    "sft": "SFT on the traces",
    "rl_sft_loss": "RL with an SFT loss",
    "sft_rl": "SFT then RL",
}


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


def advantages(rewards, off_policy, group, response_mask, estimator: str):
    """This package's GRPO advantages (``(B, T)``) for sequence ``rewards`` ``(B,)``, ``off_policy``
    ``(B,)`` bool, ``group`` ``(B,)`` prompt ids, no std normalisation."""
    import torch

    from luffy.mix_src.advantage import compute_grpo_outcome_advantage_split

    lengths = response_mask.sum(dim=1)  # (B,)
    token_rewards = torch.zeros(response_mask.shape, dtype=torch.float32)
    token_rewards[torch.arange(len(lengths)), (lengths - 1).clamp(min=0)] = rewards.float()  # reward on the last token
    adv, _ = compute_grpo_outcome_advantage_split(
        token_rewards, response_mask, group, off_policy_mask=off_policy, norm_adv_by_std=False,
        stats_from="on_policy" if estimator == "grpo_split" else "all")
    return adv


def policy_loss(old_log_prob, log_prob, adv, mask, off_tokens, arm: Arm, cfg: LabConfig):
    """This package's loss on one mini-batch (all ``(B, T)``), with veRL's global counts of that mini-batch."""
    import torch

    from luffy.mix_src.core_algos import compute_token_on_off_policy_loss
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
        return pg + arm.sft_loss_coef * sft_nll_loss(log_prob, target, int(target.sum()))
    info = {"dp_size": 1, "batch_num_tokens": int(mask.sum()), "global_batch_size": int(maskb.any(dim=1).sum()),
            "loss_scale_factor": cfg.max_response}
    loss, _ = compute_token_on_off_policy_loss(
        old_log_prob, log_prob, adv, mask.float(), off_tokens, off_policy_reshape=arm.off_policy_reshape,
        loss_remove_token_mean=True, loss_remove_clip=True, global_batch_info=info)
    return loss


def make_optimizer(model, cfg: LabConfig):
    import torch

    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)


def train_step(model, opt, prompts: Prompts, problems: list[Problem], arm: Arm, cfg: LabConfig,
               sample_seed: int) -> dict[str, float]:
    """One training step on ``problems``; returns its rollout statistics."""
    import torch

    n = cfg.n
    n_prefix = n if arm.n_prefix < 0 else arm.n_prefix
    n_gen = n - n_prefix
    traces = [prompts.trace_ids(p) for p in problems]
    generated: list[list[int]] = []
    if n_gen:
        torch.manual_seed(sample_seed)
        model.eval()
        generated, _ = sample(model, prompts, problems, num_samples=n_gen, max_new_tokens=cfg.max_response)
    rows_problem, rows_resp, rows_off, rows_group = [], [], [], []
    for i, p in enumerate(problems):
        # SFT: every slot is the same trace, and the token-mean NLL of n copies is that of one
        slots = [traces[i]] * (1 if arm.sft == "only" else n_prefix) + generated[i * n_gen : (i + 1) * n_gen]
        for j, r in enumerate(slots):
            rows_problem.append(p)
            rows_resp.append(r)
            rows_off.append(j < (1 if arm.sft == "only" else n_prefix))
            rows_group.append(i)
    rewards = torch.tensor(correct(rows_resp, rows_problem, prompts.tokenizer, 1), dtype=torch.float32)
    off = torch.tensor(rows_off)
    group = torch.tensor(rows_group)
    with torch.no_grad():
        old_lp, mask = response_logprobs(model, prompts, rows_problem, rows_resp, cfg.max_response)
    adv = advantages(rewards, off, group, mask, arm.adv_estimator)
    model.train()
    per_update = cfg.mini_batch
    for start in range(0, len(problems), per_update):
        rows = [k for k, g in enumerate(rows_group) if start <= g < start + per_update]
        idx = torch.tensor(rows)
        lp, _ = response_logprobs(model, prompts, [rows_problem[k] for k in rows], [rows_resp[k] for k in rows],
                                  cfg.max_response)
        off_tokens = off[idx].unsqueeze(1).expand_as(mask[idx]) & mask[idx].bool()
        loss = policy_loss(old_lp[idx], lp, adv[idx], mask[idx], off_tokens, arm, cfg)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
    model.eval()
    on = ~off
    solved_groups = sum(bool(rewards[(group == g) & on].sum() > 0) for g in range(len(problems))) if n_gen else 0
    return {"reward": float(rewards[on].mean()) if n_gen else float("nan"), "groups_with_success":
            solved_groups / len(problems)}


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
                                     sample_seed=seed * 100_003 + step)
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

