"""A JetStream worker's lane ends when it is cancelled, even when nats-py loses the cancellation.

nats-py's ``fetch`` waits through ``asyncio.wait_for``, which on Python 3.11 may hand back a result and drop the
caller's cancellation (bpo-42130; ``runtime.aio.keep_cancellation``). A lane that then fetched on kept the worker's
shutdown waiting for ever: seen once under load in the clean-clone suite, the 5,000-envelope panic test hanging on
its worker's exit. Here a subscription that always loses the cancellation stands in for that race, so the test does
not depend on winning it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from community.nats_config import NatsSettings
from community.nats_ingest import NatsIngestWorker
from community.storage import SqliteStorage
from community.wire import PlatformCodec
from protocols.keys import PlatformIdentity

BOUND = 30  # seconds: an upper bound for awaiting events, never a sleep


class _LosingSubscription:
    """A pull subscription whose ``fetch`` waits for a frame that never comes and, the first time it is cancelled,
    returns no frames as if the wait had ended: that cancellation is lost (later ones are not, as in the race)."""

    def __init__(self) -> None:
        self.fetching = asyncio.Event()
        self.fetches = 0
        self.lost = False

    async def fetch(self, batch: int, timeout: float) -> list[Any]:  # noqa: ASYNC109  nats-py's signature
        self.fetches += 1
        self.fetching.set()
        try:
            await asyncio.Event().wait()  # no frame arrives
        except asyncio.CancelledError:
            if self.lost:
                raise
            self.lost = True
        return []


class _OpenConnection:
    is_closed = False


async def test_a_lane_whose_fetch_lost_the_cancellation_still_ends(tmp_path: Path) -> None:
    async with SqliteStorage(tmp_path / "platform.db") as storage:
        worker = NatsIngestWorker(
            NatsSettings(servers=("nats://127.0.0.1:1",)), storage, PlatformCodec(PlatformIdentity.generate())
        )
        sub = _LosingSubscription()
        lane = asyncio.create_task(worker._lane(_OpenConnection(), (None, None), sub, 4))  # type: ignore[arg-type]
        async with asyncio.timeout(BOUND):
            await sub.fetching.wait()
        lane.cancel()
        done, _ = await asyncio.wait({lane}, timeout=BOUND)  # a bound: the lane ends at once or never
        if lane not in done:  # it fetched on: end it with a cancellation that is not lost, then fail
            lane.cancel()
            await asyncio.gather(lane, return_exceptions=True)
        assert lane in done, f"the lane fetched on after its cancellation ({sub.fetches} fetches)"
        assert lane.cancelled()
        assert sub.fetches == 1
