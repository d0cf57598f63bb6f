"""``carehub bench platform``: the community platform's figures, all measured in one run on this machine.

A real broker and real ``carehub platform run`` worker processes (SQLite, or PostgreSQL with ``--postgres``) take a
reconnect storm from :mod:`sim.fleet` (``hubs`` hubs, one MQTT connection each, ``backlog`` envelopes each,
``panics`` panic presses during the storm). The broker is Mosquitto (the one-box install: workers on its shared
subscription), or with ``--nats`` a single nats-server with JetStream whose MQTT listener the hubs connect to while
the workers read its streams (the district's path, :mod:`community.nats_ingest`); ``--workers N`` runs N workers.
Figures (one JSON object with ``--json``):

* ``crypto_open_verify_us``: the bare cost of opening and verifying one envelope with PyNaCl
  (:func:`protocols.envelope.open_envelope`, one core, this run: best of three rounds, before and after the storm);
* ``worker_cpu_per_envelope_us``: the worker processes' CPU time (``/proc/<pid>/stat`` utime + stime, all their
  threads) from the storm's start to the drain, divided by the envelopes the hubs produced;
* ``cpu_ratio_to_crypto``: the two above, divided (issue 15's target: at most 2);
* ``envelopes_per_s``: envelopes stored and acked per second (produced / drain time, the reconnect storm included);
* ``connected_envelopes_per_s``: the same once every hub had connected (backlog envelopes acked from
  ``storm_connected_s`` to the drain, per second; -1: under 5 s): the rate with all the hubs connected;
* ``steady_envelopes_per_s``: the same until 99 % of the backlog was acked (-1: under 5 s), without the drain's
  tail, when a few hubs wait out their resend timers and the platform has little left to do;
* ``peak_envelopes_per_s``: the most envelopes acked as stored in any 5 s of the storm, per second (-1: it drained
  in under 5 s); ``storm_connected_s``: seconds until the last hub first connected;
* ``storm_panic_p50_ms``, ``storm_panic_p99_ms``: panic press to the hub's receipt of the platform's ack;
  ``storm_panic_hub_max_ms``, ``storm_panic_puback_max_ms``, ``storm_panic_platform_max_ms``: the longest part of
  any panic's latency spent in the hub (press to the publish of the frame carrying it), waiting for the broker's
  PUBACK, and after it; the hub's part split into ``storm_panic_seal_max_ms`` (press to the outbox put),
  ``storm_panic_offer_max_ms`` (put to the uplink reading it) and ``storm_panic_dispatch_max_ms`` (that read to the
  publish); ``storm_panic_losses``: panics whose hub lost its session before the ack
  (:class:`sim.fleet_hub.PanicTrace`). The pressing hubs run in a probe process of their own
  (:attr:`sim.fleet.FleetOptions.panic_probe`: a real hub has its own CPU), storming like every other hub;
* ``storm_loop_lag_max_ms``, ``storm_loop_lag_p99_ms``: the bulk fleet processes' event-loop lag over the storm (how
  late a timer due every 50 ms ran; the worst process), ``storm_probe_loop_lag_max_ms`` the probe's, and
  ``storm_panic_loop_lag_max_ms`` the probe's worst during a panic's wait; ``storm_fleet_cpu_busy_max``: the busiest
  fleet process's CPU seconds per second (1.0: a saturated core). A bulk loop seconds late is the load generator's
  limit (thousands of hubs on one core), not a hub's;
* ``storm_reconnects``: MQTT sessions beyond each hub's first; ``storm_connection_failures``: sessions lost or
  connection attempts that failed; ``storm_connection_errors``: the four commonest reasons, with counts;
* ``storm_amplification``: envelopes the hubs handed to MQTT, PUBACKed or not / envelopes produced (1.0: nothing
  sent twice); ``storm_amplification_pubacked``: only those the broker PUBACKed (what ``storm_amplification``
  counted in the README's runs before 12:00 UTC on 2026-12-04; it misses publishes the broker stored on a session
  lost before their PUBACK);
* ``storm_drain_s``, ``stored``, ``lost``, ``duplicated``, ``worker_peak_rss_mb`` (VmHWM) and the run's size;
* the workers' own counters at the drain, summed over the workers (each serves ``--metrics``; scraped once at the
  end): ``worker_frames``, ``worker_replayed_envelopes`` (envelopes received though already stored), and on NATS
  where those came from (issue 15): ``worker_redelivered_frames`` / ``worker_redelivered_replays`` (frames JetStream
  delivered again, not acked within ack_wait, and the replays in them), ``worker_duplicate_message_frames`` /
  ``worker_duplicate_message_replays`` (a payload an earlier stream message brought the same worker: the same
  bytes published twice, by the MQTT layer or by a hub re-sending an identical frame), and
  ``worker_other_replays``, the rest (a new stream message with a new payload: the hub re-sent the envelope in
  another frame, or the first copy went to the other worker); on NATS also
  ``nats_stream_frames``: messages the routine and alarm streams ever stored (their last sequences), to set beside
  ``storm_frames_sent`` (frames the hubs had PUBACKed: a publish whose PUBACK a lost session never brought is stored
  but not counted there) and ``worker_frames``; and at the drain, ``nats_stream_left`` (messages still in the
  streams), ``nats_consumer_pending`` (not yet handed to a worker) and ``nats_consumer_ack_pending`` (handed out,
  not acked); then the run waits (at most :data:`_EMPTY_BOUND_S`) until the streams are empty, every frame the
  hubs sent handled, and reports ``nats_stream_empty_after_s`` (-1: not within the bound) and the worker counters
  again with the suffix ``_final`` (the replays the workers open after the hubs had all their acks), and
  ``nats_ingest_drop_warnings``: the lines the server logged on dropping PUBACKed frames from a full stream ingest
  queue (0: none dropped; the bench's server has the limits a district's config gets, or with
  ``--nats-default-ingest-buffer`` the server's own, 10,000 messages and 128 MB);
* ``machine_cpu_busy`` (the share of the machine's CPU time busy over the storm, all cores), ``machine_cpu_s`` (busy
  CPU seconds) and ``cpu_s_by_process``: the CPU seconds each kind of process used over the storm, most first
  (``platform workers``, ``fleet (load generator)``, ``nats-server``, ``postgres``, ``mosquitto``, anything else by
  name): who had the cores;
* ``enrolled_extra``: hubs enrolled besides the fleet's before the workers start (``--enrolled N``: real keys, in
  chunks, :func:`carehub.bench_ingest.enroll_extra_hubs`), so one storm is measured with 200,000 hubs enrolled as
  with its own (issue 15: CPU per envelope must not depend on how many hubs are enrolled).

Sizes: ``--quick`` 50 hubs x 20 envelopes, 5 panics (seconds, for tests); the default 1,000 hubs x 20, 10 panics
(about a minute on a 2-core machine); issue 15's full storm is ``carehub bench platform --hubs 10000 --backlog 100
--json`` (1,000,000 envelopes; hours with a worker at today's speed). Nothing is asserted: a run that loses or
duplicates a record fails in one line instead of printing figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp

from carehub.bench_ingest import enroll_extra_hubs_at
from community.brokerconf_nats import IngestBuffer
from community.samples import T0, bp_record
from gateway.wire import HubWire
from protocols.envelope import open_envelope
from protocols.keys import HubIdentity, PlatformIdentity, save_platform_identity
from sim.broker import MosquittoBroker
from sim.fleet import FleetError, FleetOptions, FleetReport, run_fleet
from sim.nats_broker import NatsBroker

__all__ = [
    "BenchWorker",
    "PlatformBenchOptions",
    "crypto_open_verify_us",
    "platform_worker",
    "process_cpu_s",
    "run_platform_bench",
    "scrape_worker_counters",
    "stream_frames",
    "write_platform_config",
]

_NATS_BATCH: Final = 16
_START_BOUND_S: Final = 60.0  # the worker must say "ingesting from" within this (a bound, never a sleep)
_EMPTY_BOUND_S: Final = 600.0  # after the drain, the streams are awaited this long to be empty
_EMPTY_POLL_S: Final = 0.5  # how often the streams are asked meanwhile (a poll of the cluster, not a sync sleep)


@dataclass(frozen=True, slots=True)
class PlatformBenchOptions:
    """One ``carehub bench platform`` run (``None``: the size ``quick`` selects)."""

    hubs: int | None = None
    backlog: int | None = None
    panics: int | None = None
    processes: int | None = None
    postgres: str | None = None
    quick: bool = False
    nats: bool = False
    workers: int = 1
    panics_after_connect: bool = False
    enrolled: int = 0
    nats_default_ingest_buffer: bool = False

    def size(self) -> tuple[int, int, int]:
        """(hubs, backlog, panics) of this run."""
        hubs, backlog, panics = (50, 20, 5) if self.quick else (1000, 20, 10)
        return (
            hubs if self.hubs is None else self.hubs,
            backlog if self.backlog is None else self.backlog,
            panics if self.panics is None else self.panics,
        )


def crypto_open_verify_us(envelopes: int = 2000) -> float:
    """Microseconds to open (X25519 sealed box) and verify (Ed25519) one single-record envelope, on one core."""
    platform, hub = PlatformIdentity.generate(), HubIdentity.generate("bench-hub")
    wire = HubWire(hub, platform.public)
    sealed = [wire.seal(n + 1, [bp_record(hub.hub_id, n, seq=n + 1)], T0) for n in range(envelopes)]
    known = {hub.hub_id: hub.verify_key}
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for data in sealed:
            open_envelope(data, platform.box_key, known, expected_hub=hub.hub_id)
        best = min(best, time.perf_counter() - start)
    return best / envelopes * 1e6


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and all its threads so far (``/proc/<pid>/stat``)."""
    return process_cpu_from_stat(Path(f"/proc/{pid}/stat").read_text(encoding="ascii"))


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """Every process's CPU seconds (by pid, with its name) and the machine's busy and total CPU seconds, at one time."""

    processes: dict[int, tuple[str, float]]
    busy_s: float
    total_s: float

    @classmethod
    def take(cls) -> CpuSnapshot:
        """Read ``/proc`` now (processes that end while it reads are skipped)."""
        processes: dict[int, tuple[str, float]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                text = (entry / "stat").read_text(encoding="ascii", errors="replace")
            except OSError:
                continue
            name = text[text.index("(") + 1 : text.rindex(")")]
            if name.startswith("python"):
                name = _python_label(entry)
            processes[int(entry.name)] = (name, process_cpu_from_stat(text))
        # /proc/stat's first line: user nice system idle iowait irq softirq steal ... in clock ticks (proc(5)).
        ticks = [int(x) for x in Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0].split()[1:9]]
        hz = os.sysconf("SC_CLK_TCK")
        idle = ticks[3] + ticks[4]
        return cls(processes, (sum(ticks) - idle) / hz, sum(ticks) / hz)

    def since(self, start: CpuSnapshot, labels: dict[int, str]) -> tuple[tuple[str, float], ...]:
        """CPU seconds each group of processes used between ``start`` and this snapshot, most first: the processes in
        ``labels`` under their label, the others under their name (a process that started meanwhile counts whole,
        one that ended meanwhile not at all)."""
        used: dict[str, float] = {}
        for pid, (name, cpu_s) in self.processes.items():
            before = start.processes.get(pid)
            spent = cpu_s - (before[1] if before is not None else 0.0)  # kernel threads rename themselves
            if spent > 0:
                label = labels.get(pid, name)
                used[label] = used.get(label, 0.0) + spent
        return tuple(sorted(((k, round(v, 1)) for k, v in used.items()), key=lambda kv: -kv[1]))


def _python_label(proc: Path) -> str:
    """A Python process by what it runs: the fleet's hub processes, this bench, or anything else."""
    try:
        argv = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "python (other)"
    if b"sim.fleet_hub" in argv:
        return "fleet (load generator)"
    if b"bench" in argv and b"platform" in argv:
        return "bench"
    return "python (other)"


def process_cpu_from_stat(text: str) -> float:
    """User + system CPU seconds from the text of a ``/proc/<pid>/stat``."""
    # After the command name: state is field 3; utime and stime are fields 14 and 15 (proc(5)).
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise FleetError(f"/proc/{pid}/status has no VmHWM")


def write_platform_config(
    workdir: Path, broker_url: str, *, postgres: str | None = None, client_id: str = "bench-platform"
) -> Path:
    """A platform (keys and ``platform.toml``) in ``workdir`` for ``broker_url`` (``mqtt://``: Mosquitto;
    ``nats://``: a JetStream worker); SQLite unless ``postgres``. A second call with another ``client_id`` adds a
    worker's config (``platform-<client_id>.toml``) sharing the keys and the database."""
    workdir.mkdir(parents=True, exist_ok=True)
    key = workdir / "platform.key"
    if not key.exists():
        save_platform_identity(key, PlatformIdentity.generate())
    storage = 'database = "platform.db"' if postgres is None else f'url = "{postgres}"'
    config = workdir / ("platform.toml" if client_id == "bench-platform" else f"platform-{client_id}.toml")
    # A JetStream worker fetches 16 routine frames at a time (up to 1,024 envelopes in one commit) rather than its
    # default 64: a batch is opened without yielding to the alarm lane, and 64 frames of 64 envelopes (4,096 opens
    # at 150-300 us each here) would hold a panic for about a second.
    broker = (
        f'[broker]\nclient_id = "{client_id}"\n[nats]\nservers = ["{broker_url}"]\nbatch = {_NATS_BATCH}\n'
        if broker_url.startswith("nats://")
        else f'[broker]\nurl = "{broker_url}"\nclient_id = "{client_id}"\n'
    )
    config.write_text(f'{broker}[storage]\n{storage}\n[keys]\nidentity = "platform.key"\n', encoding="utf-8")
    return config


@dataclass(frozen=True, slots=True)
class BenchWorker:
    """A running worker process; ``metrics_url``: its ``/metrics`` when started with ``metrics``."""

    proc: asyncio.subprocess.Process
    metrics_url: str | None

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid


_METRICS_LINE: Final = re.compile(r"metrics on (http://\S+/metrics)")


@contextlib.asynccontextmanager
async def platform_worker(config: Path, *, metrics: bool = False) -> AsyncIterator[BenchWorker]:
    """A real ``carehub platform run`` process on ``config``, once it is ingesting; stopped with SIGINT on exit;
    with ``metrics`` it serves ``/metrics`` on a free local port."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from carehub.cli import main; main()",
        *("platform", "run", "--config", str(config)),
        *(("--metrics", "127.0.0.1:0") if metrics else ()),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
    )
    assert proc.stdout is not None  # noqa: S101  piped above
    seen: list[str] = []
    drain: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(_START_BOUND_S):
            while "ingesting from" not in (seen[-1] if seen else ""):
                line = (await proc.stdout.readline()).decode(errors="replace")
                if not line:
                    raise FleetError("carehub platform run exited: " + " | ".join(s.strip() for s in seen[-3:]))
                seen.append(line)
        # It prints a line per alarm; unread, a full pipe would stop it mid-run.
        drain = asyncio.create_task(_discard(proc.stdout), name="bench-platform-output")
        urls = [m.group(1) for line in seen if (m := _METRICS_LINE.search(line))]
        if metrics and not urls:
            raise FleetError("carehub platform run did not say where /metrics is: " + " | ".join(seen[-3:]))
        yield BenchWorker(proc, urls[0] if urls else None)
    finally:
        if drain is not None:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                async with asyncio.timeout(10):
                    await proc.communicate()
            except TimeoutError:
                proc.kill()
                await proc.wait()


_WORKER_COUNTERS: Final = (
    ("worker_frames", "carehub_ingest_frames_total"),
    ("worker_replayed_envelopes", "carehub_ingest_replays_total"),
    ("worker_redelivered_frames", "carehub_ingest_redelivered_frames_total"),
    ("worker_redelivered_replays", "carehub_ingest_redelivered_replays_total"),
    ("worker_duplicate_message_frames", "carehub_ingest_duplicate_message_frames_total"),
    ("worker_duplicate_message_replays", "carehub_ingest_duplicate_message_replays_total"),
)


async def scrape_worker_counters(urls: list[str]) -> dict[str, int]:
    """The workers' counters (:data:`_WORKER_COUNTERS`), summed, from one scrape of each ``/metrics``; plus
    ``worker_other_replays``: replays neither redelivered nor in a duplicate stream message."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    totals = dict.fromkeys((key for key, _ in _WORKER_COUNTERS), 0)
    by_name = {name: key for key, name in _WORKER_COUNTERS}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for url in urls:
            async with http.get(url) as response:
                response.raise_for_status()
                text = await response.text()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name in by_name and not sample.labels:
                        totals[by_name[sample.name]] += int(sample.value)
    totals["worker_other_replays"] = (
        totals["worker_replayed_envelopes"]
        - totals["worker_redelivered_replays"]
        - totals["worker_duplicate_message_replays"]
    )
    return totals


async def stream_frames(url: str) -> dict[str, int]:
    """The routine and alarm streams now, summed: messages ever stored (last sequences), still stored, and their
    consumers' pending and ack-pending counts."""
    import nats  # noqa: PLC0415 - only on a NATS run

    from community.nats_config import ALARM_STREAM, UP_STREAM, NatsSettings  # noqa: PLC0415

    settings = NatsSettings(servers=(url,))
    figures = dict.fromkeys(
        ("nats_stream_frames", "nats_stream_left", "nats_consumer_pending", "nats_consumer_ack_pending"), 0
    )
    nc = await nats.connect(url, connect_timeout=5)
    try:
        js = nc.jetstream(timeout=10)
        for name, durable in ((UP_STREAM, settings.durable), (ALARM_STREAM, settings.alarm_durable)):
            state = (await js.stream_info(name)).state
            figures["nats_stream_frames"] += state.last_seq
            figures["nats_stream_left"] += state.messages
            info = await js.consumer_info(name, durable)
            figures["nats_consumer_pending"] += info.num_pending or 0
            figures["nats_consumer_ack_pending"] += info.num_ack_pending or 0
    finally:
        await nc.close()
    return figures


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(1 << 16):
        pass


def _raise_fd_limit() -> None:
    """One connection per hub: Mosquitto (started from here) inherits the raised limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass(frozen=True, slots=True)
class _Broker:
    """The broker a run uses: the workers' URL, the hubs' MQTT URL when it differs, its name, and the NATS server
    (``None``: Mosquitto)."""

    worker_url: str
    hub_url: str | None
    name: str
    nats: NatsBroker | None = None


@contextlib.asynccontextmanager
async def _broker(options: PlatformBenchOptions, base: Path) -> AsyncIterator[_Broker]:
    if options.nats:
        district = None if options.nats_default_ingest_buffer else IngestBuffer.for_hubs(options.size()[0])
        async with NatsBroker(base / "nats", ingest_buffer=district) as nats:
            yield _Broker(nats.url, nats.mqtt_url, f"nats-server {nats.version}", nats)
    else:
        async with MosquittoBroker(base / "broker", extra_lines=["set_tcp_nodelay true"]) as broker:
            yield _Broker(broker.url, None, "mosquitto")


async def run_platform_bench(options: PlatformBenchOptions) -> dict[str, float | int | str]:
    """Every platform figure, as one flat dict.

    Raises:
        FleetError: the storm could not run, or the platform lost or duplicated a record.
        BrokerError: the broker would not start.
    """
    hubs, backlog, panics = options.size()
    crypto_us = crypto_open_verify_us(500 if options.quick else 2000)
    _raise_fd_limit()
    cpu: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="carehub-bench-platform-") as tmp:
        base = Path(tmp)
        async with _broker(options, base) as broker, contextlib.AsyncExitStack() as stack:
            worker_url, hub_url = broker.worker_url, broker.hub_url
            configs = [
                write_platform_config(
                    base / "platform",
                    worker_url,
                    postgres=options.postgres,
                    client_id="bench-platform" if n == 0 else f"bench-platform-{n}",
                )
                for n in range(options.workers)
            ]
            if options.enrolled:
                await enroll_extra_hubs_at(configs[0], options.enrolled)
            workers = [await stack.enter_async_context(platform_worker(c, metrics=True)) for c in configs]
            pids = [w.pid for w in workers]
            fleet = FleetOptions(
                config=configs[0],
                hubs=hubs,
                backlog=backlog,
                panics=panics,
                panic_from=1.0 if options.quick else 2.0,
                panic_to=3.0 if options.quick else 6.0,
                panics_after_connect=options.panics_after_connect,
                broker=hub_url,
                processes=options.processes,
                timeout_s=3600.0,
            )

            snapshots: list[CpuSnapshot] = []

            def started() -> None:
                cpu["before"] = sum(process_cpu_s(pid) for pid in pids)
                snapshots.append(CpuSnapshot.take())

            report = await run_fleet(fleet, on_go=started)
            cpu["after"] = sum(process_cpu_s(pid) for pid in pids)
            snapshots.append(CpuSnapshot.take())
            machine = _machine_figures(
                snapshots[0], snapshots[1], dict.fromkeys(pids, "platform workers"), report.fleet_cpu_s
            )
            peak_mb = max(_peak_rss_mb(pid) for pid in pids)
            counters: dict[str, float] = {
                **await scrape_worker_counters([w.metrics_url for w in workers if w.metrics_url is not None])
            }
            if options.nats:
                counters.update(await stream_frames(worker_url))
                started_wait = time.monotonic()
                empty_after = -1.0
                while time.monotonic() - started_wait < _EMPTY_BOUND_S:
                    if (await stream_frames(worker_url))["nats_stream_left"] == 0:
                        empty_after = round(time.monotonic() - started_wait, 1)
                        break
                    await asyncio.sleep(_EMPTY_POLL_S)
                counters["nats_stream_empty_after_s"] = empty_after
                assert broker.nats is not None  # noqa: S101  options.nats
                counters["nats_ingest_drop_warnings"] = broker.nats.ingest_drop_warnings
                final = await scrape_worker_counters([w.metrics_url for w in workers if w.metrics_url is not None])
                counters.update({f"{key}_final": value for key, value in final.items()})
    # Measured again after the storm; the lower of the two is the bare cost least disturbed by other work.
    crypto_us = min(crypto_us, crypto_open_verify_us(500 if options.quick else 2000))
    figures = _figures(options, report, crypto_us, cpu["after"] - cpu["before"], peak_mb)
    return {**figures, **counters, **machine, "broker": broker.name}


def _machine_figures(
    start: CpuSnapshot, end: CpuSnapshot, labels: dict[int, str], fleet_cpu_s: float
) -> dict[str, float | str]:
    """The machine's busy share over the storm and the CPU seconds each kind of process used (who had the cores; the
    fleet's processes have ended by then and report their own)."""
    span = end.total_s - start.total_s
    by_process = sorted((*end.since(start, labels), ("fleet (load generator)", fleet_cpu_s)), key=lambda kv: -kv[1])
    return {
        "machine_cpu_busy": round((end.busy_s - start.busy_s) / span, 3) if span > 0 else 0.0,
        "machine_cpu_s": round(end.busy_s - start.busy_s, 1),
        "cpu_s_by_process": "; ".join(f"{label} {seconds:g}" for label, seconds in by_process[:8]),
    }


def _or_minus(value: float | None) -> float:
    return -1.0 if value is None else value


def _figures(
    options: PlatformBenchOptions, report: FleetReport, crypto_us: float, worker_cpu_s: float, peak_mb: float
) -> dict[str, float | int | str]:
    if not report.ok:
        raise FleetError(
            f"the platform lost {report.lost}, duplicated {report.duplicated} and invented {report.unexpected}"
            f" of {report.records} records (lost: {', '.join(report.lost_examples) or '-'})"
        )
    if report.panic_p99_ms is None or report.panic_p50_ms is None:
        raise FleetError("the storm needs at least one panic (--panics)")
    per_envelope_us = worker_cpu_s / report.envelopes * 1e6
    return {
        "quick": options.quick,
        "engine": "sqlite" if options.postgres is None else "postgresql",
        "broker": "nats" if options.nats else "mosquitto",
        "workers": options.workers,
        "hubs": report.hubs,
        "enrolled_extra": options.enrolled,
        "backlog": report.backlog,
        "panics": report.panics,
        "fleet_processes": report.processes,
        "envelopes": report.envelopes,
        "stored": report.stored,
        "lost": report.lost,
        "duplicated": report.duplicated,
        "crypto_open_verify_us": round(crypto_us, 1),
        "worker_cpu_per_envelope_us": round(per_envelope_us, 1),
        "cpu_ratio_to_crypto": round(per_envelope_us / crypto_us, 2),
        "envelopes_per_s": report.envelopes_per_s,
        "connected_envelopes_per_s": _or_minus(report.connected_envelopes_per_s),
        "steady_envelopes_per_s": _or_minus(report.steady_envelopes_per_s),
        "storm_drain_s": report.drain_s,
        "storm_connected_s": report.connected_s,
        "storm_panics_unconnected": report.panics_unconnected,
        "storm_panics_after_connect": options.panics_after_connect,
        "storm_panic_hub_max_ms": _or_minus(report.panic_hub_max_ms),
        "storm_panic_puback_max_ms": _or_minus(report.panic_puback_max_ms),
        "storm_panic_platform_max_ms": _or_minus(report.panic_platform_max_ms),
        "storm_panic_seal_max_ms": _or_minus(report.panic_seal_max_ms),
        "storm_panic_offer_max_ms": _or_minus(report.panic_offer_max_ms),
        "storm_panic_dispatch_max_ms": _or_minus(report.panic_dispatch_max_ms),
        "storm_panic_loop_lag_max_ms": _or_minus(report.panic_loop_lag_max_ms),
        "storm_panic_losses": report.panic_losses,
        "storm_loop_lag_max_ms": report.loop_lag_max_ms,
        "storm_loop_lag_p99_ms": report.loop_lag_p99_ms,
        "storm_probe_loop_lag_max_ms": _or_minus(report.probe_loop_lag_max_ms),
        "storm_fleet_cpu_busy_max": max(report.fleet_cpu_busy, default=0.0),
        "storm_reconnects": report.reconnects,
        "storm_connection_failures": report.connection_failures,
        "storm_connection_errors": "; ".join(f"{kind} x{n}" for kind, n in report.connection_errors[:4]),
        "peak_envelopes_per_s": -1.0 if report.peak_envelopes_per_s is None else report.peak_envelopes_per_s,
        "storm_panic_p50_ms": report.panic_p50_ms,
        "storm_panic_p99_ms": report.panic_p99_ms,
        "storm_amplification": report.amplification,
        "storm_amplification_pubacked": report.amplification_pubacked,
        "storm_frames_sent": report.frames_sent,
        "worker_peak_rss_mb": round(peak_mb, 1),
    }
