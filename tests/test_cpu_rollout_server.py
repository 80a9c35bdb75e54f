"""The CPU rollout server behaves like veRL's LLM servers: sampling, log-probs, weights, control.

Real components only: a tiny random-weight model, the server as a Ray actor in a local cluster, and
the worker-side adapter pushing weights. Reference values come from plain transformers forwards.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import pytest
import ray
import torch
from transformers import AutoModelForCausalLM

from luffy.cpu.hf_server import HFRolloutServer
from luffy.cpu.rollout import HFCpuReplica, HFCpuServerAdapter

pytestmark = pytest.mark.slow  # Ray actors serving the tiny model (~60 s under load)

PROMPT = [5, 17, 33, 80, 9, 101, 7]
SHORT_PROMPT = [44, 12]


@pytest.fixture(scope="module")
def ray_cluster():
    """A small in-process local Ray cluster, shut down after the module."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


def _rollout_config(tp: int = 1):
    from verl.workers.config import RolloutConfig

    # response_length leaves room for the long generation the abort test interrupts
    return RolloutConfig(name="hf_cpu", prompt_length=64, response_length=3000, tensor_model_parallel_size=tp)


def _model_config(path: Path):
    from verl.workers.config import HFModelConfig

    return HFModelConfig(path=str(path))


def _load(path: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


@torch.no_grad()
def _greedy(model, prompt: list[int], steps: int) -> list[int]:
    """The model's own argmax continuation, one full forward per token."""
    ids = list(prompt)
    for _ in range(steps):
        ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt) :]


@torch.no_grad()
def _logprobs(model, prompt: list[int], response: list[int], temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / T) of each response token under a fresh forward of prompt + response."""
    logits = model(torch.tensor([prompt + response])).logits[0, len(prompt) - 1 : -1] / temperature  # (R, V)
    return logits.log_softmax(-1).gather(-1, torch.tensor(response)[:, None]).squeeze(-1)  # (R,)


def _start_server(path: Path):
    cls = ray.remote(HFRolloutServer)
    server = cls.options(num_cpus=0, max_concurrency=64).remote(
        config=_rollout_config(), model_config=_model_config(path)
    )
    ray.get(server.get_state.remote())
    return server


@pytest.fixture(scope="module")
def eos_token(tiny_model_dir) -> int:
    """The 4th token of the base model's greedy continuation of PROMPT."""
    return _greedy(_load(tiny_model_dir), PROMPT, 12)[3]


@pytest.fixture(scope="module")
def server(ray_cluster, tiny_model_dir, eos_token, tmp_path_factory):
    """One server for the module, on a copy of the tiny model whose EOS is ``eos_token``."""
    ckpt = tmp_path_factory.mktemp("eos_model") / "model"
    shutil.copytree(tiny_model_dir, ckpt)
    gen_cfg = json.loads((ckpt / "generation_config.json").read_text())
    gen_cfg["eos_token_id"] = eos_token
    (ckpt / "generation_config.json").write_text(json.dumps(gen_cfg))
    handle = _start_server(ckpt)
    yield handle
    ray.kill(handle)


def _generate(server, prompt, **params):
    return ray.get(server.generate.remote(prompt_ids=prompt, sampling_params=params, request_id="r"))


def test_greedy_matches_argmax_and_logprobs_match_forward(server, tiny_model_dir):
    model = _load(tiny_model_dir)
    out = _generate(server, PROMPT, temperature=0.0, max_tokens=12, ignore_eos=True, logprobs=True)
    assert out.token_ids == _greedy(model, PROMPT, 12)
    assert out.stop_reason == "completed"
    torch.testing.assert_close(torch.tensor(out.log_probs), _logprobs(model, PROMPT, out.token_ids), atol=1e-4, rtol=0)


def test_batched_requests_equal_single_requests(server, tiny_model_dir):
    """Concurrent requests share a left-padded batch; padding must not change any result."""
    model = _load(tiny_model_dir)
    params = dict(temperature=0.0, max_tokens=8, ignore_eos=True, logprobs=True)
    refs = [server.generate.remote(prompt_ids=p, sampling_params=params, request_id=str(i))
            for i, p in enumerate([PROMPT, SHORT_PROMPT, PROMPT[:4]])]
    for p, out in zip([PROMPT, SHORT_PROMPT, PROMPT[:4]], ray.get(refs)):
        assert out.token_ids == _greedy(model, p, 8)
        torch.testing.assert_close(torch.tensor(out.log_probs), _logprobs(model, p, out.token_ids), atol=1e-4, rtol=0)


def test_sampled_logprobs_are_tempered_and_max_tokens_respected(server, tiny_model_dir):
    model = _load(tiny_model_dir)
    out = _generate(server, PROMPT, temperature=0.7, max_tokens=9, ignore_eos=True, logprobs=True)
    assert len(out.token_ids) == 9 and len(out.log_probs) == 9
    expected = _logprobs(model, PROMPT, out.token_ids, temperature=0.7)
    torch.testing.assert_close(torch.tensor(out.log_probs), expected, atol=1e-4, rtol=0)
    no_lp = _generate(server, PROMPT, temperature=1.0, max_tokens=3)
    assert no_lp.log_probs is None and len(no_lp.token_ids) <= 3


def test_top_p_keeps_samples_inside_the_nucleus(server, tiny_model_dir):
    model = _load(tiny_model_dir)
    # a vanishing nucleus holds only the most likely token: sampling degenerates to greedy
    tiny_p = _generate(server, PROMPT, temperature=1.0, top_p=1e-6, max_tokens=6, ignore_eos=True)
    assert tiny_p.token_ids == _greedy(model, PROMPT, 6)
    top_k1 = _generate(server, PROMPT, temperature=1.0, top_k=1, max_tokens=6, ignore_eos=True)
    assert top_k1.token_ids == _greedy(model, PROMPT, 6)
    # top_p=0.3: each sampled token lies in the smallest set of tokens holding >= 30% of the mass
    out = _generate(server, PROMPT, temperature=1.0, top_p=0.3, max_tokens=10, ignore_eos=True)
    with torch.no_grad():
        logits = model(torch.tensor([PROMPT + out.token_ids])).logits[0, len(PROMPT) - 1 : -1]  # (R, V)
    for step, tok in enumerate(out.token_ids):
        probs, order = logits[step].softmax(-1).sort(descending=True)
        size = int((probs.cumsum(0) - probs < 0.3).sum())  # tokens whose preceding mass is < top_p
        assert tok in order[:size].tolist()


def test_stops_at_eos_and_returns_it(server, tiny_model_dir, eos_token):
    """EOS is the 4th greedy token: generation ends right after emitting it, unless ignore_eos."""
    greedy = _greedy(_load(tiny_model_dir), PROMPT, 12)
    out = _generate(server, PROMPT, temperature=0.0, max_tokens=12)
    assert out.token_ids == greedy[: greedy.index(eos_token) + 1]
    assert out.extra_fields["finish_reason"] == "stop"
    ignored = _generate(server, PROMPT, temperature=0.0, max_tokens=12, ignore_eos=True)
    assert ignored.token_ids == greedy and ignored.extra_fields["finish_reason"] == "length"


def _perturbed_state(model, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: v + 0.5 * torch.randn(v.shape, generator=gen) for k, v in model.state_dict().items()}


def test_replicas_each_receive_their_weights(ray_cluster, tiny_model_dir, monkeypatch):
    """Two replicas (tp=1): rank r pushes through its adapter to replica r; log-probs follow the push."""
    base = _load(tiny_model_dir)
    replicas = [HFCpuReplica(r, _rollout_config(), _model_config(tiny_model_dir), gpus_per_node=1) for r in (0, 1)]

    async def launch() -> None:
        await asyncio.gather(*[rep.launch_servers() for rep in replicas])

    asyncio.run(launch())
    try:
        states = [_perturbed_state(base, seed) for seed in (1, 2)]
        for rank, state in enumerate(states):
            monkeypatch.setenv("RANK", str(rank))
            adapter = HFCpuServerAdapter(config=_rollout_config(), model_config=None)
            assert adapter.replica_rank == rank
            asyncio.run(adapter.update_weights(iter(state.items()), global_steps=7 + rank))
        for rank, (rep, state) in enumerate(zip(replicas, states)):
            out = _generate(rep.server_handle, PROMPT, temperature=1.0, max_tokens=8, ignore_eos=True, logprobs=True)
            assert out.extra_fields["global_steps"] == 7 + rank
            new_model = _load(tiny_model_dir)
            new_model.load_state_dict(state)
            torch.testing.assert_close(
                torch.tensor(out.log_probs), _logprobs(new_model, PROMPT, out.token_ids), atol=1e-4, rtol=0
            )
            old = _logprobs(base, PROMPT, out.token_ids)
            assert (old - torch.tensor(out.log_probs)).abs().max() > 1e-2
        # the other rank of a tp=2 replica only joins the gather: it sends nothing
        monkeypatch.setenv("RANK", "1")
        follower = HFCpuServerAdapter(config=_rollout_config(tp=2), model_config=None)
        before = ray.get(replicas[0].server_handle.get_weights_version.remote())
        asyncio.run(follower.update_weights(iter(states[1].items()), global_steps=99))
        assert ray.get(replicas[0].server_handle.get_weights_version.remote()) == before
    finally:
        for rep in replicas:
            ray.kill(rep.server_handle)


def test_weight_names_and_shapes_are_checked(server):
    with pytest.raises(ray.exceptions.RayTaskError, match="not a parameter"):
        ray.get(server.update_weights.remote([("no.such.weight", torch.zeros(1))], last=True))


def test_sleep_wake_abort_resume(server):
    ray.get(server.sleep.remote())
    assert ray.get(server.get_state.remote())["asleep"] is True
    ray.get(server.wake_up.remote(tags=["weights"]))
    assert ray.get(server.get_state.remote())["asleep"] is False

    long_params = dict(temperature=1.0, max_tokens=2500, ignore_eos=True)
    running = server.generate.remote(prompt_ids=PROMPT, sampling_params=long_params, request_id="long")
    deadline = time.monotonic() + 60
    while not any(ray.get(server.get_state.remote())[k] for k in ("queued", "running")):  # until it arrived
        assert time.monotonic() < deadline, "the long request never reached the server"
        time.sleep(0.01)
    ray.get(server.abort_all_requests.remote())
    aborted = ray.get(running, timeout=60)
    assert aborted.stop_reason == "aborted"
    # while paused, new requests park; resume_generation lets them through
    parked = server.generate.remote(prompt_ids=PROMPT, sampling_params=dict(max_tokens=2), request_id="p")
    ready, _ = ray.wait([parked], timeout=1.0)
    assert not ready
    ray.get(server.resume_generation.remote())
    done = ray.get(parked, timeout=60)
    assert done.stop_reason == "completed" and 1 <= len(done.token_ids) <= 2


def test_oversized_prompt_is_rejected(server):
    with pytest.raises(ray.exceptions.RayTaskError, match="no room"):
        _generate(server, [1] * 3064, max_tokens=1)


def test_sampling_params_are_normalised_like_vllm(tiny_model_dir):
    """Defaults and clamping of max_tokens, vLLM's logprobs=0, None meaning "default"."""
    srv = HFRolloutServer(config=_rollout_config(), model_config=_model_config(tiny_model_dir))
    room = 64 + 3000 - 10
    assert srv.sampling_spec(10, {}).max_tokens == 3000  # response budget
    assert srv.sampling_spec(100, {}).max_tokens == 64 + 3000 - 100  # what the prompt leaves of it
    assert srv.sampling_spec(10, {"max_tokens": 10**6}).max_tokens == room
    assert srv.sampling_spec(10, {"max_new_tokens": 0}).max_tokens == 1
    spec = srv.sampling_spec(10, {"temperature": None, "top_k": None, "logprobs": 0, "seed": 3})
    assert (spec.temperature, spec.top_k, spec.logprobs) == (1.0, -1, True)
    assert srv.sampling_spec(10, {"temperature": 0, "logprobs": False}).greedy


@pytest.mark.parametrize("late", [[SHORT_PROMPT], [PROMPT + PROMPT + [3, 4]], [PROMPT[:4], SHORT_PROMPT]])
def test_requests_joining_a_running_batch_equal_single_requests(tiny_model_dir, late):
    """Continuous batching: prompts admitted between decode steps (shorter or longer than the batch so far)
    get the same greedy tokens and log-probs as alone, and the first prompt's are unchanged."""
    from luffy.cpu.hf_generator import HFGenerator, SamplingSpec

    model, gen = _load(tiny_model_dir), HFGenerator(str(tiny_model_dir))
    spec = SamplingSpec(max_tokens=8, temperature=0.0, ignore_eos=True, logprobs=True)
    polls = []

    def admit():  # the late prompts arrive after the 3rd decode step
        polls.append(1)
        return list(late) if len(polls) == 3 else []

    results = gen.generate([PROMPT], spec, admit=admit)
    assert len(results) == 1 + len(late)
    for prompt, res in zip([PROMPT, *late], results):
        assert res.token_ids == _greedy(model, prompt, 8)
        assert res.finish_reason == "length"
        torch.testing.assert_close(
            torch.tensor(res.log_probs), _logprobs(model, prompt, res.token_ids), atol=1e-4, rtol=0
        )
    assert len(polls) >= 3 + 7  # the batch ran on until the late prompts had their 8 tokens


def test_finished_rows_leave_the_batch_and_the_rest_are_unchanged(tiny_model_dir, eos_token):
    """A row that emits EOS leaves the decode batch; the rows still running, and one that joins after it
    left, get their solo greedy tokens and log-probs."""
    from luffy.cpu.hf_generator import HFGenerator, SamplingSpec

    model, gen = _load(tiny_model_dir), HFGenerator(str(tiny_model_dir))
    gen.eos_token_ids = [eos_token]  # PROMPT's 4th greedy token
    others = [p for p in (SHORT_PROMPT, PROMPT[:4], [9, 9, 2, 40]) if eos_token not in _greedy(model, p, 10)]
    assert others, "no prompt continues past the EOS token"
    spec = SamplingSpec(max_tokens=10, temperature=0.0, logprobs=True)
    sizes, polls = [], []

    def admit():  # record the batch size the generator decodes, and add a prompt after the EOS
        polls.append(1)
        return [others[0]] if len(polls) == 6 else []

    original = gen.model.forward

    def forward(*args, **kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    gen.model.forward = forward
    results = gen.generate([PROMPT, *others], spec, admit=admit)
    greedy = _greedy(model, PROMPT, 12)
    assert results[0].token_ids == greedy[: greedy.index(eos_token) + 1] and results[0].finish_reason == "stop"
    for prompt, res in zip([*others, others[0]], results[1:]):
        assert res.token_ids == _greedy(model, prompt, 10) and res.finish_reason == "length"
        torch.testing.assert_close(
            torch.tensor(res.log_probs), _logprobs(model, prompt, res.token_ids), atol=1e-4, rtol=0
        )
    assert len(others) + 1 in sizes and len(others) in sizes  # the EOS row left before the late one joined


def test_a_request_arriving_during_a_batch_joins_it(server, tiny_model_dir):
    """A request sent while a long batch decodes joins that batch (the server reports 2 running)."""
    model = _load(tiny_model_dir)
    params = dict(temperature=0.0, max_tokens=1500, ignore_eos=True)
    long = server.generate.remote(prompt_ids=PROMPT, sampling_params=params, request_id="a")
    while ray.get(server.get_state.remote())["running"] == 0:
        time.sleep(0.01)
    late = server.generate.remote(prompt_ids=SHORT_PROMPT, sampling_params=params, request_id="b")
    deadline, running = time.monotonic() + 60, 1
    while running < 2 and time.monotonic() < deadline and not ray.wait([long], timeout=0)[0]:
        running = ray.get(server.get_state.remote())["running"]
    assert running == 2, "the late request did not join the running batch"
    assert ray.get(late).token_ids[:8] == _greedy(model, SHORT_PROMPT, 8)
    assert len(ray.get(long).token_ids) == 1500
