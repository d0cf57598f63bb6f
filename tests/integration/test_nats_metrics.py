"""The JetStream worker's operations (issue 15 item 10) on a real nats-server: ``carehub platform run --metrics`` with
a ``[nats]`` table serves /metrics and /healthz under the Mosquitto worker's metric names, plus each stream's consumer
lag (routine and alarm stream); the lag counts what waits in the stream while a batch is being stored; ``--console``
serves the doctor's console, whose ack reaches the hub through NATS's MQTT listener."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import aiomqtt
import argon2
import nats
import pytest
from nats_server import NatsNode, nats_server_path
from test_nats_platform_run import write_config
from test_platform_supervision import BOUND, enroll, frame, next_ack, spawn, stop, wait_ingesting

from community.console.accounts import AccountStore, Role, Sharing, SharingLevel, accounts_path
from community.ingest_core import StreamLag
from community.metrics import MetricsAddress, health_of, serve_metrics
from community.nats_config import ALARM_STREAM, UP_STREAM, NatsSettings
from community.nats_ingest import NatsIngestWorker
from community.samples import T0, alarm_record, bp_record
from community.storage import EnvelopeOutcome, EnvelopeToStore, Refusal, SqliteStorage
from community.wire import PlatformCodec
from gateway.wire import HubWire
from protocols.keys import HubIdentity, PlatformIdentity
from protocols.messages import AlarmAcknowledgement

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(nats_server_path() is None, reason="nats-server is not installed (scripts/test installs it)"),
]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: aiohttp.ClientSession, base: str) -> Samples:
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    async with http.get(f"{base}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def lag(samples: Samples, stream: str) -> tuple[float | None, float | None]:
    labels = (("stream", stream),)
    return (
        samples.get(("carehub_ingest_stream_pending", labels)),
        samples.get(("carehub_ingest_stream_ack_pending", labels)),
    )


async def test_platform_run_on_jetstream_serves_metrics_and_health(tmp_path: Path) -> None:
    platform, hub = PlatformIdentity.generate(), HubIdentity.generate("hub-a")
    async with NatsNode(tmp_path / "nats") as node:
        cfg = write_config(tmp_path, node, platform)
        await enroll(tmp_path / "platform.db", hub)
        proc = await spawn(["platform", "run", "-c", str(cfg), "--metrics", "127.0.0.1:0"])
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(BOUND):
                announced = (await proc.stdout.readline()).decode()
            match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", announced)
            assert match, announced
            base = f"http://127.0.0.1:{match.group(1)}"
            await wait_ingesting(proc)
            wire = HubWire(hub, platform.public)
            async with (
                aiohttp.ClientSession() as http,
                aiomqtt.Client(node.host, node.mqtt_port, identifier="carehub-hub-hub-a") as client,
            ):
                async with http.get(f"{base}/healthz") as response:
                    assert response.status == 200
                    assert (await response.json())["status"] == "ok"
                await client.subscribe("carehub/v1/hub-a/ack", qos=1)
                await client.publish("carehub/v1/hub-a/up", frame(wire, 1, [bp_record("hub-a", 1)]), qos=1)
                assert (await next_ack(client, wire)).stored == (1,)
                alarm = alarm_record("hub-a", "alarm-1", 2)
                await client.publish("carehub/v1/hub-a/alarm", frame(wire, 2, [alarm]), qos=1)
                assert (await next_ack(client, wire)).stored == (2,)
                await client.publish("carehub/v1/hub-a/up", b"not a frame", qos=1)
                # The worker counts the refusal and acks the stream's messages after its hub acks went out: scrape
                # until both streams are drained and the refusal is in (each scrape a round trip; bounded).
                async with asyncio.timeout(BOUND):
                    while True:
                        samples = await scrape(http, base)
                        drained = lag(samples, UP_STREAM) == lag(samples, ALARM_STREAM) == (0, 0)
                        if drained and ("carehub_ingest_rejections_total", (("reason", "malformed"),)) in samples:
                            break
        finally:
            await stop(proc)
    assert samples["carehub_ingest_frames_total", ()] == 3
    assert samples["carehub_ingest_envelopes_stored_total", ()] == 2
    assert samples["carehub_ingest_records_stored_total", ()] == 2
    assert samples["carehub_ingest_acks_sent_total", ()] == 2
    assert samples["carehub_ingest_rejections_total", (("reason", "malformed"),)] == 1
    assert 1 <= samples["carehub_ingest_commit_seconds_count", ()] <= 3
    assert samples["carehub_ingest_hubs_seen", (("window", "300s"),)] == 1
    assert samples["carehub_ingest_connected", ()] == 1


class GatedStorage(SqliteStorage):
    """The real SQLite storage whose batches wait for :attr:`gate` (so frames stay in the stream meanwhile)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def store_batch(
        self, envelopes: Sequence[EnvelopeToStore], refused: Sequence[Refusal] = ()
    ) -> list[EnvelopeOutcome]:
        self.entered.set()
        await self.gate.wait()
        return await super().store_batch(envelopes, refused)


async def test_stream_lag_is_what_waits_in_each_stream(tmp_path: Path) -> None:
    platform, hub = PlatformIdentity.generate(), HubIdentity.generate("hub-a")
    wire = HubWire(hub, platform.public)
    async with NatsNode(tmp_path / "nats") as node, GatedStorage(tmp_path / "platform.db") as storage:
        await storage.enroll_hub(hub.public)
        settings = NatsSettings(servers=(node.url,), batch=1, alarm_batch=1, fetch_wait_s=0.2)
        async with NatsIngestWorker(settings, storage, PlatformCodec(platform)) as worker:
            async with asyncio.timeout(BOUND):
                await worker.connected.wait()
            assert health_of(worker).ok
            nc = await nats.connect(node.url)
            try:
                js = nc.jetstream()
                for seq in (1, 2, 3):  # stored in the stream when publish returns
                    await js.publish("carehub.v1.hub-a.up", frame(wire, seq, [bp_record("hub-a", seq)]))
            finally:
                await nc.close()
            async with asyncio.timeout(BOUND):
                await storage.entered.wait()  # one frame fetched (batch = 1), its commit held
            async with (
                serve_metrics(worker, MetricsAddress("127.0.0.1", 0)) as port,
                aiohttp.ClientSession() as http,
            ):
                held = await scrape(http, f"http://127.0.0.1:{port}")
                assert lag(held, UP_STREAM) == (2, 1)
                assert lag(held, ALARM_STREAM) == (0, 0)
                storage.gate.set()
                drained = [StreamLag(UP_STREAM, 0, 0), StreamLag(ALARM_STREAM, 0, 0)]
                async with asyncio.timeout(BOUND):
                    while await worker.stream_lag() != drained:  # each a round trip to the server (bounded)
                        pass
                assert worker.stats.envelopes_stored == 3
    assert await worker.stream_lag() == ()  # stopped: nothing to ask


FAST = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


async def test_platform_run_on_jetstream_serves_the_console_and_its_ack_reaches_the_hub(tmp_path: Path) -> None:
    platform, hub = PlatformIdentity.generate(), HubIdentity.generate("hub-a")
    async with NatsNode(tmp_path / "nats") as node:
        cfg = write_config(tmp_path, node, platform)
        await enroll(tmp_path / "platform.db", hub)
        with AccountStore(accounts_path(tmp_path / "platform.db"), lambda: T0, FAST) as accounts:
            accounts.add("dr-li", Role.DOCTOR, "correct horse", "Dr Li")
            accounts.set_sharing(Sharing("resident-1", "dr-li", SharingLevel.OWN_DOCTOR))
        proc = await spawn(["platform", "run", "-c", str(cfg), "--console", "127.0.0.1:0"])
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(BOUND):
                announced = (await proc.stdout.readline()).decode()
            match = re.search(r"console on (http://127\.0\.0\.1:\d+)/", announced)
            assert match, announced
            base = match.group(1)
            await wait_ingesting(proc)
            wire = HubWire(hub, platform.public)
            async with (
                aiohttp.ClientSession(headers={"Origin": base}, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
                aiomqtt.Client(node.host, node.mqtt_port, identifier="carehub-hub-hub-a") as client,
            ):
                await client.subscribe("carehub/v1/hub-a/ack", qos=1)
                await client.subscribe("carehub/v1/hub-a/down", qos=1)
                await client.publish(
                    "carehub/v1/hub-a/alarm", frame(wire, 1, [alarm_record("hub-a", "alarm-9", 1)]), qos=1
                )
                assert (await next_ack(client, wire)).stored == (1,)
                login = await http.post(f"{base}/login", data={"username": "dr-li", "password": "correct horse"})
                assert login.status == 200
                csrf = (await login.text()).split('name="csrf" value="', 1)[1].split('"', 1)[0]
                ack = await http.post(f"{base}/alarms/hub-a/alarm-9/ack", data={"csrf": csrf}, allow_redirects=False)
                assert ack.status == 303
                async with asyncio.timeout(BOUND):
                    message = await anext(aiter(client.messages))
                assert str(message.topic) == "carehub/v1/hub-a/down"
                down = wire.open_down(bytes(message.payload))
                assert isinstance(down.body, AlarmAcknowledgement)
                assert (down.body.alarm_id, down.body.by) == ("alarm-9", "Dr Li")
        finally:
            await stop(proc)
