"""One worker process of ``carehub sim fleet``: many protocol-level hubs on the hub's own uplink and outbox.

Run as ``python -m sim.fleet_hub``. It reads one :class:`ProcessPlan` as JSON on stdin, prepares every hub (an
in-memory outbox with the real outbox's interface, :class:`sim.fleet_outbox.MemoryOutbox`, the backlog sealed with
:mod:`protocols` and put in the routine lane), prints ``{"ready": ...}`` and waits for a line ``go <epoch seconds>``.
Then every hub (a few asyncio tasks, no thread) connects at once through a real :class:`gateway.uplink.Uplink` (hub
defaults: window, resend backoff, reconnect jitter: the rules of ``docs/protocol.md`` §6.1, not a copy of them), panics
are put in the priority lane at their planned offsets, and the process prints one :class:`ProcessResult` as JSON
when every outbox is empty and every panic acked, or one ``{"error": ...}`` line and exits 1. The (hub, record id)
pairs it produced go to a file for the parent to compare with what the platform stored.

Measured on the way (:class:`ProcessResult`): each panic's :class:`PanicTrace` (the outbox put, the uplink reading
it, the publish of the frame carrying it - found by the envelope's bytes in the payload - its PUBACK, the ack, and
the sessions made or lost meanwhile), the event loop's lag (a timer due every :data:`LAG_TICK_S`: how late it ran),
the process's CPU time, and what failed each connection attempt or ended each session (:func:`error_kind`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import math
import re
import resource
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import nacl.public
import nacl.signing

from community.samples import T0, bp_record, panic_record
from gateway.errors import GatewayError
from gateway.outbox import Lane, Outbox, OutboxItem
from gateway.transport import Connector, Incoming, Transport, TransportError
from gateway.uplink import Uplink, UplinkSettings, refusal_counts
from gateway.uplink_settings import REFUSED_CURSOR_PREFIX, mqtt_connector
from gateway.wire import HubWire
from protocols.errors import EnvelopeRejection
from protocols.keys import HubIdentity, PlatformPublicKeys
from runtime import output
from sim.fleet_outbox import MemoryOutbox

__all__ = [
    "LAG_TICK_S",
    "HubPlan",
    "PanicTrace",
    "ProcessPlan",
    "ProcessResult",
    "error_kind",
    "main",
    "run_process",
]

_PUT_CHUNK: Final = 500  # envelopes per outbox transaction while the backlog is prepared
_SAMPLE_S: Final = 1.0  # seconds between samples of the envelopes acked so far (a measurement, not a wait)
_PENDANT: Final = "fleet-pendant"
LAG_TICK_S: Final = 0.05
"""Seconds between the event-loop lag timer's ticks (:attr:`ProcessResult.loop_lag_max_ms`)."""


@dataclass(frozen=True, slots=True)
class HubPlan:
    """One hub: its id, its Ed25519 seed (hex), its backlog and the offsets (s after go) of its panic presses."""

    hub_id: str
    seed: str
    backlog: int
    panics: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class ProcessPlan:
    """What one worker process runs."""

    index: int
    host: str
    port: int
    workdir: str
    platform_verify: str
    platform_box: str
    timeout_s: float
    hubs: tuple[HubPlan, ...]
    panics_after_connect: bool = False
    """Panic offsets count from the hub's first connection, not from go (a panic during the drain, not in the
    reconnect storm)."""
    probe: bool = False
    """This process runs only hubs that press panics (their latency measured on a loop of their own, as a real hub
    has its own CPU; :class:`sim.fleet.FleetOptions`)."""

    def to_json(self) -> str:
        """The plan as one JSON line."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ProcessPlan:
        """Parse :meth:`to_json`'s output.

        Raises:
            ValueError: not a plan.
        """
        try:
            data = json.loads(text)
            hubs = tuple(
                HubPlan(str(h["hub_id"]), str(h["seed"]), int(h["backlog"]), tuple(float(p) for p in h["panics"]))
                for h in data["hubs"]
            )
            return cls(
                index=int(data["index"]),
                host=str(data["host"]),
                port=int(data["port"]),
                workdir=str(data["workdir"]),
                platform_verify=str(data["platform_verify"]),
                platform_box=str(data["platform_box"]),
                timeout_s=float(data["timeout_s"]),
                hubs=hubs,
                panics_after_connect=bool(data.get("panics_after_connect", False)),
                probe=bool(data.get("probe", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a fleet process plan ({type(exc).__name__}: {exc})") from exc


@dataclass(frozen=True, slots=True)
class PanicTrace:
    """Where one panic's latency went: milliseconds after the press of each step (``-1``: the step was not seen).

    Attributes:
        pressed_s: the press, seconds after go.
        connected: whether its hub was connected at the press.
        put_ms: sealed (a sequence number allocated, signed, encrypted) and put in the outbox's priority lane.
        offered_ms: the uplink's sender last read it from the outbox (and chose the frame) before that frame's
            publish: put -> offered is the sender waking up and reading.
        publish_ms: the frame carrying it (found by the envelope's bytes in the payload) handed to MQTT, after its
            lane's bound: offered -> publish is the publish task starting.
        puback_ms: the broker's PUBACK for that frame (``-1`` also when it was read only after the platform's ack).
        acked_ms: the platform's ack at the hub (the panic's latency).
        publishes: frames carrying it that were handed to MQTT (more than one: resent).
        connects, losses: sessions the hub made and lost between the press and the ack.
        loop_lag_max_ms: the process's worst event-loop lag sampled between the press and the ack.
    """

    pressed_s: float
    connected: bool
    put_ms: float
    offered_ms: float
    publish_ms: float
    puback_ms: float
    acked_ms: float
    publishes: int
    connects: int
    losses: int
    loop_lag_max_ms: float

    @classmethod
    def from_dict(cls, data: object) -> PanicTrace:
        """Parse one entry of :meth:`ProcessResult.to_json`'s ``panic_traces``.

        Raises:
            ValueError: not a trace.
        """
        if not isinstance(data, dict):
            raise ValueError(f"not a panic trace: {data!r:.80}")  # noqa: TRY004
        try:
            return cls(
                pressed_s=float(data["pressed_s"]),
                connected=bool(data["connected"]),
                put_ms=float(data["put_ms"]),
                offered_ms=float(data["offered_ms"]),
                publish_ms=float(data["publish_ms"]),
                puback_ms=float(data["puback_ms"]),
                acked_ms=float(data["acked_ms"]),
                publishes=int(data["publishes"]),
                connects=int(data["connects"]),
                losses=int(data["losses"]),
                loop_lag_max_ms=float(data["loop_lag_max_ms"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a panic trace ({type(exc).__name__}: {exc})") from exc


@dataclass(frozen=True, slots=True)
class ProcessResult:
    """What one worker process measured.

    Attributes:
        index: the process's index.
        hubs: hubs it ran.
        envelopes: envelopes its hubs produced (backlog and panics).
        records: records in them.
        produced_file: the file listing ``hub record_id`` of every record produced, one per line.
        frames_sent: frames its hubs published (first sends and resends).
        envelopes_sent: envelopes in those frames.
        envelopes_published: envelopes its hubs handed to MQTT, PUBACKed or not (a publish whose session was lost
            before its PUBACK may be stored by the broker all the same).
        resends: envelopes released for a resend (ack timeouts and reconnects).
        connects: successful connections.
        connection_failures: connections lost or refused.
        refused: envelopes the platform refused for good (dropped from the outboxes).
        panic_latencies_ms: press (before sealing) to the hub's receipt of the platform's ack, one per panic.
        drain_s: go to the moment the last of its hubs first had an empty outbox (its backlog, and the panics
            pressed by then, acked); the process reports only once every panic is acked as well.
        connected_s: go to the moment the last of its hubs first connected (the reconnect storm's length).
        panics_unconnected: panics pressed while their hub had not yet connected (their latency includes the wait
            for the broker to take the hub's session).
        acked_series: the envelopes its hubs had seen acked as stored at 1, 2, 3... seconds after go.
        acked_times: when each of those samples was really taken, seconds after go (later than due while the loop
            lags).
        panic_traces: per panic, where its latency went (:class:`PanicTrace`: the frame carrying it is found by
            its envelope's bytes, not by time).
        loop_lag_max_ms, loop_lag_p99_ms: how late this process's event loop ran a timer due every
            :data:`LAG_TICK_S` from go to the end (the worst and the 99th percentile): a loop that is seconds late
            delays every hub it runs, so a panic's latency then measures the load generator, not the hub.
        cpu_s: this process's CPU seconds (all threads) from go to the end; ``cpu_s / run_s`` near 1 is a saturated
            core.
        run_s: go to the end (the last hub drained and every panic acked).
        loop_lag_series_ms: the worst event-loop lag in each second after go.
        probe: whether this process ran only the hubs that press panics (:attr:`ProcessPlan.probe`).
        connection_errors: ``(kind, count)`` of what failed a connection attempt (``connect: ...``) or ended a
            session (``lost: ...``), most frequent first (:func:`error_kind`).
    """

    index: int
    hubs: int
    envelopes: int
    records: int
    produced_file: str
    frames_sent: int
    envelopes_sent: int
    resends: int
    connects: int
    connection_failures: int
    refused: int
    panic_latencies_ms: tuple[float, ...]
    drain_s: float
    connected_s: float = 0.0
    acked_series: tuple[int, ...] = ()
    panics_unconnected: int = 0
    panic_traces: tuple[PanicTrace, ...] = ()
    loop_lag_max_ms: float = 0.0
    loop_lag_p99_ms: float = 0.0
    cpu_s: float = 0.0
    run_s: float = 0.0
    loop_lag_series_ms: tuple[float, ...] = ()
    probe: bool = False
    connection_errors: tuple[tuple[str, int], ...] = ()
    acked_times: tuple[float, ...] = ()
    envelopes_published: int = 0

    def to_json(self) -> str:
        """The result as one JSON line."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ProcessResult:
        """Parse the object :meth:`to_json` printed.

        Raises:
            ValueError: not a result.
        """
        try:
            fields = {f.name: data[f.name] for f in dataclasses.fields(cls)}
        except KeyError as exc:
            raise ValueError(f"not a fleet process result (no {exc})") from exc
        latencies = fields.pop("panic_latencies_ms")
        series = fields.pop("acked_series")
        traces = fields.pop("panic_traces")
        lags = fields.pop("loop_lag_series_ms")
        errors = fields.pop("connection_errors")
        times = fields.pop("acked_times")
        if not isinstance(lags, list) or not isinstance(errors, list) or not isinstance(times, list):
            raise ValueError("not a fleet process result (loop_lag_series_ms or connection_errors)")  # noqa: TRY004
        if not isinstance(latencies, list) or not isinstance(series, list) or not isinstance(traces, list):
            raise ValueError("not a fleet process result (panic_latencies_ms, acked_series or panic_traces)")  # noqa: TRY004
        try:
            return cls(
                panic_latencies_ms=tuple(float(x) for x in latencies),
                acked_series=tuple(int(x) for x in series),
                panic_traces=tuple(PanicTrace.from_dict(t) for t in traces),
                loop_lag_series_ms=tuple(float(x) for x in lags),
                connection_errors=tuple((str(kind), int(n)) for kind, n in errors),
                acked_times=tuple(float(x) for x in times),
                **fields,  # type: ignore[arg-type]
            )
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"not a fleet process result ({exc})") from exc


@dataclass(slots=True)
class _Publish:
    """One alarm-lane publish: when it was handed to MQTT, when the broker's PUBACK came (``None``: never)."""

    start: float
    end: float | None
    payload: bytes


class _WatchedOutbox(MemoryOutbox):
    """The fleet's outbox, noting when the uplink's sender reads a watched envelope (a pressed panic's)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.offered: dict[int, list[float]] = {}  # watched envelope seq -> monotonic times the sender read it

    async def peek_batch(self, limit: int, max_bytes: int, *, exclude: Collection[int] = ()) -> list[OutboxItem]:
        """:meth:`MemoryOutbox.peek_batch`, noting the time for each watched envelope it returns."""
        items = await super().peek_batch(limit, max_bytes, exclude=exclude)
        if self.offered:
            now = time.monotonic()
            for item in items:
                times = self.offered.get(item.envelope_seq)
                if times is not None:
                    times.append(now)
        return items


@dataclass(slots=True)
class _Hub:
    plan: HubPlan
    wire: HubWire
    outbox: _WatchedOutbox
    produced: list[str]
    latencies: list[float] = dataclasses.field(default_factory=list)
    drained_at: float = 0.0
    connected_at: float = 0.0
    uplink: Uplink | None = None
    panics_unconnected: int = 0
    alarm_publishes: list[_Publish] = dataclasses.field(default_factory=list)
    traces: list[PanicTrace] = dataclasses.field(default_factory=list)
    errors: dict[str, int] = dataclasses.field(default_factory=dict)


class _LoopLag:
    """How late the event loop runs a timer due every :data:`LAG_TICK_S` (a measurement, not a wait)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (monotonic time, seconds late)

    async def run(self) -> None:
        while True:
            due = time.monotonic() + LAG_TICK_S
            await asyncio.sleep(LAG_TICK_S)
            now = time.monotonic()
            self.samples.append((now, max(0.0, now - due)))

    def worst(self, since: float, until: float) -> float:
        """The largest lag, in ms, of the samples that cover ``since`` .. ``until`` (monotonic)."""
        late = [lag for t, lag in self.samples if since <= t <= until + LAG_TICK_S + lag]
        return max(late, default=0.0) * 1000.0

    def series(self, since: float) -> tuple[float, ...]:
        """The largest lag, in ms, in each second after ``since`` (0: no sample in it)."""
        worst: list[float] = []
        for t, lag in self.samples:
            k = int(t - since)
            if k < 0:
                continue
            worst.extend([0.0] * (k + 1 - len(worst)))
            worst[k] = max(worst[k], round(lag * 1000.0, 1))
        return tuple(worst)

    def summary(self, since: float) -> tuple[float, float]:
        """(max, p99) in ms of the samples after ``since``."""
        late = sorted(lag for t, lag in self.samples if t >= since)
        if not late:
            return 0.0, 0.0
        return late[-1] * 1000.0, late[max(0, math.ceil(0.99 * len(late)) - 1)] * 1000.0


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _prepare(stack: contextlib.AsyncExitStack, plan: ProcessPlan, hub: HubPlan) -> _Hub:
    identity = HubIdentity(hub.hub_id, nacl.signing.SigningKey(bytes.fromhex(hub.seed)))
    platform = PlatformPublicKeys(
        nacl.signing.VerifyKey(bytes.fromhex(plan.platform_verify)),
        nacl.public.PublicKey(bytes.fromhex(plan.platform_box)),
    )
    wire = HubWire(identity, platform)
    # The outbox contract in memory (sim.fleet_outbox): a real SQLite outbox per hub is a database thread per hub,
    # and 10,000 of them in one process left the fleet, not the platform, the bottleneck.
    outbox = _WatchedOutbox(hub.hub_id)
    stack.callback(outbox.close)
    produced: list[str] = []
    if hub.backlog:
        seqs = await outbox.allocate_seqs(hub.backlog)
        items = []
        for n, seq in enumerate(seqs):
            record = bp_record(hub.hub_id, n, seq=seq)
            envelope = wire.seal(seq, [record], T0 + _dt.timedelta(minutes=n, seconds=3))
            rid = record.record_id.hex()
            items.append(OutboxItem(seq, envelope, Lane.ROUTINE, "measurement", (rid,), time.time()))
            produced.append(rid)
        for start in range(0, len(items), _PUT_CHUNK):
            await outbox.put_many(items[start : start + _PUT_CHUNK])
    return _Hub(hub, wire, outbox, produced)


async def _press(
    hub: _Hub, uplink: Uplink, lag: _LoopLag, counter: int, at: float, *, go: float, after_connect: float | None = None
) -> None:
    if after_connect is not None:  # ``after_connect`` seconds after the hub's first connection instead of at ``at``
        await uplink.connected.wait()
        at = time.time() + after_connect
    await asyncio.sleep(max(0.0, at - time.time()))
    pressed = time.monotonic()
    pressed_s = time.time() - go
    connected = uplink.connected.is_set()
    if not connected:
        hub.panics_unconnected += 1
    connects, losses = uplink.metrics.connects, uplink.metrics.connection_failures
    (seq,) = await hub.outbox.allocate_seqs(1)  # as the hub does: durably, before sealing
    alarm_id = f"panic-{hub.plan.hub_id}-{counter}"
    record = panic_record(hub.plan.hub_id, _PENDANT, counter, alarm_id, seq)
    envelope = hub.wire.seal(seq, [record], _dt.datetime.now(_dt.UTC))
    rid = record.record_id.hex()
    hub.produced.append(rid)
    offered = hub.outbox.offered.setdefault(seq, [])
    await hub.outbox.put(OutboxItem(seq, envelope, Lane.PRIORITY, "panic", (rid,), time.time()))
    put = time.monotonic()
    await uplink.wait_acked(rid)
    acked = time.monotonic()
    del hub.outbox.offered[seq]
    hub.latencies.append((acked - pressed) * 1000.0)
    carrying = [p for p in hub.alarm_publishes if p.start >= pressed and envelope in p.payload]
    # The publish the ack answered: the first whose PUBACK came before the ack (a frame lost with its connection is
    # sent again in another), else the first (its PUBACK was read after the platform's ack, or never).
    answered = [p for p in carrying if p.end is not None and p.end <= acked]
    publish = answered[0] if answered else next(iter(carrying), None)
    puback = None if publish is None or publish.end is None or publish.end > acked else publish.end

    def ms(t: float | None) -> float:
        return -1.0 if t is None else round((t - pressed) * 1000.0, 3)

    chosen = None if publish is None else max((t for t in offered if t <= publish.start), default=None)
    hub.traces.append(
        PanicTrace(
            pressed_s=round(pressed_s, 3),
            connected=connected,
            put_ms=ms(put),
            offered_ms=ms(chosen),
            publish_ms=ms(None if publish is None else publish.start),
            puback_ms=ms(puback),
            acked_ms=ms(acked),
            publishes=len(carrying),
            connects=uplink.metrics.connects - connects,
            losses=uplink.metrics.connection_failures - losses,
            loop_lag_max_ms=round(lag.worst(pressed, acked), 3),
        )
    )


class _TimedTransport:
    """The hub's real MQTT transport, noting when each alarm-lane publish started and when the broker took it."""

    def __init__(self, inner: Transport, hub: _Hub) -> None:
        self._inner = inner
        self._hub = hub

    @property
    def node(self) -> str:
        return self._inner.node

    async def publish(self, topic: str, payload: bytes) -> None:
        if not topic.endswith("/alarm"):
            await self._inner.publish(topic, payload)
            return
        noted = _Publish(time.monotonic(), None, payload)
        self._hub.alarm_publishes.append(noted)
        await self._inner.publish(topic, payload)
        noted.end = time.monotonic()

    def incoming(self) -> AsyncIterator[Incoming]:
        return self._inner.incoming()


_HUB_TOPIC = re.compile(r"carehub/v1/[^/]+/")


def error_kind(exc: BaseException, *, connected: bool) -> str:
    """What ended a session or failed a connection, without the hub's id: ``connect: ...`` or ``lost: ...``."""
    return f"{'lost' if connected else 'connect'}: {_HUB_TOPIC.sub('carehub/v1/<hub>/', str(exc))[:120]}"


def transport_error(exc: BaseException) -> TransportError | None:
    """``exc`` if it is a :class:`TransportError`, else the first one in it when it is an exception group."""
    if isinstance(exc, TransportError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = transport_error(inner)
            if found is not None:
                return found
    return None


class _TimedConnector:
    """The hub's real connector, counting what failed each connection attempt or ended each session."""

    def __init__(self, inner: Connector, hub: _Hub) -> None:
        self._inner = inner
        self._hub = hub

    @contextlib.asynccontextmanager
    async def session(self, subscriptions: Sequence[str]) -> AsyncIterator[Transport]:
        connected = False
        try:
            async with self._inner.session(subscriptions) as transport:
                connected = True
                yield _TimedTransport(transport, self._hub)
        except BaseException as exc:
            # A session the uplink's tasks ended arrives here as their task group's exception group.
            lost = transport_error(exc)
            if lost is not None:
                kind = error_kind(lost, connected=connected)
                self._hub.errors[kind] = self._hub.errors.get(kind, 0) + 1
            raise


async def _first_connect(hub: _Hub, uplink: Uplink) -> None:
    await uplink.connected.wait()
    hub.connected_at = time.time()


async def _sample(hubs: Sequence[_Hub], go: float, series: list[int], times: list[float]) -> None:
    """Every second after go: the envelopes acked so far (the storm's throughput over time), and when the sample was
    really taken (a loop running seconds late takes them late and bunched)."""
    while True:
        await asyncio.sleep(max(0.0, go + _SAMPLE_S * (len(series) + 1) - time.time()))
        series.append(sum(h.uplink.metrics.delivered_envelopes for h in hubs if h.uplink is not None))
        times.append(round(time.time() - go, 3))


async def _drained(hub: _Hub, uplink: Uplink) -> None:
    while True:
        uplink.acked.clear()
        if (await hub.outbox.stats()).rows == 0:
            hub.drained_at = time.time()
            return
        await uplink.acked.wait()


async def _refused(outbox: Outbox) -> int:
    cursors = {}
    for reason in EnvelopeRejection:
        key = REFUSED_CURSOR_PREFIX + reason.value
        value = await outbox.get_cursor(key)
        if value is not None:
            cursors[key] = value
    return sum(refusal_counts(cursors).values())


async def _run_hub(hub: _Hub, plan: ProcessPlan, go: float, lag: _LoopLag) -> Uplink:
    settings = UplinkSettings(hub_id=hub.plan.hub_id, host=plan.host, port=plan.port)
    connector = _TimedConnector(mqtt_connector(settings), hub)
    async with Uplink(settings, hub.outbox, hub.wire, connector=connector) as uplink, asyncio.TaskGroup() as tg:
        hub.uplink = uplink
        tg.create_task(_first_connect(hub, uplink), name=f"connect:{hub.plan.hub_id}")
        for counter, offset in enumerate(hub.plan.panics, start=1):
            after = offset if plan.panics_after_connect else None
            tg.create_task(
                _press(hub, uplink, lag, counter, go + offset, go=go, after_connect=after),
                name=f"press:{hub.plan.hub_id}:{counter}",
            )
        tg.create_task(_drained(hub, uplink), name=f"drain:{hub.plan.hub_id}")
    return uplink


async def run_process(plan: ProcessPlan, go_time: Callable[[], Awaitable[float]]) -> ProcessResult:
    """Prepare every hub of ``plan``, await ``go_time()`` (the epoch second the storm starts), run them to the drain."""
    async with contextlib.AsyncExitStack() as stack:
        hubs = [await _prepare(stack, plan, h) for h in plan.hubs]
        go = await go_time()
        await asyncio.sleep(max(0.0, go - time.time()))
        uplinks: list[Uplink] = []
        series: list[int] = []
        lag = _LoopLag()
        started, cpu_start = time.monotonic(), time.process_time()

        async def one(hub: _Hub) -> None:
            uplinks.append(await _run_hub(hub, plan, go, lag))

        sampled_at: list[float] = []
        sampler = asyncio.create_task(_sample(hubs, go, series, sampled_at), name="fleet-sampler")
        lag_timer = asyncio.create_task(lag.run(), name="fleet-loop-lag")
        try:
            async with asyncio.timeout(plan.timeout_s), asyncio.TaskGroup() as tg:
                for hub in hubs:
                    tg.create_task(one(hub), name=f"hub:{hub.plan.hub_id}")
        except TimeoutError:
            raise TimeoutError(
                f"fleet process {plan.index}: {len(plan.hubs) - len(uplinks)} of {len(plan.hubs)} hubs not drained"
                f" after {plan.timeout_s:g} s"
            ) from None
        finally:
            cpu_s, run_s = time.process_time() - cpu_start, time.monotonic() - started
            for task in (sampler, lag_timer):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # A last sample at the end: the sampler's last one may predate the last acks by up to a second.
            series.append(sum(u.metrics.delivered_envelopes for u in uplinks))
            sampled_at.append(round(time.time() - go, 3))
        refused = sum([await _refused(h.outbox) for h in hubs])
    produced_file = Path(plan.workdir) / f"produced-{plan.index}.txt"
    produced_file.write_text("".join(f"{h.plan.hub_id} {rid}\n" for h in hubs for rid in h.produced), encoding="utf-8")
    metrics = [u.metrics for u in uplinks]
    lag_max, lag_p99 = lag.summary(started)
    errors: dict[str, int] = {}
    for h in hubs:
        for kind, n in h.errors.items():
            errors[kind] = errors.get(kind, 0) + n
    return ProcessResult(
        index=plan.index,
        hubs=len(hubs),
        envelopes=sum(h.plan.backlog + len(h.plan.panics) for h in hubs),
        records=sum(len(h.produced) for h in hubs),
        produced_file=str(produced_file),
        frames_sent=sum(m.frames_sent for m in metrics),
        envelopes_sent=sum(m.envelopes_sent for m in metrics),
        resends=sum(m.resends for m in metrics),
        connects=sum(m.connects for m in metrics),
        connection_failures=sum(m.connection_failures for m in metrics),
        refused=refused,
        panic_latencies_ms=tuple(x for h in hubs for x in h.latencies),
        drain_s=max(0.0, max(h.drained_at for h in hubs) - go),
        connected_s=max(0.0, max(h.connected_at for h in hubs) - go),
        acked_series=tuple(series),
        acked_times=tuple(sampled_at[: len(series)]),
        panics_unconnected=sum(h.panics_unconnected for h in hubs),
        panic_traces=tuple(t for h in hubs for t in h.traces),
        loop_lag_max_ms=round(lag_max, 3),
        loop_lag_p99_ms=round(lag_p99, 3),
        cpu_s=round(cpu_s, 3),
        run_s=round(run_s, 3),
        loop_lag_series_ms=lag.series(started),
        probe=plan.probe,
        connection_errors=tuple(sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))),
        envelopes_published=sum(m.envelopes_published for m in metrics),
    )


async def _ready_then_go() -> float:
    output.emit(json.dumps({"ready": True}))
    line = await asyncio.to_thread(sys.stdin.readline)
    word, _, value = line.strip().partition(" ")
    if word != "go":
        raise ValueError(f"expected 'go <epoch>' on stdin, got {line.strip()!r}")
    return float(value)


def main(argv: Sequence[str] | None = None) -> None:
    """Read a plan on stdin, run it, print the result (or one error line and exit 1)."""
    del argv
    logging.basicConfig(level=logging.CRITICAL)  # connection warnings of a storm are counted, not printed
    _raise_fd_limit()
    try:
        plan = ProcessPlan.from_json(sys.stdin.readline())
        result = asyncio.run(run_process(plan, _ready_then_go))
    except (ValueError, OSError, TimeoutError, GatewayError) as exc:
        output.emit(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        sys.exit(1)
    output.emit(result.to_json())


if __name__ == "__main__":
    main()
