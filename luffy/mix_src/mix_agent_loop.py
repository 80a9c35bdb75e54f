"""LUFFY's agent loop: the first ``n_prefix`` sessions of a training prompt answer with its target.

veRL's V1 trainer runs ``rollout.n`` sessions per prompt (``session_id`` 0..n-1, every dataset column
as a keyword argument). For a training prompt (the trainer marks its batches with
:data:`TRAIN_BATCH_KEY`; validation batches never carry it):

* ``session_id >= n_prefix``: veRL's single-turn loop, unchanged (on-policy);
* ``session_id < n_prefix``: the row's ``target`` trace, encoded as the response after the prompt
  (with ``rollout.use_target_lst`` and a row holding a non-empty ``target_lst`` column, slot k takes
  ``target_lst[k]``, cycling when there are fewer traces than slots, so slots use different traces).
  With a prefix ratio below 1 only the first part of the trace is kept and the LLM server continues
  from ``prompt + prefix``; only the kept target tokens are off-policy.

Each sample records ``luffy_off_policy`` and ``luffy_prefix_len`` in ``extra_fields``
(:mod:`luffy.mix_src.mix_fields`). A sample that skips the server fills the weight-version tags the
server client would have written (the current weights' version, so staleness filters never drop it).
Target tokens have no behaviour log-probs: when the rollout reports log-probs, their slots hold 0.0
filler so that the field exists for every sample; every consumer of ``rollout_log_probs`` in LUFFY's
trainer masks those positions out (``mix_trainer.py``).
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop
from verl.utils.profiler import simple_timer

from luffy.mix_src.mix_fields import OFF_POLICY_KEY, PREFIX_LEN_KEY
from luffy.mix_src.prefix import prefix_ratio
from luffy.mix_src.target_tokens import TargetEncoder

logger = logging.getLogger(__name__)

AGENT_LOOP_NAME = "luffy_mix_agent"
# Non-tensor batch entries the trainer adds to training batches; each session receives them as kwargs.
TRAIN_BATCH_KEY = "luffy_train_batch"
PROGRESS_KEY = "luffy_training_progress"
TARGET_LIST_KEY = "target_lst"  # LUFFY's column of several traces per prompt
# One encoder per (tokenizer, response length) per process: its LRU cache serves every session.
_ENCODERS: dict[tuple[int, int], TargetEncoder] = {}


def _encoder(tokenizer: Any, response_length: int) -> TargetEncoder:
    key = (id(tokenizer), response_length)
    if key not in _ENCODERS:
        _ENCODERS[key] = TargetEncoder(tokenizer=tokenizer, max_response_length=response_length)
    return _ENCODERS[key]


def trace_for_slot(target_lst: Any, slot: int, fallback: Any) -> Any:
    """The trace off-policy slot ``slot`` uses: ``target_lst[slot % len]``, or ``fallback`` (the row's
    ``target``) when the row has no usable ``target_lst``.

    ``target_lst`` items may be a string, a ``{"role", "content"}`` dict, or a one-trace message list.
    """
    if target_lst is None or isinstance(target_lst, str | dict | float):
        return fallback
    traces = list(target_lst)
    if not traces:
        return fallback
    item = traces[slot % len(traces)]
    if not isinstance(item, str | dict):  # a trace stored as a list of messages: its first one
        item = list(item)[0] if item is not None and len(item) else None
    if item is None:
        logger.warning("target_lst entry %d is empty; slot %d uses the row's target", slot % len(traces), slot)
        return fallback
    return item


class MixAgentLoop(SingleTurnAgentLoop):
    """Single-turn agent loop that answers the first ``rollout.n_prefix`` sessions with the target."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        rollout = self.rollout_config
        self.n_prefix = int(rollout.get("n_prefix", 0))
        self.prefix_strategy = rollout.get("prefix_strategy", "random")
        self.min_prefix_ratio = float(rollout.get("min_prefix_ratio", 1.0))
        self.max_prefix_ratio = float(rollout.get("max_prefix_ratio", 1.0))
        self.prefix_share = bool(rollout.get("prefix_share_across_samples", False))
        self.max_prefix_len = int(rollout.get("max_prefix_len", self.response_length))
        self.prefix_steps = int(rollout.get("prefix_steps", 1000))
        self.prefix_linear_max_ratio = float(rollout.get("prefix_linear_max_ratio", 0.8))
        self.use_target_lst = bool(rollout.get("use_target_lst", True))

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> AgentLoopOutput:
        session_id = int(kwargs.get("session_id", 0))
        is_off_policy_slot = (
            bool(kwargs.get(TRAIN_BATCH_KEY, False)) and session_id < self.n_prefix and kwargs.get("target") is not None
        )
        if not is_off_policy_slot:
            output = await super().run(sampling_params, **kwargs)
            output.extra_fields.update({OFF_POLICY_KEY: False, PREFIX_LEN_KEY: 0})
            return output

        prompt_ids = await self.ct_build_initial_tokens(list(kwargs["raw_prompt"]))
        target = kwargs["target"]
        if self.use_target_lst:
            target = trace_for_slot(kwargs.get(TARGET_LIST_KEY), session_id, fallback=target)
        encoded = _encoder(self.tokenizer, self.response_length).encode(target, prompt_ids)
        if encoded is None:  # trace longer than the response budget and the encoder drops such traces
            logger.warning("target of prompt %s does not fit the response; session generated instead", kwargs["uid"])
            output = await super().run(sampling_params, **kwargs)
            output.extra_fields.update({OFF_POLICY_KEY: False, PREFIX_LEN_KEY: 0})
            return output

        ratio = prefix_ratio(
            self.prefix_strategy,
            self.min_prefix_ratio,
            self.max_prefix_ratio,
            progress=float(kwargs.get(PROGRESS_KEY, 0.0)),
            slot=session_id,
            n_prefix=self.n_prefix,
            uid=str(kwargs["uid"]),
            share_across_samples=self.prefix_share,
            step=max(int(kwargs.get("global_steps", 1)) - 1, 0),
            prefix_steps=self.prefix_steps,
            linear_max_ratio=self.prefix_linear_max_ratio,
        )
        if ratio >= 1.0 and len(encoded.ids) <= self.max_prefix_len:
            return await self._target_output(prompt_ids, encoded.ids, sampling_params, kwargs)
        prefix = _encoder(self.tokenizer, self.response_length).prefix(encoded.ids, ratio, self.max_prefix_len)
        return await self._prefix_output(prompt_ids, prefix, sampling_params, kwargs)

    async def _target_output(
        self, prompt_ids: list[int], target_ids: list[int], sampling_params: dict[str, Any], kwargs: dict
    ) -> AgentLoopOutput:
        """The whole target as the response: no server call."""
        weights_version = int(kwargs["global_steps"]) - 1  # version the on-policy samples of this step use
        filler = [0.0] * len(target_ids) if sampling_params.get("logprobs") else None
        output = await self._build_output(prompt_ids, target_ids, filler, metrics={"num_preempted": -1})
        output.extra_fields.update(
            {
                "global_steps": weights_version,
                "min_global_steps": weights_version,
                "max_global_steps": weights_version,
                OFF_POLICY_KEY: True,
                PREFIX_LEN_KEY: len(output.response_ids),
            }
        )
        return output

    async def _prefix_output(
        self, prompt_ids: list[int], prefix: list[int], sampling_params: dict[str, Any], kwargs: dict
    ) -> AgentLoopOutput:
        """Target prefix, then the policy's continuation from ``prompt + prefix``."""
        params = dict(sampling_params, max_tokens=max(1, self.response_length - len(prefix)))
        metrics: dict[str, Any] = {}
        with simple_timer("generate_sequences", metrics):
            generated = await self.server_manager.generate(
                request_id=uuid4().hex, prompt_ids=prompt_ids + prefix, sampling_params=params
            )
        metrics["num_preempted"] = generated.num_preempted if generated.num_preempted is not None else -1
        logprobs = [0.0] * len(prefix) + list(generated.log_probs) if generated.log_probs else None
        output = await self._build_output(prompt_ids, prefix + list(generated.token_ids), logprobs, metrics)
        output.extra_fields.update(generated.extra_fields)
        kept = min(len(prefix), len(output.response_ids))
        # a zero-length prefix leaves a fully generated, i.e. on-policy, sample
        output.extra_fields.update({OFF_POLICY_KEY: kept > 0, PREFIX_LEN_KEY: kept})
        return output

    async def _build_output(
        self, prompt_ids: list[int], response_ids: list[int], logprobs: list[float] | None, metrics: dict
    ) -> AgentLoopOutput:
        """An ``AgentLoopOutput`` laid out exactly as the single-turn loop lays out generated samples."""
        merged, response_mask, response_logprobs = await self.ct_merge_assistant_token(
            prompt_ids, response_ids, [], [] if logprobs is not None else None, assistant_logprobs=logprobs
        )
        merged_ids = merged.token_ids[-len(response_mask) :] if response_mask else []
        merged_prompt = merged.token_ids[: len(merged.token_ids) - len(response_mask)]
        output = AgentLoopOutput(
            prompt_ids=merged_prompt,
            response_ids=merged_ids[: self.response_length],
            response_mask=response_mask[: self.response_length],
            response_logprobs=response_logprobs[: self.response_length] if response_logprobs else None,
            num_turns=2,
            metrics=AgentLoopMetrics(**metrics),
            extra_fields={"turn_scores": [], "tool_rewards": []},
        )
        return output
