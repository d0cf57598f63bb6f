"""The uplink against a real Mosquitto and a scripted platform: ack verification, window, priority, re-send."""

from __future__ import annotations

import asyncio

import aiomqtt
import cbor2
import nacl.public
import nacl.signing
import pytest

from gateway.outbox import Lane, OutboxItem, open_outbox
from gateway.uplink import Uplink, UplinkSettings
from sim.platform.wire import HubWire, PlatformCodec, WireRecord

BOUND = 20


@pytest.fixture
def wires():
    sign, box = nacl.signing.SigningKey.generate(), nacl.public.PrivateKey.generate()
    hub_key = nacl.signing.SigningKey.generate()
    hub = HubWire("hubA", hub_key, box.public_key, sign.verify_key)
    return hub, PlatformCodec(sign, box), {"hubA": bytes(hub_key.verify_key)}


def item(wire: HubWire, seq: int, lane: Lane = Lane.ROUTINE) -> OutboxItem:
    rec = WireRecord(f"r{seq}", "measurement", "bp-1", {"systolic": 120}, None)
    return OutboxItem(seq, wire.seal(seq, [rec]), lane, "measurement", (f"r{seq}",), 0.0)


def settings(broker, **kw) -> UplinkSettings:
    return UplinkSettings(hub_id="hubA", host=broker.host, port=broker.port, backoff_base=0.05, **kw)


async def frames(client: aiomqtt.Client, n: int) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    async with asyncio.timeout(BOUND):
        async for message in client.messages:
            out.append(cbor2.loads(message.payload)["envelopes"])
            if len(out) == n:
                return out
    return out


async def test_only_verified_acks_delete(tmp_path, mosquitto, wires):
    hub, codec, known = wires
    forger = PlatformCodec(nacl.signing.SigningKey.generate(), nacl.public.PrivateKey.generate())
    async with (
        open_outbox(tmp_path / "o.db") as ob,
        aiomqtt.Client(mosquitto.host, mosquitto.port) as platform,
    ):
        await platform.subscribe("carehub/v1/hubA/up", qos=1)
        await ob.put_many([item(hub, s) for s in range(3)])
        async with Uplink(settings(mosquitto), ob, hub) as up:
            [sent] = await frames(platform, 1)
            opened = [codec.open(e, known, "hubA", 0.0) for e in sent]
            await platform.publish("carehub/v1/hubA/ack", forger.encode_ack("hubA", opened, ()), qos=1)
            await platform.publish("carehub/v1/hubA/ack", codec.encode_ack("hubB", opened, ()), qos=1)
            await platform.publish("carehub/v1/hubA/ack", codec.encode_ack("hubA", opened[:1], ()), qos=1)
            async with asyncio.timeout(BOUND):
                await up.wait_acked("r0")
            # Acks arrive in publish order: the forged and misaddressed ones were refused before the real one.
            assert up.metrics.bad_acks == 2
            assert [i.envelope_seq for i in await ob.peek_batch(10, 10**6)] == [1, 2]
            assert up.metrics.delivered_envelopes == 1
            assert up.inflight_seqs == {1, 2}


async def test_priority_bypasses_a_full_window_and_unacked_frames_are_resent(tmp_path, mosquitto, wires):
    hub, codec, known = wires

    def seqs(frame: list[bytes]) -> list[int]:
        return [codec.open(e, known, "hubA", 0.0).envelope_seq for e in frame]

    async with (
        open_outbox(tmp_path / "o.db") as ob,
        aiomqtt.Client(mosquitto.host, mosquitto.port) as platform,
    ):
        await platform.subscribe("carehub/v1/hubA/up", qos=1)
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
