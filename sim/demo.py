"""`carehub demo`: a resident's day in about a minute, end to end, with nothing to configure.

What runs, all on this machine: an MQTT broker (Mosquitto when installed, otherwise amqtt as a child process), the
reference platform (`community`), a simulated home with every device type on a software Bluetooth link (`sim.home`,
`sim.ble`), and the real hub daemon (`gateway.app`) talking to the meters through bleak. A simulated caregiver
answers panic calls on the platform. Midway, the broker is stopped for a while (an internet outage); the hub keeps
acting locally and buffers, and everything arrives when the broker is back.

At the end the ground truth (every measurement the meters produced, byte for byte) is compared with what the
platform stored: produced, stored, delivered, duplicated and lost, plus alarm and panic latencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from community.ingest import IngestWorker, WorkerSettings
from community.storage import SqliteStorage
from community.wire import PlatformCodec
from gateway.app import Gateway, open_gateway
from gateway.config import GatewayConfig, parse_config, render_config
from gateway.feedback import Cue, FanOutFeedback, RecordingFeedback
from protocols.devices import DeviceKind
from protocols.keys import (
    HubIdentity,
    HubPublicKey,
    PlatformIdentity,
    save_hub_identity,
    save_pendant_key,
    save_platform_identity,
    save_platform_public_keys,
)
from protocols.record import AlarmBody, AlarmState, AlarmTier
from sim import ble as sim_ble
from sim.broker import MosquittoBroker, mosquitto_available
from sim.clock import LoopClock, sleep_until
from sim.embedded_broker import EmbeddedBroker
from sim.home import Home
from sim.scenario import Scenario, load_scenario
from sim.virtual_time import VirtualTimeLoop

if TYPE_CHECKING:  # aiohttp (the console's client) is not in the [sim] extra: imported only with --console
    from community.console.client import ConsoleClient

__all__ = [
    "DEFAULT_SCENARIO",
    "PLATFORM_CONFIG",
    "DemoOptions",
    "DemoSummary",
    "percentile",
    "play_demo",
    "run_demo",
]

_NEWLY_CRITICAL = frozenset({AlarmState.RAISED, AlarmState.ESCALATED, AlarmState.CONFIRMED})
DEFAULT_SCENARIO = Path(__file__).parent / "scenarios" / "demo-day.toml"
_HUB_ID = "demo-hub"


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (nearest rank), or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What to play and how fast."""

    hours: float = 18.0
    speed: float | None = None  # simulated seconds per real second; default: the played hours in about a minute
    seed: int | None = None
    scenario: Path = DEFAULT_SCENARIO
    workdir: Path | None = None
    outage: bool = True
    broker: str = "auto"  # auto | mosquitto | embedded
    caregiver_delay_s: float = 120.0  # simulated seconds before the caregiver answers a panic call
    settle_timeout_s: float = 900.0  # simulated seconds at most to wait for the last deliveries (all acked: ends)
    console: str | None = None  # HOST:PORT: serve the doctor's console; the simulated doctor acts through its API

    def real_speed(self) -> float:
        """The compression factor in use."""
        return self.speed if self.speed is not None else max(60.0, self.hours * 3600 / 60)


@dataclass(slots=True)
class DemoSummary:
    """The demo's verdict. `lost` and `duplicates` must both be zero."""

    produced: int = 0
    stored: int = 0
    delivered: int = 0
    duplicates: int = 0
    lost: int = 0
    alarms_notice: int = 0
    alarms_warning: int = 0
    alarms_critical: int = 0
    alarm_detect_p99_ms: float | None = None
    alarm_delivery_p99_ms: float | None = None
    panic_presses: int = 0
    panic_answered: int = 0
    panic_cancelled: int = 0
    panic_local_p99_ms: float | None = None
    panic_platform_p99_ms: float | None = None
    fallback_notifications: int = 0
    outage_s: float = 0.0
    broker: str = ""
    simulated_hours: float = 0.0
    elapsed_s: float = 0.0
    spoken: list[str] = field(default_factory=list)
    lost_readings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing duplicated."""
        return self.lost == 0 and self.duplicates == 0


def _config_text(scenario: Scenario, broker_url: str, pendant_keys: dict[str, Path]) -> str:
    # The day runs on simulated loop time (sim.virtual_time): every timer of the hub means what it means in a home,
    # so the hub runs with its shipped defaults (panic ack timeout 5 s, reconnect backoff up to 30 s).
    devices: list[dict[str, object]] = []
    for device in scenario.devices:
        entry: dict[str, object] = {
            "address": device.options.address,
            "kind": device.kind.value,
            "resident": device.resident,
            "name": device.options.name,
        }
        if device.id in pendant_keys:
            entry["pendant_key_file"] = pendant_keys[device.id].name
        devices.append(entry)
    data: dict[str, object] = {
        "hub": {"id": _HUB_ID, "key_file": "hub.key"},
        "platform": {"public_key_file": "platform.pub"},
        "broker": {"url": broker_url},
        "storage": {"path": "hub-outbox.sqlite", "max_bytes": "64MB"},
        "ble": {"max_connections": 4, "clock_tolerance_s": 120},
        "alarms": {"panic_cancel_window_s": 120},
        "residents": [
            {
                "id": r.id,
                "name": r.name,
                "language": r.language,
                "profiles": ["hypertension", "type2_diabetes"],
            }
            for r in scenario.residents
        ],
        "devices": devices,
    }
    return render_config(data, header="carehub demo hub")


def _provision(
    scenario: Scenario, workdir: Path, broker_url: str
) -> tuple[GatewayConfig, PlatformIdentity, HubPublicKey]:
    platform = PlatformIdentity.generate()
    save_platform_identity(workdir / "platform.key", platform)
    save_platform_public_keys(workdir / "platform.pub", platform.public)
    hub = HubIdentity.generate(_HUB_ID)
    save_hub_identity(workdir / "hub.key", hub)
    pendant_keys: dict[str, Path] = {}
    for device in scenario.devices:
        if device.kind is DeviceKind.PENDANT and device.options.key is not None:
            path = workdir / f"pendant-{device.id}.key"
            save_pendant_key(path, device.options.address, bytes(device.options.key))
            pendant_keys[device.id] = path
    text = _config_text(scenario, broker_url, pendant_keys)
    (workdir / "hub.toml").write_text(text, encoding="utf-8")
    return parse_config(text, workdir / "hub.toml"), platform, hub.public


PLATFORM_CONFIG = "platform.toml"
"""The demo platform's config in the work directory: ``carehub platform readings -c DIR/platform.toml`` reads the
database the demo filled (see :mod:`community.config`)."""
_PLATFORM_DB = "platform.sqlite"


def _write_platform_config(workdir: Path, broker_url: str) -> None:
    text = (
        "# The platform of a carehub demo run (its broker ran only during the demo).\n"
        f'[broker]\nurl = {json.dumps(broker_url)}\nclient_id = "carehub-demo-platform"\n'
        f"[storage]\ndatabase = {json.dumps(_PLATFORM_DB)}\n"
        '[keys]\nidentity = "platform.key"\n'
    )
    (workdir / PLATFORM_CONFIG).write_text(text, encoding="utf-8")


class _SayFeedback:
    """Shows what the resident hears and sees as a line of the demo's log."""

    def __init__(self, say: Callable[[str], None], clock: LoopClock) -> None:
        self._say = say
        self._clock = clock
        self._last: tuple[str | None, str] | None = None

    def show(self, cue: Cue) -> None:
        key = (cue.message, cue.light.value)
        if key == self._last:  # a re-raised alarm repeats itself; one line is enough here
            return
        self._last = key
        self._say(
            f"{self._clock.now():%H:%M} hub -> resident [{cue.light.value}/{cue.sound.value}]: {cue.text() or ''}"
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


class _Broker:
    """Mosquitto or amqtt behind one start/stop shape."""

    def __init__(self, choice: str, workdir: Path) -> None:
        use_mosquitto = choice == "mosquitto" or (choice == "auto" and mosquitto_available())
        self.impl: MosquittoBroker | EmbeddedBroker = (
            MosquittoBroker(workdir / "broker") if use_mosquitto else EmbeddedBroker()
        )
        self.name = "mosquitto" if use_mosquitto else "amqtt (embedded)"


def play_demo(options: DemoOptions, *, say: Callable[[str], None] = lambda _m: None) -> DemoSummary:
    """Play the day on simulated loop time (:class:`sim.virtual_time.VirtualTimeLoop`, paced at the options' speed)
    and return the summary: given the same seed, the same day."""
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(pace=options.real_speed())) as runner:
        return runner.run(run_demo(options, say=say))


async def run_demo(options: DemoOptions, *, say: Callable[[str], None] = lambda _m: None) -> DemoSummary:
    """Play the day; return the summary. Must run on a :class:`sim.virtual_time.VirtualTimeLoop` (see
    :func:`play_demo`)."""
    loop = asyncio.get_running_loop()
    if not isinstance(loop, VirtualTimeLoop):
        raise TypeError("the demo's day runs on simulated loop time: call play_demo, or run on a VirtualTimeLoop")
    started = time.monotonic()
    scenario = load_scenario(options.scenario)
    speed = options.real_speed()
    summary = DemoSummary(simulated_hours=options.hours)
    with tempfile.TemporaryDirectory(prefix="carehub-demo-") as tmp:
        workdir = options.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "broker").mkdir(exist_ok=True)
        broker = _Broker(options.broker, workdir)
        summary.broker = broker.name
        config, platform_identity, hub_public = _provision(scenario, workdir, broker.impl.url)
        _write_platform_config(workdir, broker.impl.url)
        link = f"local:demo-{int(time.time() * 1000) % 1_000_000}"
        scanner, client = sim_ble.backend_for(link)
        start = scenario.start_time
        clock = LoopClock(start)
        end = min(scenario.end_time, start + timedelta(hours=options.hours))
        recorder = RecordingFeedback()
        say(f"broker: {broker.name} on {broker.impl.url}; playing {options.hours:g} h at {speed:g}x")
        await broker.impl.start()
        try:
            async with (
                DemoPlatform(
                    workdir,
                    broker.impl.host,
                    broker.impl.port,
                    platform_identity,
                    hub_public,
                    shared=isinstance(broker.impl, MosquittoBroker),
                    rng=_seeded(options.seed, "platform"),
                    wall_time=clock.wall,
                ) as platform,
                Home(scenario, link=link, clock=clock, seed=options.seed, on_event=say) as home,
                open_gateway(
                    config,
                    feedback=FanOutFeedback([recorder, _SayFeedback(say, clock)]),
                    scanner_backend=scanner,
                    client_backend=client,
                    clock=clock,
                    tick_interval=1.0,
                    rng=_seeded(options.seed, "hub"),
                ) as gateway,
                contextlib.AsyncExitStack() as console_stack,
                asyncio.TaskGroup() as tasks,
            ):
                if options.console is not None:
                    await _serve_console(console_stack, options.console, platform, scenario, workdir, clock, say)
                caregiver = tasks.create_task(
                    platform.caregiver(clock, options.caregiver_delay_s, say), name="demo.caregiver"
                )
                outage = None
                if options.outage:
                    outage = tasks.create_task(_outage(broker, clock, (start, end), summary, say), name="demo.outage")
                day = tasks.create_task(_play(home, clock, end), name="demo.day")
                await day
                if outage is not None:
                    await outage
                await _settle(gateway, home, options.settle_timeout_s)
                caregiver.cancel()
                await _summarise(summary, home, gateway, platform, recorder)
        finally:
            await broker.impl.stop()
            await sim_ble.close_centrals()
    summary.elapsed_s = round(time.monotonic() - started, 2)
    return summary


def _seeded(seed: int | None, part: str) -> random.Random:
    """The randomness of one part of the demo (reconnect jitter): from the seed, so a seed replays the same day."""
    return random.Random(f"{seed}:{part}") if seed is not None else random.Random()  # noqa: S311 - not secrets


async def _serve_console(  # noqa: PLR0917 - the demo's parts, each once
    stack: contextlib.AsyncExitStack,
    address: str,
    platform: DemoPlatform,
    scenario: Scenario,
    workdir: Path,
    clock: LoopClock,
    say: Callable[[str], None],
) -> None:
    """Serve the doctor's console on the demo's platform; the simulated doctor logs in and acts through it."""
    from community.console.demo_console import attach_console  # noqa: PLC0415 - the console only when asked

    host, _, port = address.rpartition(":")
    served = await attach_console(
        stack,
        storage=platform.storage,
        worker=platform.worker,
        database=workdir / _PLATFORM_DB,
        residents=[r.id for r in scenario.residents],
        host=host.strip("[]") or "127.0.0.1",
        port=int(port),
        clock=clock.now,
    )
    platform.doctor, platform.on_alarm = served.doctor, served.on_alarm
    say(f"console: {served.url} (log in as {served.username}, password {served.password})")


async def _play(home: Home, clock: LoopClock, end: datetime) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, (end - clock.now()).total_seconds())):
            await home.run()


async def _outage(
    broker: _Broker,
    clock: LoopClock,
    window: tuple[datetime, datetime],
    summary: DemoSummary,
    say: Callable[[str], None],
) -> None:
    """The internet goes down for a stretch of the afternoon (40%..55% of the played day)."""
    start, end = window
    span = (end - start).total_seconds()
    await sleep_until(clock, start + timedelta(seconds=0.40 * span))
    say(f"{clock.now():%H:%M} internet outage: the broker is stopped")
    down_at = clock.monotonic()
    await broker.impl.stop()
    await sleep_until(clock, start + timedelta(seconds=0.55 * span))
    await broker.impl.start()
    summary.outage_s = round(clock.monotonic() - down_at, 2)
    say(f"{clock.now():%H:%M} internet back: the broker is running again")


async def _settle(gateway: Gateway, home: Home, limit_s: float) -> None:
    """Wait until every produced reading has reached the hub, every record has been acked and no panic call is open.

    A call still open at the end of the day is answered by the caregiver once the platform has it; that may be only
    after the uplink's ack timeout re-sent what the broker dropped while the platform was reconnecting.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit_s):
            while True:
                stats = await gateway.outbox.stats()
                calls_open = any(c.state.value not in ("answered", "cancelled") for c in gateway.hub.panic_calls())
                if stats.rows == 0 and gateway.hub.counters.readings >= len(home.log) and not calls_open:
                    return
                gateway.uplink.acked.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await gateway.uplink.acked.wait()


async def _summarise(
    summary: DemoSummary, home: Home, gateway: Gateway, platform: DemoPlatform, recorder: RecordingFeedback
) -> None:
    addresses = {spec.id: spec.options.address for spec in home.scenario.devices if spec.kind is not DeviceKind.PENDANT}
    produced: Counter[tuple[str | None, bytes]] = Counter()
    for p in home.log:
        if p.device not in addresses:  # pendant events become panic records, not measurements
            continue
        produced[(addresses.get(p.device), p.raw)] += 1
        for extra in p.extra.values():
            produced[(addresses.get(p.device), extra)] += 1
    stored = await platform.measurements()
    stored_keys = Counter((device, raw) for device, raw in stored)
    summary.produced = sum(produced.values())
    summary.stored = len(stored)
    summary.delivered = sum(min(n, stored_keys.get(key, 0)) for key, n in produced.items())
    summary.duplicates = sum(max(0, stored_keys.get(key, 0) - n) for key, n in produced.items())
    summary.lost = summary.produced - summary.delivered
    summary.lost_readings = [
        f"{device} {raw.hex()}" for (device, raw), n in produced.items() if stored_keys.get((device, raw), 0) < n
    ]
    counters = gateway.hub.counters
    summary.alarms_notice = counters.alarms["notice"]
    summary.alarms_warning = counters.alarms["warning"]
    summary.alarms_critical = counters.alarms["critical"]
    summary.alarm_detect_p99_ms = _ms(percentile(counters.alarm_detect_s, 99))
    summary.alarm_delivery_p99_ms = _ms(percentile(counters.alarm_delivery_s, 99))
    summary.panic_local_p99_ms = _ms(percentile(counters.panic_local_s, 99))
    summary.panic_platform_p99_ms = _ms(percentile(counters.panic_platform_s, 99))
    summary.fallback_notifications = counters.fallback_notifications
    calls = gateway.hub.panic_calls()
    summary.panic_presses = len(calls)
    summary.panic_answered = sum(1 for c in calls if c.state.value == "answered")
    summary.panic_cancelled = sum(1 for c in calls if c.state.value == "cancelled")
    summary.spoken = [m for m in recorder.messages() if m]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def summary_json(summary: DemoSummary) -> str:
    """One JSON object."""
    return json.dumps(summary.as_dict(), ensure_ascii=False)


def _no_console() -> None:
    """No console to wake."""


class DemoPlatform:
    """The reference platform as the demo runs it: storage, one ingest worker, and a simulated caregiver."""

    def __init__(
        self,
        workdir: Path,
        host: str,
        port: int,
        identity: PlatformIdentity,
        hub: HubPublicKey,
        *,
        shared: bool,
        rng: random.Random | None = None,
        wall_time: Callable[[], float] = time.time,
    ) -> None:
        self._workdir = workdir
        self._rng = rng
        self._wall_time = wall_time
        self._settings = WorkerSettings(
            host,
            port,
            client_id="carehub-demo-platform",
            share_group="ingest" if shared else "",  # amqtt has no shared subscriptions
        )
        self._identity = identity
        self._hub = hub
        self._stack = contextlib.AsyncExitStack()
        self._worker: IngestWorker | None = None
        self._storage: SqliteStorage | None = None
        #: The simulated doctor's console session (carehub demo --console), and the console queue's wake-up call.
        self.doctor: ConsoleClient | None = None
        self.on_alarm: Callable[[], None] = _no_console

    @property
    def worker(self) -> IngestWorker:
        """The running ingest worker."""
        if self._worker is None:
            raise RuntimeError("the demo platform is not running")
        return self._worker

    @property
    def storage(self) -> SqliteStorage:
        """The platform's database."""
        if self._storage is None:
            raise RuntimeError("the demo platform is not running")
        return self._storage

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            storage = await stack.enter_async_context(SqliteStorage(self._workdir / _PLATFORM_DB))
            await storage.enroll_hub(self._hub)
            self._worker = await stack.enter_async_context(
                IngestWorker(
                    self._settings, storage, PlatformCodec(self._identity), wall_time=self._wall_time, rng=self._rng
                )
            )
            self._storage = storage
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    async def caregiver(self, clock: LoopClock, delay_s: float, say: Callable[[str], None]) -> None:
        """Answer every panic call, and take on every critical alarm, after `delay_s` simulated seconds, as a
        family doctor on the platform would (a critical reading reaches the doctor at once; her acknowledgement
        tells the resident that someone is acting and stops the hub repeating it)."""
        cancelled: set[str] = set()
        async with asyncio.TaskGroup() as answers:
            while True:
                record = await self.worker.alarms.get()
                self.on_alarm()
                body = record.body
                if not isinstance(body, AlarmBody):
                    continue
                if body.condition != "panic":
                    if body.tier is AlarmTier.CRITICAL and body.state in _NEWLY_CRITICAL:
                        answers.create_task(self._take_on(body, clock, delay_s, say), name="demo.caregiver.take_on")
                    continue
                if body.state is AlarmState.CANCELLED:
                    cancelled.add(body.alarm_id)
                elif body.state is AlarmState.RAISED:
                    answers.create_task(
                        self._answer(body.alarm_id, clock, delay_s, say, cancelled), name="demo.caregiver.answer"
                    )

    async def _answer(
        self, alarm_id: str, clock: LoopClock, delay_s: float, say: Callable[[str], None], cancelled: set[str]
    ) -> None:
        await clock.sleep(delay_s)
        if alarm_id in cancelled:
            say(f"{clock.now():%H:%M} platform: call {alarm_id} was cancelled by the resident; noted, no callback")
            return
        await self._ack(alarm_id, clock)
        say(f"{clock.now():%H:%M} platform: Dr. Li (family doctor) answered panic call {alarm_id}")

    async def _take_on(self, body: AlarmBody, clock: LoopClock, delay_s: float, say: Callable[[str], None]) -> None:
        await clock.sleep(delay_s)
        await self._ack(body.alarm_id, clock)
        say(f"{clock.now():%H:%M} platform: Dr. Li (family doctor) took on alarm {body.condition} and will call")

    async def _ack(self, alarm_id: str, clock: LoopClock) -> None:
        if self.doctor is not None:  # through the console's HTTP API, as Dr. Li logged in (carehub demo --console)
            await self.doctor.ack(self._hub.hub_id, alarm_id)
        else:
            await self.worker.ack_alarm(self._hub.hub_id, alarm_id, "Dr. Li", clock.now(), role="family doctor")

    async def measurements(self) -> list[tuple[str | None, bytes]]:
        """(device, raw GATT bytes) of every stored measurement record."""
        return [
            (stored.device, bytes.fromhex(str(stored.body["raw"])))
            for stored in await self.storage.readings(self._hub.hub_id)
            if stored.kind == "measurement"
        ]
