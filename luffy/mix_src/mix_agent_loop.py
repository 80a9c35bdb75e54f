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

Every session runs veRL's ``SingleTurnAgentLoop.run`` (multimodal inputs, request priority and ids,
routed experts, tracing, the response layout); an off-policy session only swaps its server client for
:class:`_TargetServer`, whose ``generate`` answers with the target tokens.

Each sample records ``luffy_off_policy`` and ``luffy_prefix_len`` in ``extra_fields``
(:mod:`luffy.mix_src.mix_fields`). A sample that skips the server fills the weight-version tags the
server client would have written (the current weights' version, so staleness filters never drop it).
Target tokens have no behaviour log-probs: when the rollout reports log-probs, their slots hold 0.0
filler so that the field exists for every sample; every consumer of ``rollout_log_probs`` in LUFFY's
trainer masks those positions out (``mix_trainer.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopOutput
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop
from verl.workers.rollout.replica import TokenOutput

from luffy.mix_src.mix_config import LuffyRolloutConfig
from luffy.mix_src.mix_fields import OFF_POLICY_KEY, PREFIX_LEN_KEY, PROGRESS_FIELD
from luffy.mix_src.prefix import prefix_ratio
from luffy.tokens import TargetEncoder

logger = logging.getLogger(__name__)

AGENT_LOOP_NAME = "luffy_mix_agent"
# Non-tensor batch entries the trainer adds to training batches; each session receives them as kwargs.
TRAIN_BATCH_KEY = "luffy_train_batch"
PROGRESS_KEY = "luffy_training_progress"
TARGET_LIST_KEY = "target_lst"  # LUFFY's column of several traces per prompt
# One encoder per (tokenizer, response length) per process: its LRU cache serves every session.
_ENCODERS: dict[tuple[int, int], TargetEncoder] = {}
# Prompt token ids per (event loop, tokenizer, token builder, template settings, prompt length, messages),
# shared by the n sessions of a prompt (MixAgentLoop.ct_build_initial_tokens); the first session's task.
_PROMPT_TOKENS: OrderedDict[tuple, asyncio.Future] = OrderedDict()
_PROMPT_TOKENS_MAX = 4096


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

        def key(name: str):  # a rollout config without LUFFY's keys reads LuffyRolloutConfig's defaults
            return rollout.get(name, getattr(LuffyRolloutConfig, name))

        self.n_prefix = int(key("n_prefix"))
        self.prefix_strategy = key("prefix_strategy")
        self.min_prefix_ratio = float(key("min_prefix_ratio"))
        self.max_prefix_ratio = float(key("max_prefix_ratio"))
        self.prefix_share = bool(key("prefix_share_across_samples"))
        self.max_prefix_len = int(key("max_prefix_len"))
        self.prefix_steps = int(key("prefix_steps"))
        self.prefix_linear_max_ratio = float(key("prefix_linear_max_ratio"))
        self.use_target_lst = bool(key("use_target_lst"))

    async def ct_build_initial_tokens(self, messages: list[dict], tools: list[dict] | None = None, **kwargs: Any):
        # The n sessions of a prompt render and tokenise the same chat messages, each in veRL's executor
        # thread, one after another on the worker's loop; a text-only prompt is tokenised once per process.
        if tools or any(kwargs.get(k) for k in ("images", "videos", "audios")):
            return await super().ct_build_initial_tokens(messages, tools=tools, **kwargs)
        key = (
            id(asyncio.get_running_loop()),
            id(self.tokenizer),
            type(self.continuous_token_builder).__qualname__,
            json.dumps(self.apply_chat_template_kwargs, sort_keys=True, default=str),
            self.rollout_config.prompt_length,
            json.dumps(messages, sort_keys=True, default=str),
        )
        task = _PROMPT_TOKENS.get(key)
        if task is None or (task.done() and task.exception() is not None):
            task = asyncio.ensure_future(super().ct_build_initial_tokens(messages, **kwargs))
            _PROMPT_TOKENS[key] = task
            while len(_PROMPT_TOKENS) > _PROMPT_TOKENS_MAX:
                _PROMPT_TOKENS.popitem(last=False)
        else:
            _PROMPT_TOKENS.move_to_end(key)
        return list(await asyncio.shield(task))

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> AgentLoopOutput:
        session_id = int(kwargs.get("session_id", 0))
        is_off_policy_slot = (
            bool(kwargs.get(TRAIN_BATCH_KEY, False)) and session_id < self.n_prefix and kwargs.get("target") is not None
        )
        if not is_off_policy_slot:
            output = await super().run(sampling_params, **kwargs)
            output.extra_fields.update({OFF_POLICY_KEY: False, PREFIX_LEN_KEY: 0})
            if kwargs.get(TRAIN_BATCH_KEY, False):
                output.extra_fields[PROGRESS_FIELD] = float(kwargs.get(PROGRESS_KEY, 0.0))
            return output

        target = kwargs["target"]
        if self.use_target_lst:
            target = trace_for_slot(kwargs.get(TARGET_LIST_KEY), session_id, fallback=target)
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
        # veRL's single-turn run does everything around the one server call (multimodal inputs,
        # priority, request ids, routed experts, tracing, the response layout); for this session its
        # server is a stand-in that answers with the target, or the target prefix plus the policy's
        # continuation. One loop instance serves one session, so swapping the attribute is local.
        server = _TargetServer(
            self.server_manager,
            encoder=_encoder(self.tokenizer, self.response_length),
            target=target,
            ratio=ratio,
            max_prefix_len=self.max_prefix_len,
            response_length=self.response_length,
            weights_version=int(kwargs["global_steps"]) - 1,
            uid=str(kwargs["uid"]),
        )
        self.server_manager = server
        try:
            output = await super().run(sampling_params, **kwargs)
        finally:
            self.server_manager = server.inner
        kept = min(server.prefix_len, len(output.response_ids))
        # a zero-length prefix (or a trace that did not fit) leaves a generated, i.e. on-policy, sample
        output.extra_fields.update(
            {OFF_POLICY_KEY: kept > 0, PREFIX_LEN_KEY: kept, PROGRESS_FIELD: float(kwargs.get(PROGRESS_KEY, 0.0))}
        )
        return output


class _TargetServer:
    """Server client for one off-policy session: ``generate`` answers with the target's token ids.

    * whole trace (ratio 1, within ``max_prefix_len``): the target ids, no server call, with the
      weight-version tags the real client would have written;
    * prefix guidance: the real server continues from ``prompt + prefix``; the response is
      ``prefix + continuation``;
    * a trace the encoder drops (longer than the response budget): the real server generates.

    Target tokens have no behaviour log-probs: with ``logprobs`` requested their slots hold 0.0.
    ``prefix_len`` records how many response tokens came from the target.
    """

    def __init__(
        self,
        inner: Any,
        *,
        encoder: TargetEncoder,
        target: Any,
        ratio: float,
        max_prefix_len: int,
        response_length: int,
        weights_version: int,
        uid: str,
    ):
        self.inner = inner
        self.encoder = encoder
        self.target = target
        self.ratio = ratio
        self.max_prefix_len = max_prefix_len
        self.response_length = response_length
        self.weights_version = weights_version
        self.uid = uid
        self.prefix_len = 0

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any], **kwargs):
        encoded = self.encoder.encode(self.target, prompt_ids)
        if encoded is None:  # trace longer than the response budget and the encoder drops such traces
            logger.warning("target of prompt %s does not fit the response; session generated instead", self.uid)
            return await self.inner.generate(
                request_id=request_id, prompt_ids=prompt_ids, sampling_params=sampling_params, **kwargs
            )
        filler = sampling_params.get("logprobs")
        if self.ratio >= 1.0 and len(encoded.ids) <= self.max_prefix_len:
            self.prefix_len = len(encoded.ids)
            version = self.weights_version  # the version this step's generated samples use
            return TokenOutput(
                token_ids=list(encoded.ids),
                log_probs=[0.0] * len(encoded.ids) if filler else None,
                stop_reason="completed",
                extra_fields={"global_steps": version, "min_global_steps": version, "max_global_steps": version},
            )
        prefix = self.encoder.prefix(encoded.ids, self.ratio, self.max_prefix_len)
        self.prefix_len = len(prefix)
        params = dict(sampling_params, max_tokens=max(1, self.response_length - len(prefix)))
        generated = await self.inner.generate(
            request_id=request_id, prompt_ids=prompt_ids + prefix, sampling_params=params, **kwargs
        )
        log_probs = [0.0] * len(prefix) + list(generated.log_probs) if generated.log_probs else None
        return generated.model_copy(update={"token_ids": prefix + list(generated.token_ids), "log_probs": log_probs})
