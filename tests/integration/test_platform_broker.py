"""The broker config ``carehub platform broker-config`` writes, run by a real Mosquitto (issues 17.6, 19.5).

- Client ids are bound to user names: one hub's credentials cannot take over the platform's or another hub's
  session by connecting with its client id (before: any hub could disconnect the platform, repeatedly).
- Payloads are bounded by the protocol's largest message (an uplink frame): one larger is dropped, a packet far
  larger disconnects its sender, and neither reaches the platform (before: a 100 MB publish took the platform to
  360 MB RSS).
- The hub's real uplink still connects and delivers through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from community.brokerconf import MAX_PAYLOAD_BYTES, BrokerFiles, write_broker_config
from community.ingest import IngestWorker, WorkerSettings
from community.samples import T0, bp_record
from community.storage import SqliteStorage
from community.wire import PlatformCodec
from gateway.outbox import Lane, OutboxItem, open_outbox
from gateway.uplink import Uplink, UplinkSettings
from gateway.wire import HubWire
from protocols.keys import HubIdentity, PlatformIdentity
from sim.broker import MosquittoBroker, free_port, mosquitto_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
]

BOUND = 30  # seconds: an upper bound for awaiting events, never a sleep
UP_A = "carehub/v1/hub-a/up"


class GeneratedBroker(MosquittoBroker):
    """Mosquitto running exactly the config ``write_broker_config`` wrote."""

    def __init__(self, workdir: Path, files: BrokerFiles, port: int) -> None:
        super().__init__(workdir, port=port)
        self.files = files

    def config_text(self) -> str:
        return self.files.config.read_text(encoding="utf-8")


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[GeneratedBroker]:
    port = free_port()
    files = write_broker_config(tmp_path / "conf", ["hub-a", "hub-b"], port=port)
    async with GeneratedBroker(tmp_path / "broker", files, port) as running:
        yield running


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _text(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">H", len(raw)) + raw


async def mqtt_connect(broker: GeneratedBroker, user: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A bare MQTT 3.1.1 session (clean, user name and password), to send a packet no client library would."""
    reader, writer = await asyncio.open_connection(broker.host, broker.port)
    body = _text("MQTT") + bytes([4, 0xC2]) + struct.pack(">H", 60)
    body += _text(f"raw-{user}") + _text(user) + _text(broker.files.passwords[user])
    writer.write(b"\x10" + _remaining_length(len(body)) + body)
    async with asyncio.timeout(BOUND):
        assert await reader.readexactly(4) == b"\x20\x02\x00\x00"  # CONNACK, accepted
    return reader, writer


def publish_header(topic: str, payload_len: int) -> bytes:
    """A QoS 0 PUBLISH packet's fixed header and topic, declaring a payload of ``payload_len`` bytes."""
    variable = _text(topic)
    return b"\x30" + _remaining_length(len(variable) + payload_len) + variable


def client(broker: GeneratedBroker, user: str, identifier: str | None = None) -> aiomqtt.Client:
    password = broker.files.passwords[user]
    return aiomqtt.Client(broker.host, broker.port, username=user, password=password, identifier=identifier)


async def next_message(receiver: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(BOUND):
        async for message in receiver.messages:
            return message
    raise AssertionError("the subscription ended")


async def test_a_hub_cannot_take_over_the_platforms_or_another_hubs_session(broker):
    async with client(broker, "platform", "carehub-platform") as platform:
        await platform.subscribe("$share/ingest/carehub/v1/+/up", qos=1)
        async with client(broker, "hub-a", "carehub-hub-a") as hub_a:
            await hub_a.subscribe("carehub/v1/hub-a/ack", qos=1)
            # hub-b's credentials ask for the platform's client id, then for hub-a's.
            async with client(broker, "hub-b", "carehub-platform") as thief:
                await thief.publish("carehub/v1/hub-b/up", b"from hub-b", qos=1)
                assert (await next_message(platform)).payload == b"from hub-b"  # the platform was not cut off
            async with client(broker, "hub-b", "carehub-hub-a") as thief:
                await thief.publish("carehub/v1/hub-b/up", b"again", qos=1)
                assert (await next_message(platform)).payload == b"again"
            await platform.publish("carehub/v1/hub-a/ack", b"still there", qos=1)
            assert (await next_message(hub_a)).payload == b"still there"  # hub-a was not cut off either


async def test_payloads_beyond_the_protocols_largest_frame_never_reach_the_platform(broker):
    async with client(broker, "platform") as platform:
        await platform.subscribe("$share/ingest/carehub/v1/+/up", qos=1)
        async with client(broker, "hub-a") as hub_a:
            await hub_a.publish(UP_A, b"\x01" * MAX_PAYLOAD_BYTES, qos=1)
            assert len((await next_message(platform)).payload) == MAX_PAYLOAD_BYTES  # the largest frame passes
            await hub_a.publish(UP_A, b"\x02" * (MAX_PAYLOAD_BYTES + 1), qos=1)  # dropped by the broker
            await hub_a.publish(UP_A, b"marker 1", qos=1)
            assert (await next_message(platform)).payload == b"marker 1"  # per-publisher order: the big one is gone
        # Far beyond the packet limit: the broker drops the connection on reading the packet's declared length,
        # before any of its 8 MiB is sent.
        reader, writer = await mqtt_connect(broker, "hub-a")
        try:
            writer.write(publish_header(UP_A, 8 * 1024 * 1024) + b"\x03" * 1024)
            async with asyncio.timeout(BOUND):
                with contextlib.suppress(ConnectionResetError):
                    assert await reader.read() == b""  # end of stream: disconnected
        finally:
            writer.close()
        async with client(broker, "hub-a") as hub_a:
            await hub_a.publish(UP_A, b"marker 2", qos=1)
            assert (await next_message(platform)).payload == b"marker 2"


async def test_the_hubs_uplink_delivers_through_the_generated_config(tmp_path, broker):
    platform_keys, hub = PlatformIdentity.generate(), HubIdentity.generate("hub-a")
    wire = HubWire(hub, platform_keys.public)
    record = bp_record("hub-a", 1)
    pw = broker.files.passwords
    async with SqliteStorage(tmp_path / "platform.db") as storage:
        await storage.enroll_hub(hub.public)
        settings = WorkerSettings(broker.host, broker.port, username="platform", password=pw["platform"])
        async with (
            IngestWorker(settings, storage, PlatformCodec(platform_keys)) as worker,
            open_outbox(tmp_path / "outbox.db") as ob,
        ):
            async with asyncio.timeout(BOUND):
                await worker.connected.wait()
            [seq] = await ob.allocate_seqs(1)
            item = OutboxItem(
                seq, wire.seal(seq, [record], T0), Lane.ROUTINE, "measurement", (record.record_id.hex(),), 0.0
            )
            await ob.put_many([item])
            up = UplinkSettings(
                hub_id="hub-a", host=broker.host, port=broker.port, username="hub-a", password=pw["hub-a"]
            )
            async with Uplink(up, ob, wire) as uplink, asyncio.timeout(BOUND):
                await uplink.wait_acked(record.record_id.hex())
        assert [r.record_id for r in await storage.readings()] == [record.record_id.hex()]
