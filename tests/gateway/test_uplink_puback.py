"""An alarm never waits for a routine frame's PUBACK (issue 15 item 4): the hub's sender does not await PUBACKs in
line. A transport behind the real interface holds the PUBACK of every routine publish (the message reaches the
broker, the broker never answers, as a slow broker under a storm); a panic put afterwards is published at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from community.samples import T0, bp_record
from community.wire import PlatformCodec
from gateway.outbox import Lane, OutboxItem, open_outbox
from gateway.transport import Connector, Incoming, MemoryBroker, Transport
from gateway.uplink import Uplink, UplinkSettings
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
