"""``carehub sim soak``: a compressed month of a busy home, watching the hub for anything that grows.

The demo's machinery plays the month (:mod:`sim.demo`): a :class:`sim.virtual_time.VirtualTimeLoop` (simulated time,
so a month of timers runs in minutes and the same seed gives the same month), the demo's broker, platform and
simulated caregiver, the demo home's devices (:mod:`sim.home`), and the real hub daemon (:func:`gateway.app.
open_gateway`). Every day the resident uses every meter (blood pressure twice, glucose four times, scale,
thermometer, oximeter twice, heart-rate band twice), tests the pendant once (a press the caregiver answers) and
checks in once. Every ``outage_every`` days the broker is stopped for ``outage_minutes`` (an internet outage), and
every ``restart_every`` days the hub is shut down and started again *in the same process*: a leak of file
descriptors, threads, tasks or memory by a hub that was shut down is then visible, where a new process would hide
it.

Every day at 03:00, when the home is quiet, one :class:`Sample` is taken: resident set size, open file descriptors,
asyncio tasks, threads, the outbox's rows and bytes, the sizes of the hub's files, and the bytes this process has
caused to be written to storage (``write_bytes`` of ``/proc/self/io``).

Why ``/proc/self/io`` ``write_bytes``: it is what the kernel counts as sent to the block layer on the process's
behalf, in whole pages (4 KiB) each time a page is dirtied, so a 100-byte append that is fsynced counts 4 KiB, as it
costs the card. Counting file sizes or SQLite's WAL frames would miss rewritten pages, fsynced partial pages and the
journal's truncations. It does not include the file system's own metadata journal (written by a kernel thread), which
is part of the write-amplification factor assumed in the README. Everything else in this process that could write is
kept off the count: the platform's database lives on tmpfs (``/dev/shm``, where nothing is counted) whenever that
exists, and the broker is another process; what is counted is the hub's outbox, indication journal and its keys.
Day 0 (provisioning, first imports) is a warm-up and not part of any figure.

The verdict (:func:`check_trends`, documented there) fails the run when something grows where it should not.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import os
import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from gateway.app import Gateway, open_gateway
from gateway.config import GatewayConfig
from protocols.devices import DeviceKind
from sim import ble as sim_ble
from sim.broker import MosquittoBroker
from sim.clock import LoopClock, sleep_until
from sim.demo import DEFAULT_SCENARIO, DemoPlatform, _Broker, _provision
from sim.home import Home
from sim.scenario import Event, EventKind, Scenario, load_scenario
from sim.virtual_time import _BUSY_STATES, VirtualTimeLoop, _children

__all__ = [
    "QUICK_DAYS",
    "Sample",
    "SoakOptions",
    "SoakReport",
    "Tolerances",
    "TrendFinding",
    "check_trends",
    "play_soak",
    "soak_scenario",
]

_log = logging.getLogger(__name__)

QUICK_DAYS = 2
_SAMPLE_AT = timedelta(hours=3)  # the quiet hour: nothing measured, nothing in flight
_OUTAGE_AT = timedelta(hours=13)
_RESTART_AT = timedelta(hours=15, minutes=30)
_DRAIN_LIMIT_S = 1800.0  # simulated seconds at most a sample waits for the outbox to empty


@dataclass(frozen=True, slots=True)
class SoakOptions:
    """What to play."""

    days: int = 30
    seed: int = 17
    workdir: Path | None = None
    broker: str = "auto"  # auto | mosquitto | embedded
    outage_every: int = 3  # days between broker outages (0: none)
    outage_minutes: float = 90.0
    restart_every: int = 4  # days between hub restarts (0: none)
    tick_s: float = 2.0  # the hub's tick interval (1 s on a real hub; 2 s halves the soak's CPU, same behaviour)

    def __post_init__(self) -> None:
        if self.days < 2:
            raise ValueError("a soak needs at least 2 days (day 0 is a warm-up)")
        if self.outage_every < 0 or self.restart_every < 0:
            raise ValueError("outage_every and restart_every must not be negative")
        if not 0 < self.outage_minutes < 600:
            raise ValueError("outage_minutes must be within 0..600")
        if self.broker not in ("auto", "mosquitto", "embedded"):
            raise ValueError(f"broker: expected auto, mosquitto or embedded, got {self.broker!r}")


@dataclass(frozen=True, slots=True)
class Sample:
    """The process and the hub's storage at 03:00 of ``day``; the ``*_day`` fields cover the 24 h before it."""

    day: int
    rss_kib: int
    fds: int
    tasks: int
    threads: int
    outbox_rows: int
    outbox_bytes: int
    files_bytes: int  # outbox database, its WAL and shared-memory file, the journal and its key
    write_bytes_total: int  # /proc/self/io write_bytes since the start of the process
    written_day: int  # write_bytes in the 24 h before this sample
    records_day: int  # readings and pendant events the home produced in those 24 h
    warmup: bool = False  # day 1's sample: its day held the provisioning and first imports, so it is no write figure

    @property
    def bytes_per_record(self) -> float | None:
        """Bytes written per reading or pendant event on this day."""
        return None if self.records_day == 0 else self.written_day / self.records_day


@dataclass(frozen=True, slots=True)
class Tolerances:
    """How much a figure of the last window may exceed the first window's (see :func:`check_trends`)."""

    fds: int = 2
    tasks: int = 3
    threads: int = 1
    rss_ratio: float = 1.10
    rss_slack_kib: int = 4096
    written_ratio: float = 1.25
    written_slack: int = 64 * 1024
    files_ratio: float = 1.5
    files_slack: int = 1024 * 1024
    outbox_rows: int = 0  # rows allowed at the quiet hour (everything acked)


@dataclass(frozen=True, slots=True)
class TrendFinding:
    """One figure that grew where it should not."""

    figure: str
    first: float
    last: float
    limit: float

    def describe(self) -> str:
        """One line."""
        return f"{self.figure}: first window {self.first:g}, last window {self.last:g}, limit {self.limit:g}"


def _window(count: int) -> int:
    return max(1, min(7, count // 3))


def check_trends(samples: Sequence[Sample], tolerances: Tolerances | None = None) -> list[TrendFinding]:
    """What grew where it should not, comparing the first window of samples with the last.

    The window is a week (7 daily samples), or a third of the samples in a shorter run (at least one). Counts that
    must come back to the same value at the quiet hour (file descriptors, asyncio tasks, threads) are compared by
    their maxima with a small absolute slack; the resident set size and the bytes written per day by their means,
    with a ratio and a slack (the home does the same every day, so a week's writes must cost what the first week's
    did); the hub's files by their maxima (the WAL and the database reuse their pages once warm). The outbox must hold
    at most ``tolerances.outbox_rows`` rows at every sample: all records are acked by 03:00.
    """
    tol = tolerances or Tolerances()
    if not samples:
        return [TrendFinding("samples", 0, 0, 1)]
    w = _window(len(samples))
    first, last = samples[:w], samples[-w:]
    findings: list[TrendFinding] = []

    def by_max(name: str, get: Callable[[Sample], float], slack: float, ratio: float = 1.0) -> None:
        a, b = max(map(get, first)), max(map(get, last))
        limit = a * ratio + slack
        if b > limit:
            findings.append(TrendFinding(name, a, b, limit))

    def by_mean(name: str, get: Callable[[Sample], float], ratio: float, slack: float) -> None:
        a, b = sum(map(get, first)) / w, sum(map(get, last)) / w
        limit = a * ratio + slack
        if b > limit:
            findings.append(TrendFinding(name, a, b, limit))

    by_max("fds", lambda s: s.fds, tol.fds)
    by_max("tasks", lambda s: s.tasks, tol.tasks)
    by_max("threads", lambda s: s.threads, tol.threads)
    by_mean("rss_kib", lambda s: s.rss_kib, tol.rss_ratio, tol.rss_slack_kib)
    counted = [s for s in samples if not s.warmup]
    if counted:
        wc = _window(len(counted))
        a = sum(s.written_day for s in counted[:wc]) / wc
        b = sum(s.written_day for s in counted[-wc:]) / wc
        limit = a * tol.written_ratio + tol.written_slack
        if b > limit:
            findings.append(TrendFinding("written_day", a, b, limit))
    by_max("files_bytes", lambda s: s.files_bytes, tol.files_slack, tol.files_ratio)
    worst = max(samples, key=lambda s: s.outbox_rows)
    if worst.outbox_rows > tol.outbox_rows:
        findings.append(TrendFinding(f"outbox_rows (day {worst.day})", 0, worst.outbox_rows, tol.outbox_rows))
    return findings


@dataclass(slots=True)
class SoakReport:
    """The month's figures and verdict."""

    days: int
    seed: int
    broker: str
    platform_on_tmpfs: bool
    measurement: str = "/proc/self/io write_bytes (pages dirtied by this process; platform database on tmpfs)"
    samples: list[Sample] = field(default_factory=list)
    produced: int = 0  # measurements the meters produced (ground truth)
    pendant_events: int = 0
    stored: int = 0  # measurements the platform stored
    lost: int = 0
    outages: int = 0
    restarts: int = 0
    panic_calls: int = 0
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    findings: list[TrendFinding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing grew and nothing was lost."""
        return not self.findings and self.lost == 0

    def per_day(self) -> tuple[float, float, float | None]:
        """(mean bytes written per day, mean records per day, bytes per record) over days 1..N."""
        counted = [s for s in self.samples if not s.warmup]
        days = len(counted)
        written = sum(s.written_day for s in counted)
        records = sum(s.records_day for s in counted)
        return (
            written / days if days else 0.0,
            records / days if days else 0.0,
            written / records if records else None,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the derived figures."""
        written, records, per_record = self.per_day()
        data = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("samples", "findings")
        }
        data["samples"] = [{**dataclasses.asdict(s), "bytes_per_record": s.bytes_per_record} for s in self.samples]
        data["findings"] = [f.describe() for f in self.findings]
        data["written_per_day"] = round(written)
        data["records_per_day"] = round(records, 2)
        data["bytes_per_record"] = None if per_record is None else round(per_record)
        data["ok"] = self.ok
        return data

    def table(self) -> str:
        """A fixed-width table and the verdict."""
        head = f"{'day':>4} {'rss KiB':>9} {'fds':>4} {'tasks':>5} {'thr':>4} {'outbox':>6} {'files B':>9} "
        head += f"{'written/day':>12} {'records':>7} {'B/record':>9}"
        lines = [head]
        for s in self.samples:
            per = "-" if s.bytes_per_record is None else f"{s.bytes_per_record:.0f}"
            lines.append(
                f"{s.day:>4} {s.rss_kib:>9} {s.fds:>4} {s.tasks:>5} {s.threads:>4} {s.outbox_rows:>6} "
                f"{s.files_bytes:>9} {s.written_day:>12} {s.records_day:>7} {per:>9}{' warm-up' if s.warmup else ''}"
            )
        written, records, per_record = self.per_day()
        lines.append(
            f"{self.days} days ({self.outages} outages, {self.restarts} hub restarts, {self.panic_calls} panic tests), "
            f"{self.produced} measurements produced, {self.stored} stored, {self.lost} lost; "
            f"{written / 1024:.1f} KiB written per day, {records:.1f} records per day, "
            f"{'-' if per_record is None else f'{per_record:.0f}'} bytes per record; {self.measurement}"
        )
        lines.append(f"real {self.elapsed_s:.0f} s, cpu {self.cpu_s:.0f} s")
        lines.extend(f"GROWTH {f.describe()}" for f in self.findings)
        lines.append("ok" if self.ok else "FAILED")
        return "\n".join(lines)


def _daily_plan(
    rng: random.Random,
) -> list[tuple[timedelta, DeviceKind, EventKind, dict[str, float | int | str | bool]]]:
    """One ordinary day: every value inside the resident's normal ranges (no alarm is the normal day)."""

    def at(h: int, m: int) -> timedelta:
        return timedelta(hours=h, minutes=m)

    def u(low: float, high: float, digits: int = 0) -> float:
        return round(rng.uniform(low, high), digits)

    bp = DeviceKind.BLOOD_PRESSURE
    glucose = DeviceKind.GLUCOSE
    measure = EventKind.MEASURE
    return [
        (at(7, 0), glucose, measure, {"mg_dl": u(92, 118), "meal": "fasting"}),
        (at(7, 10), DeviceKind.SCALE, measure, {"kg": u(67.6, 68.6, 1)}),
        (at(7, 30), bp, measure, {"systolic": u(118, 132), "diastolic": u(72, 84), "pulse": u(62, 76)}),
        (at(8, 0), DeviceKind.THERMOMETER, measure, {"celsius": u(36.4, 36.9, 1)}),
        (at(9, 0), DeviceKind.OXIMETER, measure, {"spo2": u(96, 98), "pulse": u(64, 76)}),
        (at(10, 0), DeviceKind.PENDANT, EventKind.PRESS, {}),  # the daily pendant test; the caregiver answers
        (at(10, 30), DeviceKind.HEART_RATE, measure, {"bpm": u(64, 82)}),
        (at(12, 45), glucose, measure, {"mg_dl": u(128, 165), "meal": "postprandial"}),
        (at(16, 30), DeviceKind.HEART_RATE, measure, {"bpm": u(64, 82)}),
        (at(18, 30), glucose, measure, {"mg_dl": u(100, 130), "meal": "preprandial"}),
        (at(19, 30), bp, measure, {"systolic": u(118, 132), "diastolic": u(72, 84), "pulse": u(62, 76)}),
        (at(20, 0), DeviceKind.PENDANT, EventKind.CHECKIN, {}),
        (at(21, 0), DeviceKind.OXIMETER, measure, {"spo2": u(96, 98), "pulse": u(64, 76)}),
        (at(22, 0), glucose, measure, {"mg_dl": u(105, 145), "meal": "bedtime"}),
    ]


def soak_scenario(base: Scenario, days: int, seed: int) -> Scenario:
    """``base``'s home (residents and devices) with ``days`` ordinary days (:func:`_daily_plan`) as its timeline,
    from midnight of its date until 04:00 after the last day."""
    rng = random.Random(seed)  # noqa: S311 - reproducible values, not security
    device_of: dict[DeviceKind, str] = {}
    for spec in base.devices:
        device_of.setdefault(spec.kind, spec.id)
    events: list[Event] = []
    for day in range(days):
        for offset, kind, what, values in _daily_plan(rng):
            if kind in device_of:
                events.append(Event(len(events), timedelta(days=day) + offset, device_of[kind], what, values))
    return dataclasses.replace(
        base, start=timedelta(0), end=timedelta(days=days) + _SAMPLE_AT + timedelta(hours=1), timeline=tuple(events)
    )


def _proc_field(path: str, name: str) -> int:
    with open(path, encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == name:
                return int(value.split()[0])
    raise LookupError(f"{path} has no {name}")


def _write_bytes() -> int:
    return _proc_field("/proc/self/io", "write_bytes")


def _tmpfs_dir() -> Path | None:
    shm = Path("/dev/shm")  # noqa: S108 - a private temporary directory is made inside it
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


class _Soak:
    def __init__(self, options: SoakOptions, say: Callable[[str], None]) -> None:
        self.options = options
        self.say = say
        self.gateway: Gateway | None = None
        self._stack = contextlib.AsyncExitStack()
        self._produced: Counter[tuple[str, bytes]] = Counter()
        self._produced_total = 0
        self._pendant_total = 0
        self._last_write = 0
        self._panic_calls = 0

    async def run(self) -> SoakReport:
        options = self.options
        started, cpu = time.monotonic(), time.process_time()
        base = load_scenario(DEFAULT_SCENARIO)
        scenario = soak_scenario(base, options.days, options.seed)
        shm = _tmpfs_dir()
        with (
            tempfile.TemporaryDirectory(prefix="carehub-soak-") as tmp,
            tempfile.TemporaryDirectory(prefix="carehub-soak-platform-", dir=shm) as platform_dir,
        ):
            workdir = options.workdir or Path(tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            (workdir / "broker").mkdir(exist_ok=True)
            broker = _Broker(options.broker, workdir)
            report = SoakReport(options.days, options.seed, broker.name, platform_on_tmpfs=shm is not None)
            if shm is None:
                report.measurement = "/proc/self/io write_bytes (pages dirtied by this process, platform included)"
            config, platform_identity, hub_public = _provision(scenario, workdir, broker.impl.url)
            await self._play(scenario, config, broker, Path(platform_dir), platform_identity, hub_public, report)
        report.elapsed_s = round(time.monotonic() - started, 1)
        report.cpu_s = round(time.process_time() - cpu, 1)
        report.findings = check_trends(report.samples)
        return report

    async def _play(  # noqa: PLR0917 - one call site, each argument named there
        self,
        scenario: Scenario,
        config: GatewayConfig,
        broker: _Broker,
        platform_dir: Path,
        platform_identity: Any,
        hub_public: Any,
        report: SoakReport,
    ) -> None:
        options = self.options
        link = f"local:soak-{os.getpid()}-{int(time.time() * 1000) % 1_000_000}"
        scanner, client = sim_ble.backend_for(link)
        clock = LoopClock(scenario.start_time)
        midnight = scenario.midnight
        self.say(f"broker: {broker.name}; {options.days} days, hub storage in {config.storage_path.parent}")
        async with _broker_changing():
            await broker.impl.start()
        try:
            async with (
                DemoPlatform(
                    platform_dir,
                    broker.impl.host,
                    broker.impl.port,
                    platform_identity,
                    hub_public,
                    shared=isinstance(broker.impl, MosquittoBroker),
                ) as platform,
                Home(scenario, link=link, clock=clock, seed=options.seed) as home,
                asyncio.TaskGroup() as tasks,
            ):
                caregiver = tasks.create_task(platform.caregiver(clock, 120.0, lambda _m: None), name="soak.caregiver")
                day_task = tasks.create_task(home.run(), name="soak.home")

                async def open_hub() -> None:
                    self._stack = contextlib.AsyncExitStack()
                    self.gateway = await self._stack.enter_async_context(
                        open_gateway(
                            config,
                            scanner_backend=scanner,
                            client_backend=client,
                            clock=clock,
                            tick_interval=options.tick_s,
                        )
                    )

                await open_hub()
                try:
                    for day in range(options.days + 1):
                        today = midnight + timedelta(days=day)
                        if day >= 1:
                            await sleep_until(clock, today + _SAMPLE_AT)
                            await self._sample(day, home, report)
                        if day == options.days:
                            break
                        if options.outage_every and day % options.outage_every == options.outage_every - 1:
                            await sleep_until(clock, today + _OUTAGE_AT)
                            async with _broker_changing():
                                await broker.impl.stop()
                            await clock.sleep(options.outage_minutes * 60)
                            async with _broker_changing():
                                await broker.impl.start()
                            report.outages += 1
                            self.say(f"day {day}: broker outage of {options.outage_minutes:g} min")
                        if options.restart_every and day % options.restart_every == options.restart_every - 1:
                            await sleep_until(clock, today + _RESTART_AT)
                            self._count_calls()
                            await self._stack.aclose()
                            self.gateway = None
                            await open_hub()
                            report.restarts += 1
                            self.say(f"day {day}: hub restarted in the same process")
                    self._count_calls()
                    self._take_log(home)
                finally:
                    await self._stack.aclose()
                    self.gateway = None
                day_task.cancel()
                caregiver.cancel()
                stored = Counter(await platform.measurements())
                report.produced = self._produced_total
                report.pendant_events = self._pendant_total
                report.stored = sum(stored.values())
                report.lost = sum(max(0, n - stored.get(key, 0)) for key, n in self._produced.items())
                report.panic_calls = self._panic_calls
        finally:
            await broker.impl.stop()

    def _count_calls(self) -> None:
        if self.gateway is not None:
            self._panic_calls += len(self.gateway.hub.panic_calls())

    def _take_log(self, home: Home) -> int:
        """Move the home's ground truth into a counter (the simulator's log would otherwise grow all month)."""
        addresses = {s.id: s.options.address for s in home.scenario.devices if s.kind is not DeviceKind.PENDANT}
        records = 0
        for produced in home.log:
            address = addresses.get(produced.device)
            if address is None:
                continue
            for raw in (produced.raw, *produced.extra.values()):
                self._produced[(address, raw)] += 1
                self._produced_total += 1
                records += 1
        home.log.clear()
        records += len(home.pendant_events)
        self._pendant_total += len(home.pendant_events)
        home.pendant_events.clear()
        return records

    async def _drain(self, gateway: Gateway) -> None:
        """Let the outbox empty (an outage's backlog, a commit in flight) before the quiet-hour sample."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_DRAIN_LIMIT_S):
                while (await gateway.outbox.stats()).rows:
                    gateway.uplink.acked.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(5.0):
                            await gateway.uplink.acked.wait()

    async def _sample(self, day: int, home: Home, report: SoakReport) -> None:
        gateway = self.gateway
        if gateway is None:
            raise RuntimeError("no hub is running")
        await self._drain(gateway)
        records = self._take_log(home)
        stats = await gateway.outbox.stats()
        gc.collect()
        written = _write_bytes()
        storage = gateway.config.storage_path
        files = [
            storage,
            storage.with_name(storage.name + "-wal"),
            storage.with_name(storage.name + "-shm"),
            storage.with_suffix(".journal"),
            storage.with_suffix(".journal").with_name(storage.with_suffix(".journal").name + ".key"),
        ]
        sample = Sample(
            day=day,
            rss_kib=_proc_field("/proc/self/status", "VmRSS"),
            fds=len(os.listdir("/proc/self/fd")) - 1,  # less the descriptor listdir itself held
            tasks=len(asyncio.all_tasks()),
            threads=threading.active_count(),
            outbox_rows=stats.rows,
            outbox_bytes=stats.total_bytes,
            files_bytes=sum(p.stat().st_size for p in files if p.exists()),
            write_bytes_total=written,
            written_day=written - self._last_write,
            records_day=records,
            warmup=day == 1,
        )
        self._last_write = written
        report.samples.append(sample)
        self.say(
            f"day {day}: rss {sample.rss_kib} KiB, fds {sample.fds}, tasks {sample.tasks}, "
            f"outbox {sample.outbox_rows}, "
            f"written {sample.written_day} B for {sample.records_day} records"
        )


class _SoakLoop(VirtualTimeLoop):
    """The demo's simulated-time loop, with cheaper looks at the other threads and the broker.

    The base class lists ``/proc`` for child processes and opens each thread's ``stat`` file at every idle moment (a
    few hundred thousand a simulated day: the MQTT clients' one-second housekeeping timers and the hub's ticker);
    that was two thirds of a soak's CPU. Here the soak says when its only child, the broker, starts or stops: inside
    :meth:`children_changing` every idle moment looks as the base class does, and on leaving it the child processes'
    threads are listed once. Each watched thread's ``stat`` file stays open and is re-read with one ``pread``. The
    loop therefore holds one descriptor per watched thread: a constant in the soak's descriptor count, closed when
    the thread ends.
    """

    def __init__(self) -> None:
        super().__init__()
        self._child_fds: list[int] = []
        self._thread_fds: dict[int, int] = {}
        self._changing = 0
        self._listed = False  # until the first listing: as the base class

    @contextlib.asynccontextmanager
    async def children_changing(self) -> AsyncIterator[None]:
        """While the broker starts or stops: look for child processes at every idle moment; list them after."""
        self._changing += 1
        try:
            yield
        finally:
            self._changing -= 1
            for fd in self._child_fds:
                os.close(fd)
            self._child_fds = []
            for pid in _children():
                with contextlib.suppress(OSError):
                    for tid in os.listdir(f"/proc/{pid}/task"):
                        with contextlib.suppress(OSError):
                            self._child_fds.append(os.open(f"/proc/{pid}/task/{tid}/stat", os.O_RDONLY))
            self._listed = True

    def others_busy(self) -> bool:
        """As :meth:`VirtualTimeLoop.others_busy`, with the child processes' threads as last listed."""
        if self._changing or not self._listed:
            return super().others_busy()
        main = threading.get_native_id()
        live = {t.native_id for t in threading.enumerate()} - {None, main}
        for gone in self._thread_fds.keys() - live:
            os.close(self._thread_fds.pop(gone))
        for tid in live:
            if tid is None:
                continue
            fd = self._thread_fds.get(tid)
            if fd is None:
                try:
                    fd = self._thread_fds[tid] = os.open(f"/proc/self/task/{tid}/stat", os.O_RDONLY)
                except OSError:
                    continue  # the thread ended meanwhile
            if _fd_state(fd) in _BUSY_STATES:
                return True
        return any(_fd_state(fd) in _BUSY_STATES for fd in self._child_fds)

    def close(self) -> None:
        """Close the watched ``stat`` files, then the loop."""
        for fd in [*self._child_fds, *self._thread_fds.values()]:
            os.close(fd)
        self._child_fds, self._thread_fds = [], {}
        super().close()


def _fd_state(fd: int) -> str | None:
    """The scheduler state letter in an open ``/proc/.../stat`` file, or None once its task is gone."""
    try:
        text = os.pread(fd, 1024, 0).decode("ascii", "replace")
    except OSError:
        return None
    end = text.rfind(")")
    return text[end + 2 : end + 3] if end >= 0 else None


def _broker_changing() -> contextlib.AbstractAsyncContextManager[None]:
    loop = asyncio.get_running_loop()
    if isinstance(loop, _SoakLoop):
        return loop.children_changing()
    return contextlib.nullcontext()


def play_soak(options: SoakOptions, *, say: Callable[[str], None] = lambda _m: None) -> SoakReport:
    """Play the soak on simulated loop time (as fast as the work allows) and return its report."""
    with asyncio.Runner(loop_factory=_SoakLoop) as runner:
        return runner.run(_Soak(options, say).run())


def report_json(report: SoakReport) -> str:
    """One JSON object."""
    return json.dumps(report.as_dict(), ensure_ascii=False)
