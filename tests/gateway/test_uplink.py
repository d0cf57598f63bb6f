"""The uplink against a real Mosquitto and a scripted platform: ack verification, window, priority, re-send."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from gateway.outbox import Lane, OutboxItem, open_outbox
from gateway.uplink import Uplink, UplinkSettings
from protocols.acks import Ack, Rejected
from protocols.errors import EnvelopeRejection
from protocols.keys import HubIdentity, PlatformIdentity
from protocols.topics import decode_uplink
from sim.platform.samples import T0, bp_record
from sim.platform.wire import HubWire, PlatformCodec

BOUND = 20


@pytest.fixture
def wires():
    platform = PlatformIdentity.generate()
    hub = HubIdentity.generate("hub-a")
    return HubWire(hub, platform.public), PlatformCodec(platform), {"hub-a": hub.verify_key}


def item(wire: HubWire, seq: int, lane: Lane = Lane.ROUTINE) -> OutboxItem:
    rec = bp_record("hub-a", seq)
    return OutboxItem(seq, wire.seal(seq, [rec], T0), lane, "measurement", (rec.record_id.hex(),), 0.0)


def ack(hub: str, stored: tuple[int, ...], rejected: tuple[Rejected, ...] = ()) -> Ack:
    return Ack(hub, 1, T0, stored, rejected)


def settings(broker, **kw) -> UplinkSettings:
    return UplinkSettings(hub_id="hub-a", host=broker.host, port=broker.port, backoff_base=0.05, **kw)


async def frames(client: aiomqtt.Client, n: int) -> list[tuple[bytes, ...]]:
    out: list[tuple[bytes, ...]] = []
    async with asyncio.timeout(BOUND):
        async for message in client.messages:
            out.append(decode_uplink(bytes(message.payload)))
            if len(out) == n:
                return out
    return out


async def test_only_verified_acks_delete(tmp_path, mosquitto, wires):
    hub, codec, known = wires
    forger = PlatformCodec(PlatformIdentity.generate())
    async with (
        open_outbox(tmp_path / "o.db") as ob,
        aiomqtt.Client(mosquitto.host, mosquitto.port) as platform,
    ):
        await platform.subscribe("carehub/v1/hub-a/up", qos=1)
        await ob.put_many([item(hub, s) for s in range(3)])
        async with Uplink(settings(mosquitto), ob, hub) as up:
            [sent] = await frames(platform, 1)
            assert [codec.open(e, known, "hub-a").seq for e in sent] == [0, 1, 2]
            await platform.publish("carehub/v1/hub-a/ack", forger.encode_ack(ack("hub-a", (0, 1, 2))), qos=1)
            await platform.publish("carehub/v1/hub-a/ack", codec.encode_ack(ack("hub-b", (0, 1, 2))), qos=1)
            await platform.publish("carehub/v1/hub-a/ack", codec.encode_ack(ack("hub-a", (0,))), qos=1)
            async with asyncio.timeout(BOUND):
                await up.wait_acked(bp_record("hub-a", 0).record_id.hex())
            # Acks arrive in publish order: the forged and misaddressed ones were refused before the real one.
            assert up.metrics.bad_acks == 2
            assert [i.envelope_seq for i in await ob.peek_batch(10, 10**6)] == [1, 2]
            assert up.metrics.delivered_envelopes == 1
            assert up.inflight_seqs == {1, 2}
            # A transient rejection keeps the envelope for a re-send; a permanent one drops it.
            rejections = (Rejected(1, EnvelopeRejection.UNKNOWN_HUB), Rejected(2, EnvelopeRejection.MALFORMED))
            up.acked.clear()
            await platform.publish("carehub/v1/hub-a/ack", codec.encode_ack(ack("hub-a", (), rejections)), qos=1)
            async with asyncio.timeout(BOUND):
                await up.acked.wait()
            assert [i.envelope_seq for i in await ob.peek_batch(10, 10**6)] == [1]
            assert up.metrics.rejections == {"unknown_hub": 1, "malformed": 1}
            assert up.metrics.rejected_envelopes == 1
            assert up.inflight_seqs == {1}


async def test_priority_bypasses_a_full_window_and_unacked_frames_are_resent(tmp_path, mosquitto, wires):
    hub, codec, known = wires

    def seqs(frame: tuple[bytes, ...]) -> list[int]:
        return [codec.open(e, known, "hub-a").seq for e in frame]

    async with (
        open_outbox(tmp_path / "o.db") as ob,
        aiomqtt.Client(mosquitto.host, mosquitto.port) as platform,
    ):
        await platform.subscribe("carehub/v1/hub-a/up", qos=1)
        await ob.put_many([item(hub, s) for s in range(5)])
        cfg = settings(mosquitto, max_inflight_frames=1, frame_max_envelopes=1, ack_timeout=0.5)
        async with Uplink(cfg, ob, hub) as up:
            [first] = await frames(platform, 1)
            assert seqs(first) == [0]
            await ob.put(item(hub, 99, Lane.PRIORITY))
            [second] = await frames(platform, 1)
            # The window is full of routine seq 0 and nobody acks, yet the alarm goes out next.
            assert seqs(second) == [99]
            assert up.inflight_seqs == {0, 99}
            # No ack within ack_timeout: the same envelopes are sent again.
            again = await frames(platform, 2)
            assert sorted(seqs(again[0]) + seqs(again[1])) == [0, 99]
            assert up.metrics.resends >= 1
            assert (await ob.stats()).rows == 6
