"""``carehub bench``: the hub's speed figures, every one measured on this machine in this run.

* ``protocols_readings_per_s``: one core, decode a Blood Pressure Measurement notification (0x2A35), build its
  measurement record, sign and seal it into an envelope (what the hub does per reading, minus the disk);
* ``outbox_rows_per_s``, ``outbox_naive_rows_per_s``, ``group_commit_speedup``: the outbox figures of
  :mod:`gateway.bench_outbox`;
* ``backlog_drain_s``: a week of buffered readings delivered once the broker is back (:func:`backlog_drain_s`);
* ``e2e_readings_per_s``: readings from the hub's intake to the platform's ack through a real Mosquitto
  (:func:`e2e_readings_per_s`; the BLE radio is excluded);
* ``panic_local_p50_ms``, ``panic_local_p99_ms``, ``panic_platform_p50_ms``, ``panic_platform_p99_ms``: a simulated
  pendant's press to the hub's local feedback, and to the platform's ack of the panic alarm
  (:func:`panic_latencies`); ``panic_hub_*`` are the same measured by the hub from its receipt of the frame;
* ``gateway_rss_mb``: resident memory of an idle hub daemon (``carehub-hub``), connected to the broker;
* ``fhir_observations_per_s``, ``fhir_goal_ratio``: the platform's FHIR export, Observations per second on one core
  and that over the 5,000/s goal (:mod:`community.fhir.bench`; alone: ``carehub bench fhir``).

Targets (reported, never asserted): panic local < 5 ms, panic platform < 25 ms. The bench's Mosquitto runs with
``set_tcp_nodelay true`` (see :func:`run_all`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from community.fhir.bench import fhir_figures
from community.ingest import IngestWorker, WorkerSettings
from community.samples import T0 as _DRAIN_T0
from community.samples import bp_measurement, bp_record
from community.storage import SqliteStorage
from community.wire import PlatformCodec
from gateway.app import open_gateway
from gateway.bench_outbox import group_and_naive_rows_per_s
from gateway.ble import Reading
from gateway.config import DeviceConfig, GatewayConfig, parse_config, render_config
from gateway.feedback import RecordingFeedback
from gateway.hub import Hub
from gateway.outbox import Lane, OutboxItem, open_outbox
from gateway.uplink import Uplink, UplinkSettings
from gateway.wire import HubWire
from protocols import gatt
from protocols.envelope import seal
from protocols.keys import (
    HubIdentity,
    PlatformIdentity,
    save_hub_identity,
    save_pendant_key,
    save_platform_identity,
    save_platform_public_keys,
)
from protocols.pendant import PendantEventType
from protocols.record import MeasurementBody, Record, measurement_record_id
from sim.broker import MosquittoBroker

__all__ = [
    "BenchHome",
    "backlog_drain_s",
    "e2e_readings_per_s",
    "format_rows",
    "gateway_rss_mb",
    "panic_latencies",
    "protocols_readings_per_s",
    "run_all",
]

_HUB_ID = "bench-hub"
_RESIDENT = "resident-1"
_BP_UUID = gatt.BloodPressureMeasurement.UUID
_METERS = tuple(f"C0:00:00:00:01:{n:02X}" for n in range(1, 5))
_PENDANT = "C0:00:00:00:00:0A"
_PENDANT_KEY = bytes(range(32))
_BOUND_S = 120.0  # an upper bound for any awaited step, never a sleep
# The reference platform scales out with ingest workers sharing the uplink subscription; two keep up with one hub
# here (one alone is the bottleneck of a backlog drain: opening and verifying each envelope).
_PLATFORM_WORKERS = 2


# -- 1. protocols ----------------------------------------------------------------------------------------------


def protocols_readings_per_s(iterations: int = 3000) -> float:
    """Readings per second on one core: decode 0x2A35 -> measurement record -> signed, sealed envelope."""
    identity = HubIdentity.generate(_HUB_ID)
    platform = PlatformIdentity.generate().public
    raws = [bytes(bp_measurement(n)) for n in range(iterations)]
    received = datetime.now(UTC)
    start = time.perf_counter()
    for seq, raw in enumerate(raws):
        m = gatt.decode(_BP_UUID, raw)
        values = m.as_dict()
        device_time = values.get("timestamp")
        dt_text = device_time if isinstance(device_time, str) else None
        record = Record(
            record_id=measurement_record_id(_METERS[0], _BP_UUID, raw, None, dt_text, received),
            hub_id=_HUB_ID,
            seq=seq,
            hub_time=received,
            body=MeasurementBody(_BP_UUID, raw, values=values, resident_id=_RESIDENT),
            device_id=_METERS[0],
            device_time=dt_text,
        )
        seal(identity, platform.box_key, seq, received, [record.to_cbor()])
    return iterations / (time.perf_counter() - start)


# -- a provisioned hub, platform and broker -------------------------------------------------------------------


@dataclass(slots=True)
class BenchHome:
    """Key files and a parsed config for one resident, a few meters and (optionally) a pendant."""

    config: GatewayConfig
    path: Path
    platform: PlatformIdentity
    hub: HubIdentity


def provision(workdir: Path, broker_url: str, *, link: str | None = None, pendant: bool = False) -> BenchHome:
    """Write keys and ``hub.toml`` into ``workdir`` the way ``sim.demo`` provisions its hub."""
    workdir.mkdir(parents=True, exist_ok=True)
    platform = PlatformIdentity.generate()
    save_platform_public_keys(workdir / "platform.pub", platform.public)
    hub = HubIdentity.generate(_HUB_ID)
    save_hub_identity(workdir / "hub.key", hub)
    devices: list[dict[str, object]] = [
        {"address": address, "kind": "blood_pressure", "resident": _RESIDENT, "name": f"BP-{n}"}
        for n, address in enumerate(_METERS)
    ]
    if pendant:
        save_pendant_key(workdir / "pendant.key", _PENDANT, _PENDANT_KEY)
        devices.append(
            {
                "address": _PENDANT,
                "kind": "pendant",
                "resident": _RESIDENT,
                "name": "Pendant",
                "pendant_key_file": "pendant.key",
            }
        )
    ble: dict[str, object] = {"max_connections": 4}
    if link is not None:
        ble["link"] = link
    data: dict[str, object] = {
        "hub": {"id": _HUB_ID, "key_file": "hub.key"},
        "platform": {"public_key_file": "platform.pub"},
        "broker": {"url": broker_url},
        "storage": {"path": "hub-outbox.sqlite", "max_bytes": "256MB"},
        "ble": ble,
        "residents": [{"id": _RESIDENT, "name": "Bench", "language": "en", "profiles": []}],
        "devices": devices,
    }
    text = render_config(data, header="carehub bench hub")
    path = workdir / "hub.toml"
    path.write_text(text, encoding="utf-8")
    return BenchHome(parse_config(text, path), path, platform, hub)


@contextlib.asynccontextmanager
async def _platform(home: BenchHome, broker: MosquittoBroker, workdir: Path) -> AsyncIterator[IngestWorker]:
    async with SqliteStorage(workdir / "platform.db") as storage:
        await storage.enroll_hub(home.hub.public)
        codec = PlatformCodec(home.platform)
        async with IngestWorker(WorkerSettings(broker.host, broker.port), storage, codec) as worker:
            await worker.connected.wait()
            yield worker


# -- 3. end to end ---------------------------------------------------------------------------------------------


async def _measurements(storage: SqliteStorage) -> int:
    return sum(1 for r in await storage.readings(_HUB_ID) if r.kind == "measurement")


@contextlib.asynccontextmanager
async def _platform_process(
    home: BenchHome, broker: MosquittoBroker, workdir: Path, *, workers: int = 1
) -> AsyncIterator[Path]:
    """The reference platform as ``workers`` ``carehub platform run`` processes sharing the uplink subscription and
    one database (in production it is other machines, so it must not share the hub's core); yields the database,
    enrolled with the bench hub."""
    save_platform_identity(workdir / "platform.key", home.platform)
    database = workdir / "platform.db"
    async with SqliteStorage(database) as storage:
        await storage.enroll_hub(home.hub.public)
    async with contextlib.AsyncExitStack() as stack:
        for n in range(workers):
            config = workdir / f"platform-{n}.toml"
            config.write_text(
                "\n".join(
                    [
                        "[broker]",
                        f'url = "{broker.url}"',
                        f'client_id = "bench-platform-{n}"',
                        "[storage]",
                        'database = "platform.db"',
                        "[keys]",
                        'identity = "platform.key"',
                    ]
                )
                + "\n",
                encoding="utf-8",
            )
            await stack.enter_async_context(_platform_worker(config))
        yield database


@contextlib.asynccontextmanager
async def _platform_worker(config: Path) -> AsyncIterator[None]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from carehub.cli import main; main()",
        *("platform", "run", "--config", str(config)),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
    )
    drain: asyncio.Task[None] | None = None
    try:
        await _expect_line(proc, "ingesting from")
        # The platform prints a line per alarm; unread, a full pipe would stop it mid-run.
        drain = asyncio.create_task(_discard_output(proc), name="bench.platform-output")
        yield
    finally:
        if drain is not None:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
        await _stop_process(proc, signal.SIGINT)


async def _discard_output(proc: asyncio.subprocess.Process) -> None:
    stream = proc.stdout
    assert stream is not None  # noqa: S101  the caller pipes it
    while await stream.read(1 << 16):
        pass


async def _expect_line(proc: asyncio.subprocess.Process, needle: str) -> None:
    """Read ``proc``'s piped output until a line contains ``needle`` (bounded)."""
    stream = proc.stdout if proc.stdout is not None else proc.stderr
    assert stream is not None  # noqa: S101  the caller pipes one of them
    seen: list[str] = []
    async with asyncio.timeout(_BOUND_S):
        while True:
            line = (await stream.readline()).decode(errors="replace")
            if not line:
                raise RuntimeError(f"a bench process exited before {needle!r}:\n" + "".join(seen[-20:]))
            seen.append(line)
            if needle in line:
                return


async def _stop_process(proc: asyncio.subprocess.Process, how: signal.Signals) -> None:
    if proc.returncode is not None:
        return
    proc.send_signal(how)
    try:
        async with asyncio.timeout(10):
            await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def e2e_readings_per_s(
    workdir: Path, broker: MosquittoBroker, *, readings: int = 3000, meters: int = 16
) -> float:
    """Readings per second from ``Hub.store_readings`` to the platform's ack, through a real Mosquitto.

    The real hub stack (:func:`gateway.app.open_gateway`, without BLE) in this process and the reference platform
    in processes of its own (:func:`_platform_process`); ``meters`` concurrent tasks each hand the hub their share
    of distinct Blood Pressure notifications, one reading per call (as a meter's session does). The clock stops
    when every reading has been stored by the hub and acknowledged by the platform (the outbox is empty); the
    platform's database is then checked to hold each reading once. This excludes the BLE radio: its latencies are
    in ``sim/ble/README.md``.
    """
    home = provision(workdir, broker.url)
    devices: list[DeviceConfig] = list(home.config.devices)
    async with (
        _platform_process(home, broker, workdir, workers=_PLATFORM_WORKERS) as database,
        open_gateway(home.config, ble=False, feedback=RecordingFeedback()) as gw,
    ):
        await gw.uplink.connected.wait()
        received = datetime.now(UTC)
        batches = [
            [
                Reading(devices[i % len(devices)], _BP_UUID, bytes(bp_measurement(i)), received)
                for i in range(t, readings, meters)
            ]
            for t in range(meters)
        ]

        async def meter(batch: list[Reading]) -> None:
            for reading in batch:
                await gw.hub.store_readings([reading])

        start = time.perf_counter()
        async with asyncio.timeout(_BOUND_S):
            async with asyncio.TaskGroup() as tg:
                for n, batch in enumerate(batches):
                    tg.create_task(meter(batch), name=f"bench-meter-{n}")
            while True:
                gw.uplink.acked.clear()
                if (await gw.outbox.stats()).rows == 0:
                    break
                await gw.uplink.acked.wait()
        elapsed = time.perf_counter() - start
    async with SqliteStorage(database) as storage:
        stored = await _measurements(storage)  # record ids are unique per hub there: no reading twice
    if stored != readings:
        raise RuntimeError(f"end to end: the platform stored {stored} of {readings} readings")
    return readings / elapsed


async def backlog_drain_s(workdir: Path, broker: MosquittoBroker, *, readings: int = 10_080) -> float:
    """Seconds from the uplink connecting to every buffered reading being acked by the platform.

    ``readings`` real protocol v1 measurement records (a Blood Pressure Measurement value and its decoded values),
    each sealed into its own envelope as the hub does when readings come one at a time (one a minute for a week),
    wait in the hub's outbox while the broker is away; the clock starts when the uplink connects and stops when the
    outbox is empty. The platform runs in processes of its own (:func:`_platform_process`), whose database is then
    checked to hold each reading once.
    """
    home = provision(workdir, broker.url)
    wire = HubWire(home.hub, home.platform.public)
    async with open_outbox(workdir / "drain-outbox.db") as ob:
        seqs = await ob.allocate_seqs(readings)
        items = []
        for seq in seqs:
            record = bp_record(_HUB_ID, seq)
            envelope = wire.seal(seq, [record], _DRAIN_T0)
            items.append(OutboxItem(seq, envelope, Lane.ROUTINE, "measurement", (record.record_id.hex(),), 0.0))
        for start in range(0, readings, 1000):
            await ob.put_many(items[start : start + 1000])
        async with _platform_process(home, broker, workdir, workers=_PLATFORM_WORKERS) as database:
            settings = UplinkSettings(hub_id=_HUB_ID, host=broker.host, port=broker.port, ack_timeout=60.0)
            start_time = time.perf_counter()
            async with Uplink(settings, ob, wire) as up, asyncio.timeout(_BOUND_S):
                while True:
                    up.acked.clear()
                    if (await ob.stats()).rows == 0:
                        break
                    await up.acked.wait()
            elapsed = time.perf_counter() - start_time
    async with SqliteStorage(database) as storage:
        stored = await _measurements(storage)
    if stored != readings:
        raise RuntimeError(f"backlog drain: the platform stored {stored} of {readings} readings")
    return elapsed


# -- 4. panic --------------------------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def _grown(values: list[float], size: int) -> None:
    """Wait until ``values`` has more than ``size`` entries (the hub appends from its ack task)."""
    while len(values) <= size:  # noqa: ASYNC110  the counters have no event; a benchmark polls, a test never does
        await asyncio.sleep(0.0005)


async def _answered(hub: Hub, alarm_id: str) -> None:
    """Wait until the hub has closed the call ``alarm_id`` on the caregiver's answer (it arrives as a down-message)."""
    while any(c.open for c in hub.panic_calls() if c.alarm_id == alarm_id):  # noqa: ASYNC110  as _grown
        await asyncio.sleep(0.0005)


async def panic_latencies(workdir: Path, broker: MosquittoBroker, *, presses: int = 200) -> dict[str, float]:
    """Press -> local feedback and press -> platform ack of the panic call, in milliseconds (p50, p99).

    A simulated pendant (:mod:`sim.devices.pendant`) on an in-process bumble link, the full gateway with BLE and
    the reference platform over Mosquitto, a real-time clock. Each cycle: press, wait for the platform's ack of the
    call, then cancel it and wait for the pendant to be confirmed, so the next press opens a new call. The hub
    measures from its receipt of the frame (``panic_hub_*``); the headline figures start at the press itself, so
    they include the pendant's signing and the indication over the simulated radio.
    """
    import sim.ble  # noqa: PLC0415  the simulated radio is only needed here
    from sim.clock import RealClock  # noqa: PLC0415
    from sim.devices.options import DeviceOptions  # noqa: PLC0415
    from sim.devices.pendant import Pendant  # noqa: PLC0415

    link = f"local:bench-{os.getpid()}-{time.monotonic_ns()}"
    home = provision(workdir, broker.url, link=link, pendant=True)
    sim.ble.configure(link=link)
    scanner, client = sim.ble.backend_for(link)
    pendant = Pendant(
        DeviceOptions(id="pendant-1", address=_PENDANT, name="Pendant", bonding_required=True, key=_PENDANT_KEY),
        RealClock(),
    )
    feedback = RecordingFeedback()
    local: list[float] = []
    platform: list[float] = []
    async with contextlib.AsyncExitStack() as stack:
        worker = await stack.enter_async_context(_platform(home, broker, workdir))
        device = await stack.enter_async_context(sim.ble.open_peripheral_device(link, _PENDANT, "Pendant"))
        await stack.enter_async_context(pendant.attach(device))
        gw = await stack.enter_async_context(
            open_gateway(home.config, feedback=feedback, scanner_backend=scanner, client_backend=client)
        )
        stack.push_async_callback(sim.ble.close_centrals)
        await gw.uplink.connected.wait()
        counters = gw.hub.counters
        for cycle in range(presses + 1):  # the first cycle connects and bonds: a warm-up, not counted
            async with asyncio.timeout(_BOUND_S):
                shown_before = len(feedback.shown)
                n_local, n_platform = len(counters.panic_local_s), len(counters.panic_platform_s)
                pressed_at = time.monotonic()  # the clock RecordingFeedback stamps cues with
                produced = await pendant.press(PendantEventType.PRESS)
                await pendant.wait_confirmed(produced.sequence)
                await _grown(counters.panic_local_s, n_local)
                await _grown(counters.panic_platform_s, n_platform)
                hub_local = counters.panic_local_s[n_local]
                hub_platform = counters.panic_platform_s[n_platform]
                shown_at = feedback.shown[shown_before].at
                hub_received_at = shown_at - hub_local
                if cycle:
                    local.append(shown_at - pressed_at)
                    platform.append(hub_received_at - pressed_at + hub_platform)
                # A caregiver answers on the platform, which closes the call, so the next press opens a new one.
                # (Cancelling from the pendant would not do: a pendant may cancel only a few calls in ten minutes,
                # gateway.panic.PanicPolicy.cancel_limit, and the bench presses hundreds of times.)
                call = next(c for c in gw.hub.panic_calls() if c.open)
                await worker.ack_alarm(_HUB_ID, call.alarm_id, "bench caregiver", datetime.now(UTC))
                await _answered(gw.hub, call.alarm_id)
    hub_local_all = counters.panic_local_s[1:]
    hub_platform_all = counters.panic_platform_s[1:]
    return {
        "panic_local_p50_ms": statistics.median(local) * 1000,
        "panic_local_p99_ms": _percentile(local, 0.99) * 1000,
        "panic_platform_p50_ms": statistics.median(platform) * 1000,
        "panic_platform_p99_ms": _percentile(platform, 0.99) * 1000,
        "panic_hub_local_p99_ms": _percentile(hub_local_all, 0.99) * 1000,
        "panic_hub_platform_p99_ms": _percentile(hub_platform_all, 0.99) * 1000,
    }


# -- 5. memory -------------------------------------------------------------------------------------------------


def _vm_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def gateway_rss_mb(workdir: Path, broker: MosquittoBroker) -> float:
    """VmRSS of the hub daemon as its service runs it (``carehub-hub``, i.e. ``python -m gateway``, with
    ``--no-voice``) on the simulated radio ``local:rss``, once its uplink is connected."""
    home = provision(workdir, broker.url, link="local:rss")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "--config",
        str(home.path),
        "--no-voice",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None  # noqa: S101  piped above
    seen: list[str] = []
    try:
        async with asyncio.timeout(_BOUND_S):
            running = connected = False
            while not (running and connected):
                line = (await proc.stderr.readline()).decode(errors="replace")
                if not line:
                    raise RuntimeError("carehub-hub exited early:\n" + "".join(seen[-20:]))
                seen.append(line)
                running = running or f"hub {_HUB_ID} running" in line
                connected = connected or f"uplink {_HUB_ID} connected" in line
        return _vm_rss_mb(proc.pid)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await proc.communicate()
            except TimeoutError:
                proc.kill()
                await proc.wait()


# -- all -------------------------------------------------------------------------------------------------------


async def run_all(*, quick: bool = False) -> dict[str, float | int | str]:
    """Every figure, as one flat dict (``quick``: smaller counts, for tests; it says so in ``"quick"``)."""
    results: dict[str, float | int | str] = {"quick": quick}
    with tempfile.TemporaryDirectory(prefix="carehub-bench-") as tmp:
        base = Path(tmp)
        results["protocols_readings_per_s"] = round(protocols_readings_per_s(500 if quick else 3000), 1)
        results.update(fhir_figures(quick=quick))
        group, naive = await group_and_naive_rows_per_s(
            base, rounds=1 if quick else 9, rows=1000 if quick else 8000, naive_rows=200 if quick else 800
        )
        results["outbox_rows_per_s"] = round(group, 1)
        results["outbox_naive_rows_per_s"] = round(naive, 1)
        results["group_commit_speedup"] = round(group / naive, 2)
        # Without TCP_NODELAY Mosquitto's Nagle delay adds about 40 ms to every ack round trip (measured: panic
        # platform p50 52 ms -> 13 ms); a hub's broker should set it, so the bench measures with it.
        async with MosquittoBroker(base / "broker", extra_lines=["set_tcp_nodelay true"]) as broker:
            results["backlog_drain_readings"] = drain = 1000 if quick else 10_080
            results["backlog_drain_s"] = round(await backlog_drain_s(base / "drain", broker, readings=drain), 3)
            e2e = await e2e_readings_per_s(base / "e2e", broker, readings=500 if quick else 3000)
            results["e2e_readings_per_s"] = round(e2e, 1)
            panic = await panic_latencies(base / "panic", broker, presses=30 if quick else 200)
            results.update({k: round(v, 3) for k, v in panic.items()})
            results["gateway_rss_mb"] = round(await gateway_rss_mb(base / "rss", broker), 1)
    return results


def format_rows(results: dict[str, float | int | str]) -> Iterator[tuple[str, str]]:
    """(figure, value) pairs for a table, in the order measured."""
    for key, value in results.items():
        yield key, f"{value:,}" if isinstance(value, int | float) else str(value)
