"""The stream ingest queue of a real nats-server (sim.nats_broker, community.brokerconf_nats.IngestBuffer).

A hub's MQTT QoS 1 publish enters a JetStream stream like a core NATS publish: the server answers before the
stream has stored it. From nats-server 2.11 a stream's ingest queue is bounded and, when full, what arrives is
dropped with a warning in the log. Here core publishes stand in for the hubs' frames (the same path into the
stream, without 10,000 MQTT sessions); a JetStream publish after them is acked only once the stream has handled
everything queued before it, so its ack is the event awaited, never a sleep (a full queue refuses the marker with
429 too: it is asked again, the refusal being the server's answer, not a timeout).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import nats.js.errors
import pytest

from community.brokerconf_nats import IngestBuffer
from sim.nats_broker import NatsBroker, nats_server_available

pytestmark = pytest.mark.skipif(not nats_server_available(), reason="nats-server is not installed (scripts/test)")
BOUND = 60  # seconds: an upper bound for awaiting events, never a sleep
FRAMES = 30_000
FRAME = b"f" * 1024  # about a storm frame's size
TOO_MANY_REQUESTS = 429


async def _burst(url: str) -> int:
    """Publish FRAMES core messages into a stream at once, then one acked marker; what the stream stored."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="UP", subjects=["up.>"])
        for _ in range(FRAMES):
            await nc.publish("up.frame", FRAME)
        await nc.flush()
        async with asyncio.timeout(BOUND):
            while True:
                try:
                    marker = await js.publish("up.marker", b"m", timeout=BOUND)
                except nats.js.errors.APIError as exc:  # the full queue refuses the marker too (429): ask again
                    if exc.code != TOO_MANY_REQUESTS:
                        raise
                else:
                    return marker.seq - 1
    finally:
        await nc.close()


async def test_a_full_ingest_queue_drops_frames_the_sender_was_told_were_taken(tmp_path: Path) -> None:
    async with NatsBroker(tmp_path, ingest_buffer=IngestBuffer(messages=1, size_bytes=1024 * 1024)) as broker:
        stored = await _burst(broker.url)
        if not broker.ingest_limits:  # a server before 2.11 has no such queue limit
            assert stored == FRAMES
            return
        async with asyncio.timeout(BOUND):
            await broker.ingest_dropped.wait()
        assert stored < FRAMES
        assert broker.ingest_drop_warnings >= 1


async def test_a_districts_buffer_takes_every_hubs_window_at_once(tmp_path: Path) -> None:
    # 1,250 hubs' windows of 24 frames: FRAMES at once, three times the server's default of 10,000.
    async with NatsBroker(tmp_path, ingest_buffer=IngestBuffer.for_hubs(FRAMES // 24)) as broker:
        assert await _burst(broker.url) == FRAMES
        assert broker.ingest_drop_warnings == 0
