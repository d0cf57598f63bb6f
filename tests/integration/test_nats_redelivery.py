"""Where re-received envelopes come from, on a real nats-server (issue 15: the storm's unexplained replays): the
JetStream worker tells a frame the stream delivered again (fetched and not acked within ack_wait) from a second stream
message carrying a payload already delivered (one publish stored twice), and counts the replays each carried, under
/metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import nats
import pytest
from nats_server import NatsNode, nats_server_path
from test_nats_metrics import scrape
from test_platform_supervision import BOUND, frame

from community.metrics import MetricsAddress, serve_metrics
from community.nats_config import NatsSettings
from community.nats_ingest import NatsIngestWorker
from community.samples import bp_record
from community.storage import EnvelopeOutcome, EnvelopeToStore, Refusal, SqliteStorage
from community.wire import PlatformCodec
from gateway.wire import HubWire
from protocols.keys import HubIdentity, PlatformIdentity

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(nats_server_path() is None, reason="nats-server is not installed (scripts/test installs it)"),
]


class HeldAfterCommit(SqliteStorage):
    """The real SQLite storage whose FIRST batch commits and then waits for :attr:`gate`: its worker has stored the
    frame and not acked it, as a worker slower than ack_wait."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.committed = asyncio.Event()
        self.gate = asyncio.Event()

    async def store_batch(
        self, envelopes: Sequence[EnvelopeToStore], refused: Sequence[Refusal] = ()
    ) -> list[EnvelopeOutcome]:
        outcomes = await super().store_batch(envelopes, refused)
        if not self.committed.is_set():
            self.committed.set()
            await self.gate.wait()
        return outcomes


async def publish(url: str, *payloads: bytes) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for payload in payloads:  # each a stream message of its own once publish returns
            await js.publish("carehub.v1.hub-a.up", payload)
    finally:
        await nc.close()


async def test_a_frame_not_acked_within_ack_wait_is_counted_as_redelivered(tmp_path: Path) -> None:
    platform, hub = PlatformIdentity.generate(), HubIdentity.generate("hub-a")
    wire = HubWire(hub, platform.public)
    db = tmp_path / "platform.db"
    async with (
        NatsNode(tmp_path / "nats") as node,
        HeldAfterCommit(db) as slow_storage,
        SqliteStorage(db) as other_storage,
    ):
        await slow_storage.enroll_hub(hub.public)

        def settings(name: str) -> NatsSettings:
            return NatsSettings(servers=(node.url,), ack_wait_s=1.0, fetch_wait_s=0.2, client_name=name)

        async with NatsIngestWorker(settings("slow"), slow_storage, PlatformCodec(platform)) as slow:
            async with asyncio.timeout(BOUND):
                await slow.connected.wait()
            await publish(node.url, frame(wire, 1, [bp_record("hub-a", 1)]))
            async with asyncio.timeout(BOUND):
                await slow_storage.committed.wait()  # stored by the slow worker, not acked to the stream
            # The other worker shares the durable consumer: the stream hands it the frame once ack_wait passed.
            async with NatsIngestWorker(settings("other"), other_storage, PlatformCodec(platform)) as other:
                async with asyncio.timeout(BOUND):
                    while other.stats.redelivered_replays < 1:  # `stored` is set after each batch is classified
                        other.stored.clear()
                        await other.stored.wait()
                async with (
                    serve_metrics(other, MetricsAddress("127.0.0.1", 0)) as port,
                    aiohttp.ClientSession() as http,
                ):
                    samples = await scrape(http, f"http://127.0.0.1:{port}")
                slow_storage.gate.set()
    assert other.stats.replays == 1
    assert samples["carehub_ingest_redelivered_frames_total", ()] == 1
    assert samples["carehub_ingest_redelivered_replays_total", ()] == 1
    assert samples["carehub_ingest_duplicate_message_frames_total", ()] == 0
    assert slow.stats.envelopes_stored == 1
    assert slow.stats.redelivered_frames == 0


async def test_one_payload_stored_twice_in_the_stream_is_a_duplicate_message(tmp_path: Path) -> None:
    platform, hub = PlatformIdentity.generate(), HubIdentity.generate("hub-a")
    wire = HubWire(hub, platform.public)
    async with NatsNode(tmp_path / "nats") as node, SqliteStorage(tmp_path / "platform.db") as storage:
        await storage.enroll_hub(hub.public)
        settings = NatsSettings(servers=(node.url,), fetch_wait_s=0.2)
        async with NatsIngestWorker(settings, storage, PlatformCodec(platform)) as worker:
            async with asyncio.timeout(BOUND):
                await worker.connected.wait()
            same = frame(wire, 1, [bp_record("hub-a", 1)])
            await publish(node.url, same, same)
            async with asyncio.timeout(BOUND):
                while worker.stats.duplicate_message_frames < 1:  # `stored` is set after each batch is classified
                    worker.stored.clear()
                    await worker.stored.wait()
    assert worker.stats.envelopes_stored == 1
    assert worker.stats.replays == 1
    assert worker.stats.duplicate_message_frames == 1
    assert worker.stats.duplicate_message_replays == 1
    assert worker.stats.redelivered_frames == 0
