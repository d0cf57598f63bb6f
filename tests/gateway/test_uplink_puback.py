"""An alarm never waits for a routine frame's PUBACK (issue 15 item 4): the hub's sender does not await PUBACKs in
line. A transport behind the real interface holds the PUBACK of every routine publish (the message reaches the
broker, the broker never answers, as a slow broker under a storm); a panic put afterwards is published at once.
Publishes awaiting a PUBACK stay within each lane's window, and with the real MQTT client (aiomqtt) against a broker
that answers no PUBACK (:class:`SilentBroker`, MQTT 3.1.1 on a socket) a slow PUBACK neither ends the session nor
holds an alarm in the client's own queue."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from community.samples import T0, bp_record
from community.wire import PlatformCodec
from gateway.errors import UplinkError
from gateway.outbox import Lane, OutboxItem, open_outbox
from gateway.transport import Connector, Incoming, MemoryBroker, MqttConnector, Transport
from gateway.uplink import Uplink, UplinkSettings
from gateway.uplink_settings import mqtt_client, mqtt_connector
from gateway.wire import HubWire
from protocols.acks import Ack
from protocols.keys import HubIdentity, PlatformIdentity
from protocols.topics import decode_uplink
from sim.clock import LoopClock
from sim.virtual_time import VirtualTimeLoop

BOUND = 10  # seconds: an upper bound for awaiting events, never a sleep
UP, ACK, ALARM = "carehub/v1/hub-a/up", "carehub/v1/hub-a/ack", "carehub/v1/hub-a/alarm"


class _HeldTransport:
    """The real session's publish, but a publish to ``held_topic`` returns only once :attr:`release` is set."""

    def __init__(self, inner: Transport, held_topic: str, release: asyncio.Event, held: list[str]) -> None:
        self._inner, self._held_topic, self._release, self._held = inner, held_topic, release, held

    @property
    def node(self) -> str:
        return self._inner.node

    async def publish(self, topic: str, payload: bytes) -> None:
        if topic == self._held_topic:
            self._held.append(topic)
        await self._inner.publish(topic, payload)  # on the broker now; only its PUBACK is held
        if topic == self._held_topic:
            await self._release.wait()

    def incoming(self) -> AsyncIterator[Incoming]:
        return self._inner.incoming()


class HeldPubacks:
    """A :class:`Connector` whose sessions hold the PUBACK of every publish to ``held_topic``."""

    def __init__(self, inner: Connector, held_topic: str) -> None:
        self._inner, self._held_topic = inner, held_topic
        self.release = asyncio.Event()
        self.held: list[str] = []

    @contextlib.asynccontextmanager
    async def session(self, subscriptions: Sequence[str]) -> AsyncIterator[Transport]:
        async with self._inner.session(subscriptions) as transport:
            yield _HeldTransport(transport, self._held_topic, self.release, self.held)


def item(wire: HubWire, seq: int, lane: Lane = Lane.ROUTINE) -> OutboxItem:
    rec = bp_record("hub-a", seq)
    return OutboxItem(seq, wire.seal(seq, [rec], T0), lane, "measurement", (rec.record_id.hex(),), 0.0)


async def next_frame(platform: Transport, codec: PlatformCodec, known: dict[str, object]) -> tuple[str, list[int]]:
    async with asyncio.timeout(BOUND):
        async for message in platform.incoming():
            seqs = [codec.open(e, known, "hub-a").seq for e in decode_uplink(message.payload)]  # type: ignore[arg-type]
            return message.topic, seqs
    raise AssertionError("the platform's session ended")


async def test_a_panic_is_published_while_a_routine_frame_awaits_its_puback(tmp_path: Path) -> None:
    platform_id, hub = PlatformIdentity.generate(), HubIdentity.generate("hub-a")
    wire, codec = HubWire(hub, platform_id.public), PlatformCodec(platform_id)
    known: dict[str, object] = {"hub-a": hub.verify_key}
    broker = MemoryBroker()
    held = HeldPubacks(broker.connector(), UP)
    cfg = UplinkSettings(hub_id="hub-a", host="127.0.0.1", frame_max_envelopes=1, backoff_base=0.05, backoff_cap=0.5)
    async with (
        open_outbox(tmp_path / "o.db") as ob,
        broker.connector().session([UP, ALARM]) as platform,
    ):
        await ob.put(item(wire, 0))
        async with Uplink(cfg, ob, wire, connector=held) as up:
            assert await next_frame(platform, codec, known) == (UP, [0])
            assert held.held == [UP]  # its PUBACK is held: the routine publish has not returned
            await ob.put(item(wire, 99, Lane.PRIORITY))
            assert await next_frame(platform, codec, known) == (ALARM, [99])
            # Delivery is still the platform's signed ack alone; the PUBACK, once released, deletes nothing.
            held.release.set()
            await platform.publish(ACK, codec.encode_ack(Ack("hub-a", 1, T0, (99,), ())))
            async with asyncio.timeout(BOUND):
                await up.wait_acked(bp_record("hub-a", 99).record_id.hex())
            assert [i.envelope_seq for i in await ob.peek_batch(10, 10**7)] == [0]


class _NeverPubackTransport:
    """A session whose broker takes every publish and never answers it: ``publish`` never returns."""

    def __init__(self, inner: Transport, calls: list[str]) -> None:
        self._inner, self._calls = inner, calls

    @property
    def node(self) -> str:
        return self._inner.node

    async def publish(self, topic: str, payload: bytes) -> None:
        self._calls.append(topic)
        await asyncio.Event().wait()  # no PUBACK, ever (the connection itself stays up)

    def incoming(self) -> AsyncIterator[Incoming]:
        return self._inner.incoming()


class NeverPuback:
    """A :class:`Connector` whose sessions never PUBACK anything."""

    def __init__(self, inner: Connector) -> None:
        self._inner = inner
        self.calls: list[str] = []

    @contextlib.asynccontextmanager
    async def session(self, subscriptions: Sequence[str]) -> AsyncIterator[Transport]:
        async with self._inner.session(subscriptions) as transport:
            yield _NeverPubackTransport(transport, self.calls)


def test_publishes_awaiting_a_puback_that_never_comes_stay_within_each_lanes_window(tmp_path: Path) -> None:
    """A broker that accepts the connection but never PUBACKs (issue 15): every ack deadline releases the window's
    frames for a resend, but a lane whose publishes all still await their PUBACK takes no new frame, so the publish
    tasks (and the frames they hold) stay within the delivery window however many deadlines pass."""
    routine_window, priority_window = 2, 3

    async def main() -> None:
        hub = HubIdentity.generate("hub-a")
        wire = HubWire(hub, PlatformIdentity.generate().public)
        never = NeverPuback(MemoryBroker().connector())
        cfg = UplinkSettings(
            hub_id="hub-a",
            host="unused",
            frame_max_envelopes=1,
            max_inflight_frames=routine_window,
            max_inflight_priority_frames=priority_window,
            ack_timeout=1.0,
            ack_timeout_cap=2.0,
        )
        async with open_outbox(tmp_path / "o.db") as ob:
            for seq in range(10):
                await ob.put(item(wire, seq))
            for seq in range(10, 10 + priority_window):
                await ob.put(item(wire, seq, Lane.PRIORITY))
            async with Uplink(cfg, ob, wire, connector=never, clock=LoopClock(T0)) as up:
                # 600 s of simulated time pass (the loop's clock is the uplink's): 300 times the longest ack wait.
                await asyncio.sleep(600.0)
                publishing = [t for t in asyncio.all_tasks() if t.get_name() == "uplink-pub" and not t.done()]
                assert len(publishing) <= routine_window + priority_window
                # Every frame's deadline passed and released it for a resend; none was published again, as each
                # lane's publishes all still await their PUBACK.
                assert up.metrics.resends == routine_window + priority_window
                assert never.calls.count(UP) == routine_window
                assert never.calls.count(ALARM) == priority_window
                assert up.connected.is_set()  # one session throughout: nothing was lost, only never answered

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        runner.run(main())


async def _packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One MQTT control packet: (first byte, body)."""
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return first, await reader.readexactly(length)


class SilentBroker:
    """MQTT 3.1.1 just enough for a hub (CONNACK, SUBACK granting QoS 1, PINGRESP) that takes every PUBLISH and
    never answers it: the PUBACK of a broker stalled for longer than any client timeout."""

    def __init__(self) -> None:
        self.connects = 0
        self.topics: list[str] = []  # of every PUBLISH received, in order

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                first, body = await _packet(reader)
                kind = first >> 4
                if kind == 1:  # CONNECT -> CONNACK, accepted
                    self.connects += 1
                    writer.write(b"\x20\x02\x00\x00")
                elif kind == 8:  # SUBSCRIBE (one filter) -> SUBACK granting QoS 1, same packet id
                    writer.write(b"\x90\x03" + body[:2] + b"\x01")
                elif kind == 12:  # PINGREQ -> PINGRESP
                    writer.write(b"\xd0\x00")
                elif kind == 3:  # PUBLISH: taken, never PUBACKed
                    self.topics.append(body[2 : 2 + int.from_bytes(body[:2], "big")].decode())
                elif kind == 14:  # DISCONNECT
                    return
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def silent_broker() -> AsyncIterator[tuple[SilentBroker, int]]:
    broker = SilentBroker()
    server = await asyncio.start_server(broker.serve, "127.0.0.1", 0)
    try:
        yield broker, server.sockets[0].getsockname()[1]
    finally:
        server.close()


def test_a_puback_slower_than_the_clients_timeout_does_not_end_the_session(tmp_path: Path) -> None:
    """aiomqtt gives up on a PUBACK after the client's timeout (10 s); the hub used to take that as a lost connection:
    it reconnected and sent the frame again at once, long before its ack deadline, adding a session set-up to a
    stalled broker's load (issue 15 storm). The session now stays up and the frame waits for its ack deadline."""

    async def main() -> None:
        wire = HubWire(HubIdentity.generate("hub-a"), PlatformIdentity.generate().public)
        async with silent_broker() as (broker, port), open_outbox(tmp_path / "o.db") as ob:
            cfg = UplinkSettings(hub_id="hub-a", host="127.0.0.1", port=port, ack_timeout=60.0, ack_timeout_cap=60.0)
            connector = MqttConnector(functools.partial(mqtt_client, cfg), node=f"127.0.0.1:{port}")
            await ob.put(item(wire, 1))
            async with Uplink(cfg, ob, wire, connector=connector, clock=LoopClock(T0)) as up:
                await asyncio.sleep(40.0)  # simulated: four client timeouts, short of the 45-60 s ack deadline
                assert (up.metrics.connects, up.metrics.connection_failures) == (1, 0), up.metrics.last_error
                assert broker.connects == 1
                assert broker.topics == [UP]  # sent once: nothing released it for a resend

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        runner.run(main())


def test_a_puback_that_never_comes_ends_the_session_after_the_puback_timeout(tmp_path: Path) -> None:
    """A broker that answers PINGREQ but never PUBACKs a publish it took (dropped it) would otherwise keep the
    session up for ever with each lane's window full of publishes awaiting their PUBACK: no frame of that lane,
    alarms included, could be sent again. After ``puback_timeout`` the session is taken as lost and the frame goes
    out again on a new one, well before its (here 300 s) ack deadline would release it."""

    async def main() -> None:
        wire = HubWire(HubIdentity.generate("hub-a"), PlatformIdentity.generate().public)
        async with silent_broker() as (broker, port), open_outbox(tmp_path / "o.db") as ob:
            cfg = UplinkSettings(
                hub_id="hub-a",
                host="127.0.0.1",
                port=port,
                ack_timeout=300.0,
                ack_timeout_cap=300.0,
                puback_timeout=30.0,
            )
            await ob.put(item(wire, 1, Lane.PRIORITY))
            async with Uplink(cfg, ob, wire, connector=mqtt_connector(cfg), clock=LoopClock(T0)) as up:
                await asyncio.sleep(29.0)  # simulated: short of the PUBACK timeout, one session, one publish
                assert (broker.connects, broker.topics) == (1, [ALARM])
                await asyncio.sleep(2.0)  # past it: the session ends; the reconnect comes 0.25-0.5 s later
                assert up.metrics.connection_failures == 1
                assert "publish to" in up.metrics.last_error
                assert (broker.connects, broker.topics) == (2, [ALARM, ALARM])

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        runner.run(main())


def test_a_puback_timeout_must_be_positive() -> None:
    with pytest.raises(UplinkError, match="puback_timeout"):
        UplinkSettings(hub_id="hub-a", host="127.0.0.1", puback_timeout=0.0)


def test_an_alarm_is_not_held_in_the_clients_queue_behind_routine_frames_awaiting_their_puback(tmp_path: Path) -> None:
    """Both windows full of frames awaiting a PUBACK (8 routine, then 16 alarms): every one is on the wire. paho
    sends at most 20 QoS 1 publishes awaiting a PUBACK and queues the rest, so 4 alarms waited in the client."""

    async def main() -> None:
        wire = HubWire(HubIdentity.generate("hub-a"), PlatformIdentity.generate().public)
        async with silent_broker() as (broker, port), open_outbox(tmp_path / "o.db") as ob:
            cfg = UplinkSettings(hub_id="hub-a", host="127.0.0.1", port=port, frame_max_envelopes=1)
            connector = MqttConnector(functools.partial(mqtt_client, cfg), node=f"127.0.0.1:{port}")
            for seq in range(cfg.max_inflight_frames):
                await ob.put(item(wire, seq))
            async with Uplink(cfg, ob, wire, connector=connector, clock=LoopClock(T0)) as up:
                await asyncio.sleep(1.0)  # simulated: the routine frames go out and await their PUBACK
                for seq in range(100, 100 + cfg.max_inflight_priority_frames):
                    await ob.put(item(wire, seq, Lane.PRIORITY))
                await asyncio.sleep(1.0)
                assert broker.topics.count(UP) == cfg.max_inflight_frames
                assert broker.topics.count(ALARM) == cfg.max_inflight_priority_frames
                assert up.metrics.connection_failures == 0

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        runner.run(main())
