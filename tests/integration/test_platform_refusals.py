"""Refusals are final (issue 15.6): the platform names every envelope it refuses for good in ``Ack.rejected`` with its
reason, and keeps a quarantine an operator can read; an envelope it cannot name is quarantined only.

An envelope is named by the sequence number its content gives, and only in the ack of the hub whose uplink topic it
arrived on (which the broker's ACL reserves to that hub), and only when the content names that hub: an envelope of
hub Z published on hub A's topic must never make hub A drop its own envelope of the same number.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiomqtt
import nacl.public
import pytest

from community.ingest import IngestWorker, WorkerSettings
from community.samples import T0, bp_record
from community.storage import SqliteStorage
from community.wire import PlatformCodec
from gateway.wire import HubWire
from protocols import cbor
from protocols.acks import Ack, Rejected
from protocols.envelope import ENVELOPE_DOMAIN
from protocols.errors import EnvelopeRejection
from protocols.keys import HubIdentity, PlatformIdentity, sign_detached
from sim.broker import MosquittoBroker, mosquitto_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
]

BOUND = 30  # seconds: an upper bound for awaiting events, never a sleep


def signed_envelope(
    hub: HubIdentity, platform: PlatformIdentity, seq: int, records: list[bytes], version: int
) -> bytes:
    """An envelope validly signed by ``hub`` but built by hand (``seal`` refuses what the protocol does not allow)."""
    inner = cbor.dumps(
        {"v": version, "hub": hub.hub_id, "seq": seq, "sealed_at": cbor.to_micros(T0), "records": records},
        "envelope",
    )
    sealed = nacl.public.SealedBox(platform.public.box_key)
    return bytes(sealed.encrypt(sign_detached(hub.signing_key, ENVELOPE_DOMAIN, inner) + inner))


async def next_ack(client: aiomqtt.Client, wire: HubWire) -> Ack:
    async with asyncio.timeout(BOUND):
        async for message in client.messages:
            return wire.open_ack(bytes(message.payload))
    raise AssertionError("the ack subscription ended")


@pytest.fixture
async def world(
    tmp_path, mosquitto: MosquittoBroker
) -> AsyncIterator[tuple[PlatformIdentity, SqliteStorage, IngestWorker]]:
    platform = PlatformIdentity.generate()
    async with SqliteStorage(tmp_path / "platform.db") as storage:
        settings = WorkerSettings(mosquitto.host, mosquitto.port, client_id="ingest-refusals")
        async with IngestWorker(settings, storage, PlatformCodec(platform)) as worker:
            async with asyncio.timeout(BOUND):
                await worker.connected.wait()
            yield platform, storage, worker


async def test_permanent_refusals_are_named_in_the_ack_with_their_reason_and_quarantined(world, mosquitto):
    platform, storage, worker = world
    hub_a, hub_z = HubIdentity.generate("hub-a"), HubIdentity.generate("hub-z")
    await storage.enroll_hub(hub_a.public)
    wire = HubWire(hub_a, platform.public)
    stranger = HubWire(HubIdentity.generate("hub-a"), platform.public)  # claims hub-a, signs with another key
    good = bp_record("hub-a", 1).to_cbor()
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe("carehub/v1/hub-a/ack", qos=1)
        up = "carehub/v1/hub-a/up"
        tampered = bytearray(wire.seal(4, [bp_record("hub-a", 4)], T0))
        tampered[-5] ^= 0x01
        frame = wire.encode_frame(
            [
                stranger.seal(2, [bp_record("hub-a", 2)], T0),  # bad signature
                signed_envelope(hub_a, platform, 3, [good], version=2),  # a version this platform does not speak
                bytes(tampered),  # cannot be opened: no seq to name it by
                HubWire(hub_z, platform.public).seal(2, [bp_record("hub-z", 5)], T0),  # hub-z's, on hub-a's topic
                wire.seal(5, [bp_record("hub-a", 6)], T0),  # fine
                signed_envelope(hub_a, platform, 6, [b"\xa0"], version=1),  # a record that does not decode
            ]
        )
        await client.publish(up, frame, qos=1)
        ack = await next_ack(client, wire)
    assert ack.stored == (5,)
    assert ack.rejected == (
        Rejected(2, EnvelopeRejection.BAD_SIGNATURE),
        Rejected(3, EnvelopeRejection.MALFORMED),
        Rejected(6, EnvelopeRejection.MALFORMED),
    )
    assert all(r.permanent for r in ack.rejected)
    quarantined = [q.refusal for q in await storage.quarantine()]
    assert [(r.topic_hub, r.claimed_hub, r.envelope_seq, r.reason.value) for r in quarantined] == [
        ("hub-a", "hub-a", 2, "bad_signature"),
        ("hub-a", "hub-a", 3, "malformed"),
        ("hub-a", None, None, "cannot_open"),
        ("hub-a", "hub-z", 2, "unknown_hub"),
        ("hub-a", "hub-a", 6, "malformed"),
    ]
    assert quarantined[2].size == len(tampered)
    assert await storage.rejections() == {"bad_signature": 1, "malformed": 2, "cannot_open": 1, "unknown_hub": 1}
    assert worker.stats.rejected_in_acks == 3
    assert [r.record_id for r in await storage.readings()] == [bp_record("hub-a", 6).record_id.hex()]


async def test_a_hub_not_yet_enrolled_is_told_so_as_a_transient_refusal(world, mosquitto):
    platform, storage, _worker = world
    hub_c = HubIdentity.generate("hub-c")
    wire = HubWire(hub_c, platform.public)
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe("carehub/v1/hub-c/ack", qos=1)
        await client.publish(
            "carehub/v1/hub-c/up", wire.encode_frame([wire.seal(1, [bp_record("hub-c", 1)], T0)]), qos=1
        )
        ack = await next_ack(client, wire)
        assert (ack.stored, ack.rejected) == ((), (Rejected(1, EnvelopeRejection.UNKNOWN_HUB),))
        assert not ack.rejected[0].permanent  # the hub keeps it and retries
        # Once enrolled, the same envelope is stored.
        await storage.enroll_hub(hub_c.public)
        await client.publish(
            "carehub/v1/hub-c/up", wire.encode_frame([wire.seal(1, [bp_record("hub-c", 1)], T0)]), qos=1
        )
        ack = await next_ack(client, wire)
        assert (ack.stored, ack.rejected) == ((1,), ())
