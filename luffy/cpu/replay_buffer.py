"""V1 replay buffer whose wait between polls is configurable.

veRL's sync ``ReplayBuffer`` sleeps ``poll_interval`` (2 s, not exposed in the config) between looks
at TransferQueue while generation runs, so a step whose generation takes 0.3 s waits 2 s. On a tiny
CPU run that is most of the step. veRL loads a custom sampler from the config; this one only
shortens the interval and is otherwise veRL's buffer::

    trainer.v1.sampler.custom_sampler.path=pkg://luffy.cpu.replay_buffer
    trainer.v1.sampler.custom_sampler.name=FastPollReplayBuffer
    +trainer.v1.sampler.sampler_kwargs.poll_interval_s=0.02   # seconds between polls (default 0.02)

``FastPollReplayBuffer`` is for ``trainer.v1.trainer_mode=sync`` without DAPO group filtering (veRL passes
a custom sampler only the base constructor arguments), which is what plain GRPO and LUFFY use;
``FastPollReplayBufferAsync`` is veRL's ``ReplayBufferAsync`` (staleness eviction and refill, the
``colocate_async`` and ``separate_async`` modes) with the same shorter interval.
"""

from __future__ import annotations

import logging
from typing import Any

from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync

logger = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL_S = 0.02


def _poll_interval(kwargs: dict[str, Any]) -> float:
    sampler_kwargs = kwargs.get("sampler_kwargs") or {}
    interval = float(sampler_kwargs.get("poll_interval_s", DEFAULT_POLL_INTERVAL_S))
    if interval <= 0:
        raise ValueError(f"trainer.v1.sampler.sampler_kwargs.poll_interval_s={interval}: must be > 0 seconds")
    return interval


class FastPollReplayBuffer(ReplayBuffer):
    """veRL's sync ``ReplayBuffer`` polling every ``sampler_kwargs.poll_interval_s`` seconds."""

    def __init__(self, **kwargs: Any) -> None:
        interval = _poll_interval(kwargs)
        mode = kwargs.get("trainer_mode", "sync")
        if mode != "sync":
            raise ValueError(
                f"FastPollReplayBuffer is for trainer.v1.trainer_mode=sync, not {mode!r}; set "
                "trainer.v1.sampler.custom_sampler.name=FastPollReplayBufferAsync"
            )
        super().__init__(poll_interval=interval, **kwargs)
        logger.info("replay buffer polls TransferQueue every %.3f s", interval)


class FastPollReplayBufferAsync(ReplayBufferAsync):
    """veRL's ``ReplayBufferAsync`` (async modes) polling every ``sampler_kwargs.poll_interval_s`` seconds."""

    def __init__(self, **kwargs: Any) -> None:
        interval = _poll_interval(kwargs)
        mode = kwargs.get("trainer_mode", "sync")
        if mode == "sync":
            raise ValueError(
                "FastPollReplayBufferAsync is for the async trainer modes; with trainer.v1.trainer_mode=sync set "
                "trainer.v1.sampler.custom_sampler.name=FastPollReplayBuffer"
            )
        super().__init__(poll_interval=interval, **kwargs)
        logger.info("async replay buffer polls TransferQueue every %.3f s", interval)
