"""LUFFY's agent loop on a real tokenizer and the real CPU rollout server (tiny random model).

The only stand-in is the thin client in front of the server (veRL's ``LLMServerClient`` needs Ray
actor handles); it forwards to ``HFRolloutServer.generate`` and writes the version tags that client
writes.
"""

from __future__ import annotations

import asyncio

import pytest
import torch
from _compose import compose_luffy
from tensordict import NonTensorStack
from verl.experimental.agent_loop.agent_loop import DictConfigWrap
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.utils.tensordict_utils import list_of_dict_to_tensordict

import luffy.plugin  # noqa: F401
from luffy.cpu.hf_server import HFRolloutServer
from luffy.mix_src.mix_agent_loop import PROGRESS_KEY, TRAIN_BATCH_KEY, MixAgentLoop, trace_for_slot
from luffy.mix_src.mix_fields import OFF_POLICY_KEY, PREFIX_LEN_KEY, PROGRESS_FIELD, off_policy_token_mask
from luffy.tokens import TargetEncoder

RESPONSE_LEN = 48
N, N_PREFIX, STEP = 4, 1, 3
MESSAGES = [{"role": "user", "content": "Solve for $x$: $2x + 13 = 29$."}]
TARGET = [{"role": "assistant", "content": "<think>\n2x = 16, so x = 8.\n</think>\nThe answer is $\\boxed{8}$."}]


class ServerClient:
    """Forwards to the real server and fills the weight-version tags as veRL's client does."""

    def __init__(self, server: HFRolloutServer):
        self.server = server
        self.calls: list[list[int]] = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        self.calls.append(list(prompt_ids))
        out = await self.server.generate(prompt_ids=prompt_ids, sampling_params=sampling_params, request_id=request_id)
        out.extra_fields.setdefault("min_global_steps", out.extra_fields.get("global_steps"))
        out.extra_fields.setdefault("max_global_steps", out.extra_fields.get("global_steps"))
        return out


def _config(tiny_model_dir, *overrides):
    return compose_luffy(
        f"actor_rollout_ref.model.path={tiny_model_dir}",
        "data.max_prompt_length=256",
        f"data.max_response_length={RESPONSE_LEN}",
        f"actor_rollout_ref.rollout.n={N}",
        f"actor_rollout_ref.rollout.n_prefix={N_PREFIX}",
        "actor_rollout_ref.rollout.min_prefix_ratio=1.0",  # whole traces unless a test says otherwise
        "actor_rollout_ref.rollout.max_prefix_ratio=1.0",
        *overrides,
    )


def _run_sessions(tiny_model_dir, overrides=(), train=True, sessions=range(N), logprobs=True, row=None):
    """Run the loop for each session of one prompt; returns (outputs, client, tokenizer)."""
    from transformers import AutoTokenizer

    cfg = _config(tiny_model_dir, *overrides)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model_config = type("ModelConfig", (), {"local_path": str(tiny_model_dir)})()

    async def main():
        server = HFRolloutServer(cfg.actor_rollout_ref.rollout, model_config)
        await server.set_global_steps(STEP - 1)
        client = ServerClient(server)
        loop = MixAgentLoop(
            trainer_config=DictConfigWrap(cfg),
            server_manager=client,
            tokenizer=tokenizer,
            processor=None,
            dataset_cls=RLHFDataset,
            data_config=DictConfigWrap(cfg.data),
        )
        params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": logprobs}
        kwargs = {"raw_prompt": MESSAGES, "target": TARGET, "uid": "prompt-0", "global_steps": STEP, **(row or {})}
        if train:
            kwargs.update({TRAIN_BATCH_KEY: True, PROGRESS_KEY: 0.5})
        outs = [await loop.run(dict(params), session_id=s, **kwargs) for s in sessions]
        return outs, client

    outs, client = asyncio.run(main())
    return outs, client, tokenizer


@pytest.fixture(scope="module")
def whole_trace_group(tiny_model_dir):
    return _run_sessions(tiny_model_dir)


def test_off_policy_session_returns_the_target(whole_trace_group):
    outs, client, tokenizer = whole_trace_group
    target = outs[0]
    expected = TargetEncoder(tokenizer, RESPONSE_LEN).encode(TARGET, target.prompt_ids).ids
    assert target.response_ids == expected and expected[-1] == tokenizer.eos_token_id
    assert target.response_mask == [1] * len(expected)
    assert target.extra_fields[OFF_POLICY_KEY] is True
    assert target.extra_fields[PREFIX_LEN_KEY] == len(expected)
    # no behaviour log-probs exist: filler slots, all masked out downstream by the prefix length
    assert target.response_logprobs == [0.0] * len(expected)
    # version tags a server would have written: the weights this step's generations use
    for key in ("global_steps", "min_global_steps", "max_global_steps"):
        assert target.extra_fields[key] == STEP - 1
    # the target never reached the server; the N - N_PREFIX generated sessions did
    assert len(client.calls) == N - N_PREFIX
    # every training sample records the progress it was rolled out at (the SFT coefficient's schedule reads it)
    assert [out.extra_fields[PROGRESS_FIELD] for out in outs] == [0.5] * len(outs)


def test_on_policy_sessions_are_generated(whole_trace_group):
    outs, client, _ = whole_trace_group
    for out in outs[N_PREFIX:]:
        assert out.extra_fields[OFF_POLICY_KEY] is False and out.extra_fields[PREFIX_LEN_KEY] == 0
        assert 0 < len(out.response_ids) <= RESPONSE_LEN
        assert len(out.response_logprobs) == len(out.response_ids)
        assert all(lp <= 0.0 for lp in out.response_logprobs)
        assert out.extra_fields["global_steps"] == STEP - 1
    # every session of the group shares the prompt's tokens
    assert all(out.prompt_ids == outs[0].prompt_ids for out in outs)
    assert all(call == outs[0].prompt_ids for call in client.calls)


def test_group_pads_into_one_batch_with_the_right_token_mask(whole_trace_group):
    outs, _, tokenizer = whole_trace_group
    fields = [out.as_dict() for out in outs]
    for f in fields:
        f.pop("metrics", None)
        f.pop("multi_modal_data", None)
    batch = list_of_dict_to_tensordict(fields)
    padded = batch.select("responses", "response_mask", "rollout_log_probs").to_padded_tensor()
    response_mask = padded["response_mask"]  # (N, T), right-padded
    lengths = torch.tensor([len(o.response_ids) for o in outs])
    assert torch.equal(response_mask.sum(-1), lengths)
    off = off_policy_token_mask(NonTensorStack(*[o.extra_fields for o in outs]), response_mask)
    assert torch.equal(off[0], response_mask[0].bool())  # the whole target is off-policy
    assert not off[N_PREFIX:].any()  # generated samples have no off-policy token


def test_validation_never_injects_targets(tiny_model_dir):
    outs, client, _ = _run_sessions(tiny_model_dir, train=False, sessions=[0])
    assert outs[0].extra_fields[OFF_POLICY_KEY] is False
    assert len(client.calls) == 1


def test_prefix_guidance_continues_from_the_target_prefix(tiny_model_dir):
    overrides = ("actor_rollout_ref.rollout.min_prefix_ratio=0.5", "actor_rollout_ref.rollout.max_prefix_ratio=0.5")
    outs, client, tokenizer = _run_sessions(tiny_model_dir, overrides, sessions=[0])
    out = outs[0]
    encoder = TargetEncoder(tokenizer, RESPONSE_LEN)
    full = encoder.encode(TARGET, out.prompt_ids).ids
    prefix = encoder.prefix(full, 0.5)
    k = out.extra_fields[PREFIX_LEN_KEY]
    assert out.extra_fields[OFF_POLICY_KEY] is True and k == len(prefix) > 0
    assert out.response_ids[:k] == prefix
    assert len(out.response_ids) > k  # the policy continued
    assert len(out.response_ids) <= RESPONSE_LEN
    assert client.calls == [out.prompt_ids + prefix]
    assert out.response_logprobs[:k] == [0.0] * k  # filler under the prefix, masked out downstream
    assert all(lp <= 0.0 for lp in out.response_logprobs[k:])
    assert out.extra_fields["global_steps"] == STEP - 1  # tags from the server call


def test_without_rollout_logprobs_no_filler(tiny_model_dir):
    outs, _, _ = _run_sessions(tiny_model_dir, sessions=[0], logprobs=False)
    assert outs[0].response_logprobs is None


TRACE_B = "<think>\nSubtract 13: 2x = 16.\n</think>\nSo $x = \\boxed{8}$."


@pytest.mark.parametrize("use_target_lst", [True, False])
def test_off_policy_slots_take_their_own_trace_from_target_lst(tiny_model_dir, use_target_lst):
    overrides = ("actor_rollout_ref.rollout.n_prefix=2", f"actor_rollout_ref.rollout.use_target_lst={use_target_lst}")
    row = {"target_lst": [TARGET[0], {"role": "assistant", "content": TRACE_B}]}
    outs, client, tokenizer = _run_sessions(tiny_model_dir, overrides, sessions=range(2), row=row)
    encoder = TargetEncoder(tokenizer, RESPONSE_LEN)
    first = encoder.encode(TARGET, outs[0].prompt_ids).ids
    second = encoder.encode(TRACE_B, outs[0].prompt_ids).ids if use_target_lst else first
    assert [o.response_ids for o in outs] == [first, second] and not client.calls


def test_trace_for_slot_falls_back_to_target():
    assert trace_for_slot(None, 0, fallback="t") == "t"
    assert trace_for_slot([], 1, fallback="t") == "t"
    assert trace_for_slot(["a", "b"], 3, fallback="t") == "b"  # cycles over the row's traces
    assert trace_for_slot([[{"role": "assistant", "content": "a"}]], 0, fallback="t") == {
        "role": "assistant",
        "content": "a",
    }


class _LocalHandle:
    """The server's Ray handle as the client calls it (``handle.generate.remote(...)``), in process.

    On its first request it aborts generation part way, as the trainer does before a weight update in
    the async modes, moves the server to the next weight version and resumes admission.
    """

    def __init__(self, server: HFRolloutServer, next_version: int):
        self.server = server
        self.next_version = next_version
        self.calls: list[list[int]] = []
        self.stop_reasons: list[str] = []
        self.generate = self  # handle.generate.remote

    async def remote(self, *, prompt_ids, sampling_params, request_id, **kwargs):
        self.calls.append(list(prompt_ids))
        task = asyncio.ensure_future(
            self.server.generate(prompt_ids=prompt_ids, sampling_params=sampling_params, request_id=request_id)
        )
        if len(self.calls) == 1:
            while (await self.server.get_state())["running"] == 0:
                await asyncio.sleep(0.001)
            await self.server.abort_all_requests()
            await self.server.set_global_steps(self.next_version)
            await self.server.resume_generation()
        out = await task
        self.stop_reasons.append(out.stop_reason)
        return out


def test_prefix_guided_sample_keeps_its_prefix_mask_when_resumed_as_a_partial_rollout(tiny_model_dir):
    """Async modes: veRL's FullyAsyncLLMServerClient resumes an aborted request from prompt + tokens so
    far with newer weights; the target prefix stays the sample's first tokens and its off-policy mask."""
    from transformers import AutoTokenizer
    from verl.workers.rollout.llm_server import FullyAsyncLLMServerClient

    class LocalClient(FullyAsyncLLMServerClient):  # veRL's resume loop; only the routing is local
        def __init__(self, config, handle):
            super().__init__(config=config)
            self.handle = handle

        async def _acquire_server(self, request_id, **extra):
            return "local", self.handle

        def _release_server(self, server_id, request_id=None):
            pass

    ratio = ("actor_rollout_ref.rollout.min_prefix_ratio=0.5", "actor_rollout_ref.rollout.max_prefix_ratio=0.5")
    cfg = _config(tiny_model_dir, *ratio, "actor_rollout_ref.rollout.name=hf_cpu")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model_config = type("ModelConfig", (), {"local_path": str(tiny_model_dir)})()

    async def main():
        server = HFRolloutServer(cfg.actor_rollout_ref.rollout, model_config)
        await server.set_global_steps(STEP - 1)
        handle = _LocalHandle(server, next_version=STEP)
        loop = MixAgentLoop(
            trainer_config=DictConfigWrap(cfg),
            server_manager=LocalClient(cfg, handle),
            tokenizer=tokenizer,
            processor=None,
            dataset_cls=RLHFDataset,
            data_config=DictConfigWrap(cfg.data),
        )
        # ignore_eos: the first attempt is still generating when it is aborted
        params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True, "ignore_eos": True}
        kwargs = {"raw_prompt": MESSAGES, "target": TARGET, "uid": "prompt-0", "global_steps": STEP}
        out = await loop.run(params, session_id=0, **kwargs, **{TRAIN_BATCH_KEY: True, PROGRESS_KEY: 0.5})
        return out, handle

    out, handle = asyncio.run(main())
    encoder = TargetEncoder(tokenizer, RESPONSE_LEN)
    prefix = encoder.prefix(encoder.encode(TARGET, out.prompt_ids).ids, 0.5)
    k = out.extra_fields[PREFIX_LEN_KEY]
    assert handle.stop_reasons[0] == "aborted" and len(handle.calls) == 2
    first, resumed = handle.calls
    assert first == out.prompt_ids + prefix
    # the resumed request continues the first one: prompt + prefix + the tokens generated before the abort
    generated_before_abort = len(resumed) - len(out.prompt_ids)
    assert resumed[: len(first)] == first and resumed == out.prompt_ids + out.response_ids[:generated_before_abort]
    assert k == len(prefix) > 0 and out.response_ids[:k] == prefix
    assert len(out.response_ids) == RESPONSE_LEN  # one budget across both attempts
    assert out.response_logprobs[:k] == [0.0] * k and all(lp <= 0.0 for lp in out.response_logprobs[k:])
    mask = off_policy_token_mask(NonTensorStack(out.extra_fields), torch.ones(1, len(out.response_ids)))
    assert mask[0, :k].all() and not mask[0, k:].any()
    # the generated part spans two weight versions
    assert (out.extra_fields["min_global_steps"], out.extra_fields["max_global_steps"]) == (STEP - 1, STEP)


def test_sessions_of_one_prompt_tokenise_it_once(tiny_model_dir, monkeypatch):
    """The n sessions of a prompt, run concurrently, share one tokenisation; their prompt ids are the
    builder's own, and another prompt gets its own ids."""
    from transformers import AutoTokenizer

    cfg = _config(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model_config = type("ModelConfig", (), {"local_path": str(tiny_model_dir)})()
    other = [{"role": "user", "content": "What is 3 + 4?"}]
    builds = []

    async def main():
        server = HFRolloutServer(cfg.actor_rollout_ref.rollout, model_config)
        client = ServerClient(server)

        def make_loop():
            return MixAgentLoop(
                trainer_config=DictConfigWrap(cfg), server_manager=client, tokenizer=tokenizer, processor=None,
                dataset_cls=RLHFDataset, data_config=DictConfigWrap(cfg.data),
            )

        builder_cls = type(make_loop().continuous_token_builder)
        reference = {
            "a": make_loop().continuous_token_builder.build_initial_tokens(MESSAGES),
            "b": make_loop().continuous_token_builder.build_initial_tokens(other),
        }
        original = builder_cls.build_initial_tokens

        def counted(self, messages, **kwargs):
            builds.append(messages[0]["content"])
            return original(self, messages, **kwargs)

        monkeypatch.setattr(builder_cls, "build_initial_tokens", counted)
        params = {"temperature": 1.0, "max_tokens": 4, "logprobs": True}
        runs = [
            make_loop().run(dict(params), session_id=s, raw_prompt=messages, uid=uid, global_steps=1)
            for uid, messages in (("a", MESSAGES), ("b", other))
            for s in range(N)
        ]
        return await asyncio.gather(*runs), reference

    outs, reference = asyncio.run(main())
    assert sorted(builds) == sorted([MESSAGES[0]["content"], other[0]["content"]])  # once per prompt
    for i, out in enumerate(outs):
        assert out.prompt_ids == reference["a" if i < N else "b"]
