"""The uplink (delivery core + async shell) against a scripted platform, over both transports: the in-memory broker
and aiomqtt with a real Mosquitto run the same tests. Ack verification, window, priority, resend, reconnect, odd
acks, final refusals, and supervision of unexpected errors."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import cbor2
import pytest

from community.samples import T0, bp_record
from community.wire import PlatformCodec
from gateway.clock import ManualClock
from gateway.errors import OutboxUnwritableError
from gateway.outbox import Lane, Outbox, OutboxItem, open_outbox
from gateway.supervise import SupervisionPolicy, Supervisor, SupervisorGaveUpError
from gateway.transport import Connector, MemoryBroker, MqttConnector, Transport
from gateway.uplink import REFUSED_CURSOR_PREFIX, Uplink, UplinkSettings, refusal_counts
from gateway.wire import HubWire
from protocols.acks import ACK_DOMAIN, MAX_ACK_ENTRIES, Ack, Rejected
from protocols.cbor import MAX_UINT
from protocols.errors import EnvelopeRejection
from protocols.keys import HubIdentity, PlatformIdentity, sign_detached
from protocols.topics import decode_uplink
from sim.broker import MosquittoBroker, mosquitto_available

BOUND = 20  # seconds: an upper bound for awaiting events, never a sleep
UP, ACK = "carehub/v1/hub-a/up", "carehub/v1/hub-a/ack"
ALARM = "carehub/v1/hub-a/alarm"  # the priority lane's uplink (protocol revision 6)

_ids = itertools.count()


@dataclass
class Network:
    """A broker behind the transport interface: the uplink's connector, the platform's, and a switch."""

    name: str
    hub: Connector
    platform: Connector
    stop: Callable[[], Awaitable[None]]
    start: Callable[[], Awaitable[None]]


@pytest.fixture(params=["memory", "mosquitto"])
async def network(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Network]:
    if request.param == "memory":
        broker = MemoryBroker()
        yield Network("memory", broker.connector(), broker.connector(), broker.stop, broker.start)
        return
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed (scripts/test installs it)")
    async with MosquittoBroker(tmp_path / "mosquitto") as mosquitto:

        def client(prefix: str) -> Callable[[], aiomqtt.Client]:
            def make() -> aiomqtt.Client:
                return aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"{prefix}-{next(_ids)}", timeout=5)

            return make

        yield Network(
            "mosquitto",
            MqttConnector(client("hub")),
            MqttConnector(client("platform")),
            mosquitto.stop,
            mosquitto.start,
        )


@dataclass
class Wires:
    hub: HubWire
    codec: PlatformCodec
    known: dict[str, object]
    platform: PlatformIdentity

    def seqs(self, frame: tuple[bytes, ...]) -> list[int]:
        return [self.codec.open(e, self.known, "hub-a").seq for e in frame]  # type: ignore[arg-type]


@pytest.fixture
def wires() -> Wires:
    platform = PlatformIdentity.generate()
    hub = HubIdentity.generate("hub-a")
    return Wires(HubWire(hub, platform.public), PlatformCodec(platform), {"hub-a": hub.verify_key}, platform)


def item(wire: HubWire, seq: int, lane: Lane = Lane.ROUTINE) -> OutboxItem:
    rec = bp_record("hub-a", seq)
    return OutboxItem(seq, wire.seal(seq, [rec], T0), lane, "measurement", (rec.record_id.hex(),), 0.0)


def rid(seq: int) -> str:
    return bp_record("hub-a", seq).record_id.hex()


def ack(hub: str, stored: tuple[int, ...], rejected: tuple[Rejected, ...] = ()) -> Ack:
    return Ack(hub, 1, T0, stored, rejected)


def settings(**kw: object) -> UplinkSettings:
    base: dict[str, object] = {"backoff_base": 0.05, "backoff_cap": 0.5}
    base.update(kw)
    return UplinkSettings(hub_id="hub-a", host="127.0.0.1", **base)  # type: ignore[arg-type]


async def frames(platform: Transport, n: int) -> list[tuple[bytes, ...]]:
    out: list[tuple[bytes, ...]] = []
    async with asyncio.timeout(BOUND):
        async for message in platform.incoming():
            out.append(decode_uplink(message.payload))
            if len(out) == n:
                break
    return out


async def rows(ob: Outbox) -> list[int]:
    return [i.envelope_seq for i in await ob.peek_batch(100, 10**7)]


async def acked(up: Uplink, publish: Awaitable[None]) -> None:
    up.acked.clear()
    await publish
    async with asyncio.timeout(BOUND):
        await up.acked.wait()


async def test_only_verified_acks_delete_and_refusals_are_final(tmp_path, network, wires):
    forger = PlatformCodec(PlatformIdentity.generate())
    async with (
        open_outbox(tmp_path / "o.db") as ob,
        network.platform.session([UP, ALARM]) as platform,
    ):
        await ob.put_many([item(wires.hub, s) for s in range(3)])
        async with Uplink(settings(), ob, wires.hub, connector=network.hub) as up:
            [sent] = await frames(platform, 1)
            assert wires.seqs(sent) == [0, 1, 2]
            await platform.publish(ACK, forger.encode_ack(ack("hub-a", (0, 1, 2))))
            await platform.publish(ACK, wires.codec.encode_ack(ack("hub-b", (0, 1, 2))))
            await platform.publish(ACK, wires.codec.encode_ack(ack("hub-a", (0,))))
            async with asyncio.timeout(BOUND):
                await up.wait_acked(rid(0))
            # Acks arrive in publish order: the forged and misaddressed ones were refused before the real one.
            assert up.metrics.bad_acks == 2
            assert await rows(ob) == [1, 2]
            assert up.metrics.delivered_envelopes == 1
            assert up.inflight_seqs == {1, 2}
            # A transient refusal keeps the envelope for a resend; a permanent one drops it, counted by reason.
            rejections = (Rejected(1, EnvelopeRejection.UNKNOWN_HUB), Rejected(2, EnvelopeRejection.MALFORMED))
            await acked(up, platform.publish(ACK, wires.codec.encode_ack(ack("hub-a", (), rejections))))
            assert await rows(ob) == [1]
            assert up.metrics.refused == {EnvelopeRejection.MALFORMED: 1}
            assert up.metrics.deferred == {EnvelopeRejection.UNKNOWN_HUB: 1}
            assert up.metrics.rejected_envelopes == 1
            assert up.inflight_seqs == {1}
        # The count survives the run, where `carehub doctor` reads it (the outbox's cursors).
        key = REFUSED_CURSOR_PREFIX + "malformed"
        assert refusal_counts({key: await ob.get_cursor(key, 0)}) == {EnvelopeRejection.MALFORMED: 1}  # type: ignore[dict-item]


async def test_priority_bypasses_a_full_window_and_unacked_frames_are_resent(tmp_path, network, wires):
    # The ack deadlines run on a manual clock: they pass when the test moves it, never by the machine's load (on
    # the real clock a loaded machine could let a deadline pass mid-step: 1 run in 30 failed).
    clock = ManualClock(T0)
    async with (
        open_outbox(tmp_path / "o.db") as ob,
        network.platform.session([UP, ALARM]) as platform,
    ):
        await ob.put_many([item(wires.hub, s) for s in range(5)])
        cfg = settings(max_inflight_frames=1, frame_max_envelopes=1, ack_timeout=0.5, ack_timeout_cap=1.0)
        rng = random.Random(7)  # noqa: S311 - seeded resend jitter
        async with Uplink(cfg, ob, wires.hub, connector=network.hub, clock=clock, rng=rng) as up:
            [first] = await frames(platform, 1)
            assert wires.seqs(first) == [0]
            await ob.put(item(wires.hub, 99, Lane.PRIORITY))
            [second] = await frames(platform, 1)
            # The window is full of routine seq 0 and nobody acks, yet the alarm goes out next.
            assert wires.seqs(second) == [99]
            assert up.inflight_seqs == {0, 99}
            # No ack in time: the alarm is sent again whole and the routine envelope alone (the probe), never an
            # envelope not sent before in its place; the next wait is longer (one unanswered round: doubled).
            clock.advance(cfg.ack_timeout)
            again = await frames(platform, 2)
            assert sorted(wires.seqs(again[0]) + wires.seqs(again[1])) == [0, 99]
            assert up.inflight_seqs == {0, 99}
            assert up.metrics.resends == 2
            assert up.delivery.level == 1
            deadline = up.delivery.next_deadline()
            assert deadline is not None
            assert deadline - clock.monotonic() >= 0.75 * cfg.ack_timeout_cap > cfg.ack_timeout
            assert (await ob.stats()).rows == 6
            # Acked at last: the backoff ends, the rest of the backlog follows.
            await platform.publish(ACK, wires.codec.encode_ack(ack("hub-a", (0, 99))))
            async with asyncio.timeout(BOUND):
                await up.wait_acked(rid(99))
            [third] = await frames(platform, 1)
            assert wires.seqs(third) == [1]


async def test_a_reconnect_sends_everything_in_flight_again(tmp_path, network, wires):
    async with open_outbox(tmp_path / "o.db") as ob:
        await ob.put_many([item(wires.hub, s) for s in range(4)])
        cfg = settings(frame_max_envelopes=2, ack_timeout=1.0, ack_timeout_cap=2.0)
        async with Uplink(cfg, ob, wires.hub, connector=network.hub) as up:
            async with contextlib.AsyncExitStack() as first:
                platform = await first.enter_async_context(network.platform.session([UP, ALARM]))
                sent = await frames(platform, 2)
                assert sorted(s for f in sent for s in wires.seqs(f)) == [0, 1, 2, 3]
                await network.stop()
                async with asyncio.timeout(BOUND):
                    await up.disconnected.wait()
                assert up.inflight_seqs == frozenset()
            await network.start()
            async with network.platform.session([UP, ALARM]) as platform:
                # Whatever the hub resent before this session subscribed comes again after its ack wait.
                while await rows(ob):
                    [owed] = await frames(platform, 1)
                    await acked(
                        up, platform.publish(ACK, wires.codec.encode_ack(ack("hub-a", tuple(wires.seqs(owed)))))
                    )
            assert up.metrics.connects >= 2
            assert up.metrics.resends >= 4


async def test_odd_acks_are_counted_and_delivery_goes_on(tmp_path, network, wires):
    """Issue 19.3: a verified ack naming envelopes the hub never sent (the largest uint, a full list of strangers)
    must not stop the uplink; the envelopes it does name are deleted, the rest ignored."""
    async with (
        open_outbox(tmp_path / "o.db") as ob,
        network.platform.session([UP, ALARM]) as platform,
    ):
        await ob.put(item(wires.hub, 0))
        async with Uplink(settings(), ob, wires.hub, connector=network.hub) as up:
            await frames(platform, 1)
            strangers = (MAX_UINT, *range(10**15, 10**15 + MAX_ACK_ENTRIES - 3))
            odd = ack("hub-a", (*strangers, 0), (Rejected(MAX_UINT - 1, EnvelopeRejection.MALFORMED),))
            await acked(up, platform.publish(ACK, wires.codec.encode_ack(odd)))
            assert up.metrics.odd_acks == 1
            assert await rows(ob) == []
            await ob.put(item(wires.hub, 1))
            [sent] = await frames(platform, 1)
            assert wires.seqs(sent) == [1]
            await platform.publish(ACK, wires.codec.encode_ack(ack("hub-a", (1,))))
            async with asyncio.timeout(BOUND):
                await up.wait_acked(rid(1))
            assert up.metrics.crashes == 0
            assert up.metrics.refused == {}


async def test_a_signed_ack_naming_2_to_the_63_does_not_stop_the_uplink(tmp_path, network, wires):
    """Issue 19.3's reproducer: a platform-signed ack with ``stored = [2**63]`` (one past what SQLite stores) used
    to raise OverflowError in the outbox and end the uplink task. It is refused as malformed; delivery goes on."""
    body = cbor2.dumps(
        {"v": 1, "hub": "hub-a", "ack_seq": 1, "at": 1_700_000_000_000_000, "stored": [2**63], "rejected": []},
        canonical=True,
    )
    signed = sign_detached(wires.platform.signing_key, ACK_DOMAIN, body) + body
    async with (
        open_outbox(tmp_path / "o.db") as ob,
        network.platform.session([UP, ALARM]) as platform,
    ):
        await ob.put(item(wires.hub, 0))
        async with Uplink(settings(), ob, wires.hub, connector=network.hub) as up:
            await frames(platform, 1)
            await platform.publish(ACK, signed)
            await platform.publish(ACK, wires.codec.encode_ack(ack("hub-a", (0,))))
            async with asyncio.timeout(BOUND):
                await up.wait_acked(rid(0))
            assert up.metrics.bad_acks == 1
            assert up.metrics.crashes == 0
            assert await rows(ob) == []


class _FlakyWire(HubWire):
    """A hub wire whose ack check fails once with an error nobody expects (a defect)."""

    failures = 1

    def open_ack(self, payload: bytes) -> Ack:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("defect in the ack path")
        return super().open_ack(payload)


async def test_an_unexpected_error_is_logged_counted_and_the_uplink_restarts(tmp_path, network, caplog):
    """Issue 19.3: an exception nobody classified used to end the uplink task for good (the hub ran on, never
    uploading again). Now the runner releases what was in flight, counts it and ends; its supervisor logs the
    traceback and restarts it with backoff, and the envelope is sent again."""
    platform_id = PlatformIdentity.generate()
    identity = HubIdentity.generate("hub-a")
    flaky = _FlakyWire(identity, platform_id.public)
    codec = PlatformCodec(platform_id)
    async with (
        open_outbox(tmp_path / "o.db") as ob,
        network.platform.session([UP, ALARM]) as platform,
    ):
        await ob.put(item(flaky, 0))
        with caplog.at_level(logging.ERROR, logger="gateway.uplink"):
            async with Uplink(settings(), ob, flaky, connector=network.hub) as up:
                await frames(platform, 1)
                await platform.publish(ACK, codec.encode_ack(ack("hub-a", (0,))))
                # Restarted: the envelope in flight is sent again on the new connection and acked this time. Wait for
                # that frame (the hub has subscribed to its acks by then) even when the crash was already counted:
                # an ack published before the new connection subscribed would be lost (flaky under load).
                async with asyncio.timeout(BOUND):
                    while True:
                        await frames(platform, 1)
                        if up.metrics.crashes:
                            break
                await platform.publish(ACK, codec.encode_ack(ack("hub-a", (0,))))
                async with asyncio.timeout(BOUND):
                    await up.wait_acked(rid(0))
                assert up.metrics.crashes == 1
                assert up.metrics.connects == 2
                assert up.metrics.last_error == "RuntimeError: defect in the ack path"
        [record] = [r for r in caplog.records if "unexpected error" in r.getMessage()]
        assert "uplink hub-a" in record.getMessage()
        assert "defect in the ack path" in record.getMessage()
        # The runner is a supervised task: its supervisor logged the traceback (once) and restarted it.
        [failed] = [r for r in caplog.records if r.name == "gateway.supervise" and r.levelno == logging.ERROR]
        assert "uplink:hub-a" in failed.getMessage()
        assert failed.exc_info is not None
        assert "defect in the ack path" in caplog.text


class _BrokenWire(HubWire):
    """A wire whose ack path fails on every ack (a defect that restarting does not cure)."""

    def open_ack(self, payload: bytes) -> Ack:
        raise RuntimeError("defect in the ack path, every time")


async def test_an_uplink_that_keeps_failing_makes_the_gateway_supervisor_give_up(tmp_path, network):
    """The runner is a task of the gateway's supervisor like the others: a defect that comes back on every restart
    ends in SupervisorGaveUpError (the gateway exits non-zero and systemd restarts it), not in an endless loop;
    each crash released the frame in flight, which stays in the outbox."""
    platform_id = PlatformIdentity.generate()
    broken = _BrokenWire(HubIdentity.generate("hub-a"), platform_id.public)
    codec = PlatformCodec(platform_id)
    policy = SupervisionPolicy(max_restarts=1, base_delay=0.0, max_delay=0.0)
    supervisor = Supervisor(policy)
    async with open_outbox(tmp_path / "o.db") as ob, network.platform.session([UP, ALARM]) as platform:
        await ob.put(item(broken, 0))
        up = Uplink(settings(), ob, broken, connector=network.hub, supervisor=supervisor)

        async def run_until_given_up() -> None:
            async with supervisor, up:
                for _ in range(2):  # the first crash is restarted, the second gives up
                    await frames(platform, 1)
                    await platform.publish(ACK, codec.encode_ack(ack("hub-a", (0,))))
                await asyncio.Event().wait()  # until the supervisor's task group cancels this task

        with pytest.raises(ExceptionGroup) as caught:
            await run_until_given_up()
        assert caught.value.subgroup(SupervisorGaveUpError) is not None
        assert supervisor.failures[up.task_name] == 2
        assert up.metrics.crashes == 2
        assert up.inflight_seqs == frozenset()
        assert await rows(ob) == [0]


async def test_a_lost_connection_is_not_a_supervised_failure(tmp_path, network, wires):
    """The broker going away is the network's business: the runner reconnects by itself (with its own backoff) for
    as long as it takes, and its supervisor counts no failure, so a long outage never shuts the gateway down."""
    supervisor = Supervisor()
    async with (
        open_outbox(tmp_path / "o.db") as ob,
        supervisor,
        Uplink(settings(), ob, wires.hub, connector=network.hub, supervisor=supervisor) as up,
    ):
        async with asyncio.timeout(BOUND):
            await up.connected.wait()
            await network.stop()
            await up.disconnected.wait()
            await network.start()
            await up.connected.wait()
        assert up.metrics.connects == 2
        assert up.metrics.connection_failures >= 1
        assert up.metrics.crashes == 0
        assert supervisor.failures[up.task_name] == 0


async def test_an_outbox_read_that_fails_on_a_full_disk_is_retried_not_a_crash(tmp_path, network, wires):
    """A read that shares a failed commit (a full disk fails every job of the group) raised OutboxError out of the
    sender: the runner crashed and, the disk staying full, the supervisor gave up and the hub exited."""
    async with (
        open_outbox(tmp_path / "o.db") as ob,
        network.platform.session([UP, ALARM]) as platform,
    ):
        await ob.put(item(wires.hub, 0))
        real_peek = ob.peek_batch
        failures = [2]

        async def full_disk_peek(*args: Any, **kwargs: Any) -> Any:
            if failures[0]:
                failures[0] -= 1
                raise OutboxUnwritableError(tmp_path / "o.db", "commit failed (database or disk is full)")
            return await real_peek(*args, **kwargs)

        ob.peek_batch = full_disk_peek  # type: ignore[method-assign]
        async with Uplink(settings(), ob, wires.hub, connector=network.hub) as up:
            [frame] = await frames(platform, 1)
            assert wires.seqs(frame) == [0]
            assert up.metrics.read_failures == 2
            assert up.metrics.crashes == 0
