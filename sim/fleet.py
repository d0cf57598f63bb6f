"""``carehub sim fleet``: a district of protocol-level hubs storming a platform, and what the platform made of it.

N hubs (no radio) each seal real envelopes with :mod:`protocols` into a real outbox and deliver them with the hub's
own :class:`gateway.uplink.Uplink` (its window, resend backoff and reconnect jitter: ``docs/protocol.md`` §6.1), one
MQTT connection per hub, spread over K worker processes (:mod:`sim.fleet_hub`) so no one process holds 10,000
connections. Every hub starts with ``backlog`` envelopes in its outbox and all connect at the same moment (a broker
restart's reconnect storm); ``panics`` panic presses go into hubs' priority lanes at spread times during it.

The hubs are enrolled in the platform's database first (its ``platform.toml``; SQLite or PostgreSQL). When every
outbox is empty, :class:`FleetReport` compares what the hubs produced with the platform's stored readings: stored,
lost, duplicated; the panic press -> hub-received-ack latency; frames and envelopes published against envelopes
produced (the resend amplification); and the drain time. Every figure is measured, or the run fails in one line.

Where a panic's latency is measured: the hubs that press panics run in a probe process of their own
(:attr:`FleetOptions.panic_probe`), storming with their backlogs like the rest, because a bulk process runs thousands
of hubs on one event loop and on a 2-core machine beside the broker and the platform that loop ran seconds late (a
real hub has a CPU of its own). Each process reports its loop lag (:attr:`FleetReport.loop_lag_max_ms` for the bulk,
:attr:`FleetReport.probe_loop_lag_max_ms` for the probe) so the generator's own saturation is in every report, and
each panic's trace (:class:`sim.fleet_hub.PanicTrace`) says where its time went.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import nacl.signing

from community.config import PlatformConfig, PlatformConfigError, load_platform_config
from community.storage import Enrolment, StorageError
from community.storage_open import open_storage
from protocols.keys import HubIdentity
from sim.fleet_hub import HubPlan, PanicTrace, ProcessPlan, ProcessResult

__all__ = ["FleetError", "FleetOptions", "FleetReport", "peak_rate", "percentile", "run_fleet"]

_REPO: Final = Path(__file__).resolve().parents[1]
_GO_MARGIN_S: Final = 0.3  # seconds between the go line and the storm, so every process starts together
_ENROL_CHUNK: Final = 2000
_PEAK_WINDOW_S: Final = 5
_STEADY_SHARE: Final = 0.99  # the steady rate runs from the last hub's connection until this share was acked
_HUBS_PER_PROCESS: Final = 5000  # one process ran 10,000 hubs at about 65 % of a core (README)


class FleetError(RuntimeError):
    """The fleet could not run or its report would be incomplete; the message is one line."""


@dataclass(frozen=True, slots=True)
class FleetOptions:
    """One fleet run.

    Attributes:
        config: the platform's ``platform.toml`` (its database receives the enrolments and is read for the report).
        hubs: hubs in the fleet.
        backlog: envelopes in each hub's outbox when it connects.
        panics: panic presses during the storm, spread over hubs and over ``panic_from`` .. ``panic_to``.
        panic_from: seconds after the storm starts that the first panic is pressed.
        panic_to: seconds after the storm starts that the last panic is pressed.
        panics_after_connect: count the panic times from each pressing hub's first connection instead (a panic
            during the drain rather than while the broker is still taking the reconnect storm's sessions).
        panic_probe: run the hubs that press panics in a process of their own (one per broker node), beside the
            bulk processes that run every other hub. A real hub has a CPU of its own; a fleet process runs
            thousands of hubs on one event loop, and in a 10,000-hub storm that loop ran seconds late (README
            "Platform at scale"), so a panic measured there measured the load generator. The pressing hubs still
            storm with their backlogs like every other hub: the load is the same, only where it is measured moves.
        broker: ``mqtt://host:port``, or several: the MQTT listeners of a broker cluster's nodes, which the hubs are
            spread over round-robin (hub n on node n mod N; issue 15 item 3). Default: the platform config's broker.
        processes: worker processes for the bulk of the hubs (default: one per 5,000 hubs; with several nodes, a
            multiple of their number, :meth:`processes_for`); the probe processes come on top.
        timeout_s: the longest a run may take to drain before it fails.
        workdir: where the outboxes go (default: a temporary directory, on /dev/shm when there is one).
    """

    config: Path
    hubs: int = 20
    backlog: int = 10
    panics: int = 2
    panic_from: float = 1.0
    panic_to: float = 3.0
    panics_after_connect: bool = False
    panic_probe: bool = True
    broker: str | tuple[str, ...] | None = None
    processes: int | None = None
    timeout_s: float = 600.0
    workdir: Path | None = None

    def __post_init__(self) -> None:
        if self.hubs < 1 or self.backlog < 0 or self.panics < 0:
            raise ValueError("--hubs must be at least 1, --backlog and --panics at least 0")
        if not 0 <= self.panic_from <= self.panic_to:
            raise ValueError("panic times need 0 <= --panic-from <= --panic-to")
        if self.processes is not None and not 1 <= self.processes <= self.hubs:
            raise ValueError(f"--processes must be between 1 and the number of hubs ({self.hubs})")
        if self.timeout_s <= 0:
            raise ValueError("--timeout must be positive")

    @property
    def process_count(self) -> int:
        """Worker processes the hubs are spread over."""
        return self.processes or max(1, math.ceil(self.hubs / _HUBS_PER_PROCESS))

    @property
    def brokers(self) -> tuple[str, ...]:
        """The broker URLs given, in order (none: the platform config's broker)."""
        if self.broker is None:
            return ()
        return (self.broker,) if isinstance(self.broker, str) else tuple(self.broker)

    def processes_for(self, nodes: int) -> int:
        """Worker processes over ``nodes`` broker nodes. Each process connects its hubs to one node (process i to node
        i mod N) and takes hub n when n mod K = i, so K is rounded up to a multiple of N (at most one process per hub):
        hub n is then on node n mod N."""
        k = self.process_count
        if nodes > 1:
            k = min(self.hubs, math.ceil(k / nodes) * nodes)
        return k


@dataclass(frozen=True, slots=True)
class FleetReport:
    """What a fleet run measured (every field measured in that run).

    Attributes:
        hubs, processes, backlog, panics: the run's size.
        envelopes: envelopes the hubs produced (backlog and panics); records: the records in them.
        stored: of those records, how many the platform stored; lost: produced, not stored; duplicated: stored
            more than once; unexpected: stored for the fleet's hubs but never produced.
        refused: envelopes the platform refused for good.
        frames_sent, envelopes_sent: what the hubs published and the broker PUBACKed, first sends and resends.
        envelopes_published: envelopes the hubs handed to MQTT, PUBACKed or not (a publish whose session was lost
            before its PUBACK may have been stored by the broker all the same, and is sent again).
        amplification: envelopes_published / envelopes (1.0: nothing sent twice).
        amplification_pubacked: envelopes_sent / envelopes (what the figure was before publishes without a PUBACK
            were counted).
        resends: envelopes released for a resend; connects, connection_failures: the hubs' MQTT sessions.
        panic_p50_ms, panic_p99_ms, panic_max_ms: press to the hub's receipt of the platform's ack (None: no panic).
        drain_s: the storm's start to the moment the last hub's outbox was first empty (its backlog, and the panics
            pressed by then, acked); envelopes_per_s: backlog envelopes (hubs x backlog) / drain_s.
        connected_s: the storm's start to the moment the last hub first connected (the reconnect storm itself).
        connected_envelopes_per_s: backlog envelopes acked from ``connected_s`` to ``drain_s``, per second: the rate
            with every hub connected (None: that span was under 5 s).
        fleet_cpu_s: CPU seconds the fleet's processes used over the storm, all of them.
        steady_envelopes_per_s: the same until 99 % of the backlog was acked, without the drain's tail (the last
            hubs' resends after their ack timeouts, when the platform has little left to do; None: under 5 s).
        panics_unconnected: panics pressed before their hub had connected (they wait for the broker too).
        panic_hub_max_ms, panic_puback_max_ms, panic_platform_max_ms: the longest part of any panic's latency spent
            in the hub (press to the publish of the frame carrying it), in the broker's PUBACK, and after it (stream,
            worker, commit, the ack's way back); see :class:`sim.fleet_hub.PanicTrace`.
        panic_seal_max_ms, panic_offer_max_ms, panic_dispatch_max_ms: the hub's part split: press to the outbox
            put (seal), put to the sender reading it (offer), and that read to the publish (dispatch).
        panic_losses: panics whose hub lost its session between the press and the ack.
        panic_loop_lag_max_ms: the worst event-loop lag of a fleet process during any panic's wait.
        loop_lag_max_ms, loop_lag_p99_ms: the worst of the bulk fleet processes' event-loop lag over the storm
            (how late a timer due every 50 ms ran: a loop seconds late delays every hub it runs, so its hubs' reconnect
            and resend timing is the load generator's as well as the broker's).
        loop_lag_series_ms: the worst bulk process's loop lag in each second of the storm.
        probe_processes: processes that ran only the pressing hubs (:attr:`FleetOptions.panic_probe`).
        probe_loop_lag_max_ms, probe_loop_lag_p99_ms: the same for the probe processes (``None``: none ran); the
            panics' latency is measured there.
        fleet_cpu_busy: each fleet process's CPU seconds per second of the storm (1.0: a saturated core), bulk
            processes first.
        reconnects: sessions beyond each hub's first (connects - hubs).
        connection_errors: ``(kind, count)`` of what failed the hubs' connection attempts (``connect: ...``) or
            ended their sessions (``lost: ...``), most frequent first.
        panic_traces: every panic's :class:`sim.fleet_hub.PanicTrace`, slowest first.
        peak_envelopes_per_s: the most envelopes acked as stored in any 5 s of the storm, per second (sampled every
            second by each fleet process and read at the times the samples were really taken; None when the storm
            drained in under 5 s).
        lost_examples: up to five lost records as ``hub record_id``, to look for in the platform's logs.
        hubs_per_node: ``(HOST:PORT, hubs)`` for each broker node, in the order given.
    """

    hubs: int
    processes: int
    backlog: int
    panics: int
    envelopes: int
    records: int
    stored: int
    lost: int
    duplicated: int
    unexpected: int
    refused: int
    frames_sent: int
    envelopes_sent: int
    amplification: float
    resends: int
    connects: int
    connection_failures: int
    panic_p50_ms: float | None
    panic_p99_ms: float | None
    panic_max_ms: float | None
    drain_s: float
    envelopes_per_s: float
    connected_s: float = 0.0
    peak_envelopes_per_s: float | None = None
    panics_unconnected: int = 0
    panic_hub_max_ms: float | None = None
    panic_puback_max_ms: float | None = None
    panic_platform_max_ms: float | None = None
    lost_examples: tuple[str, ...] = ()
    hubs_per_node: tuple[tuple[str, int], ...] = ()
    panic_seal_max_ms: float | None = None
    panic_offer_max_ms: float | None = None
    panic_dispatch_max_ms: float | None = None
    panic_losses: int = 0
    panic_loop_lag_max_ms: float | None = None
    loop_lag_max_ms: float = 0.0
    loop_lag_p99_ms: float = 0.0
    fleet_cpu_busy: tuple[float, ...] = ()
    reconnects: int = 0
    panic_traces: tuple[PanicTrace, ...] = ()
    probe_processes: int = 0
    probe_loop_lag_max_ms: float | None = None
    probe_loop_lag_p99_ms: float | None = None
    loop_lag_series_ms: tuple[float, ...] = ()
    connection_errors: tuple[tuple[str, int], ...] = ()
    envelopes_published: int = 0
    amplification_pubacked: float = 0.0
    connected_envelopes_per_s: float | None = None
    steady_envelopes_per_s: float | None = None
    fleet_cpu_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Every record stored exactly once, nothing else stored, every panic acked."""
        return self.lost == 0 and self.duplicated == 0 and self.unexpected == 0

    def to_json(self) -> str:
        """The report as one JSON object."""
        return json.dumps(dataclasses.asdict(self))

    def lines(self) -> Iterator[str]:
        """The report as ``figure: value`` lines."""
        for key, value in dataclasses.asdict(self).items():
            yield f"{key}: {'-' if value is None else value}"


def peak_rate(
    series: Sequence[Sequence[int]], window: int, times: Sequence[Sequence[float]] | None = None
) -> float | None:
    """The largest increase over ``window`` consecutive samples of the summed cumulative ``series`` (one sample a
    second, each process's own), per sample; ``None`` when the longest series is shorter than the window.

    With ``times`` (when each sample was really taken, seconds after the start), each series is first read on a
    one-second grid, interpolated between the samples around each second: a process whose loop ran late took its
    samples late and bunched, and counted as one a second they overstated the peak.
    """
    if times is not None:
        series = [_on_grid(s, t) for s, t in zip(series, times, strict=True)]
    length = max((len(s) for s in series), default=0)
    if length <= window:
        return None
    total = [sum(s[min(k, len(s) - 1)] if s else 0 for s in series) for k in range(length)]
    return round(max(total[k + window] - total[k] for k in range(length - window)) / window, 1)


def acked_at(grids: Sequence[Sequence[int]], at_s: float) -> float:
    """The summed cumulative ``grids`` (values at 1, 2, 3... s; 0 at the start) at ``at_s``, interpolated."""

    def value(grid: Sequence[int], k: int) -> int:
        return 0 if k <= 0 or not grid else grid[min(k, len(grid)) - 1]

    below = math.floor(at_s)
    frac = at_s - below
    return sum(value(g, below) + (value(g, below + 1) - value(g, below)) * frac for g in grids)


def rate_after(
    series: Sequence[Sequence[int]], times: Sequence[Sequence[float]], start_s: float, end_s: float, end_total: int
) -> float | None:
    """Per second from ``start_s`` to ``end_s``: ``end_total`` (what was acked by ``end_s``) less the summed
    cumulative ``series`` read at ``start_s`` (each on the grid of its real sample times, interpolated between the
    seconds around ``start_s``); ``None`` for a span under :data:`_PEAK_WINDOW_S` seconds, too short to say."""
    if end_s - start_s < _PEAK_WINDOW_S:
        return None
    grids = [_on_grid(s, t) for s, t in zip(series, times, strict=True)]
    return round((end_total - acked_at(grids, start_s)) / (end_s - start_s), 1)


def steady_rate(
    series: Sequence[Sequence[int]], times: Sequence[Sequence[float]], start_s: float, total: int, share: float
) -> float | None:
    """Per second from ``start_s`` until ``share`` of ``total`` was acked (the summed series first reaching it, read
    on each series' real sample times): the rate while there is work queued for the platform, without the tail of
    a drain, when only the last hubs' resends are left. ``None``: not reached, or in under :data:`_PEAK_WINDOW_S` s."""
    grids = [_on_grid(s, t) for s, t in zip(series, times, strict=True)]
    length = max((len(g) for g in grids), default=0)
    goal = share * total
    for k in range(math.ceil(start_s), length + 1):
        now = acked_at(grids, k)
        if now >= goal:
            before = acked_at(grids, k - 1)
            reached = k - 1 + ((goal - before) / (now - before) if now > before else 1.0)
            if reached - start_s < _PEAK_WINDOW_S:
                return None
            return round((goal - acked_at(grids, start_s)) / (reached - start_s), 1)
    return None


def _on_grid(samples: Sequence[int], taken: Sequence[float]) -> list[int]:
    """``samples`` (cumulative, taken at ``taken`` seconds after the start, 0 at the start) read at 1, 2, 3... s,
    interpolated linearly between the samples around each second (samples taken at the same time: the last)."""
    if not samples or len(taken) != len(samples):
        return list(samples)
    points: list[tuple[float, int]] = [(0.0, 0)]
    for t, value in zip(taken, samples, strict=True):
        if t <= points[-1][0]:
            points[-1] = (points[-1][0], max(points[-1][1], value))
        else:
            points.append((t, value))
    grid: list[int] = []
    n = 0
    for k in range(1, math.ceil(points[-1][0]) + 1):
        while n + 1 < len(points) and points[n + 1][0] <= k:
            n += 1
        (t0, v0), following = points[n], points[n + 1] if n + 1 < len(points) else None
        if following is None:
            grid.append(v0)
        else:
            t1, v1 = following
            grid.append(round(v0 + (v1 - v0) * (k - t0) / (t1 - t0)))
    return grid


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _brokers(options: FleetOptions, cfg: PlatformConfig) -> tuple[tuple[str, int], ...]:
    """The broker nodes as ``(host, port)``, in the order given (none given: the platform config's)."""
    if not options.brokers:
        return ((cfg.host, cfg.port),)
    nodes: list[tuple[str, int]] = []
    for text in options.brokers:
        url = urlsplit(text)
        try:
            port = url.port or 1883
        except ValueError:
            port = -1
        if url.scheme != "mqtt" or not url.hostname or not 0 < port < 65536:
            raise FleetError(f"--broker {text!r} must look like mqtt://host:port")
        if (url.hostname, port) in nodes:
            raise FleetError(f"--broker {text!r} is given twice: give each node once")
        nodes.append((url.hostname, port))
    return tuple(nodes)


def _plans(
    options: FleetOptions, nodes: Sequence[tuple[str, int]], cfg: PlatformConfig, workdir: Path
) -> list[ProcessPlan]:
    try:
        public = cfg.identity().public
    except PlatformConfigError as exc:
        raise FleetError(str(exc)) from exc
    token = secrets.token_hex(3)
    panics: dict[int, list[float]] = collections.defaultdict(list)
    for i in range(options.panics):
        share = i / (options.panics - 1) if options.panics > 1 else 0.0
        panics[(i * options.hubs) // options.panics].append(
            options.panic_from + (options.panic_to - options.panic_from) * share
        )
    hubs = [
        HubPlan(f"fleet-{token}-{n:06d}", secrets.token_hex(32), options.backlog, tuple(panics.get(n, ())))
        for n in range(options.hubs)
    ]
    k = options.processes_for(len(nodes))
    probe = options.panic_probe and options.panics > 0
    groups: list[tuple[tuple[str, int], list[HubPlan], bool]] = []
    for i in range(k):
        bulk = [h for h in hubs[i::k] if not (probe and h.panics)]
        if bulk:
            groups.append((nodes[i % len(nodes)], bulk, False))
    if probe:  # one probe process per node with pressing hubs: hub n stays on node n mod N
        for j, node in enumerate(nodes):
            pressing = [h for n, h in enumerate(hubs) if h.panics and n % len(nodes) == j]
            if pressing:
                groups.append((node, pressing, True))
    return [
        ProcessPlan(
            index=i,
            host=host,
            port=port,
            workdir=str(workdir),
            platform_verify=bytes(public.verify_key).hex(),
            platform_box=bytes(public.box_key).hex(),
            timeout_s=options.timeout_s,
            hubs=tuple(group),
            panics_after_connect=options.panics_after_connect,
            probe=is_probe,
        )
        for i, ((host, port), group, is_probe) in enumerate(groups)
    ]


async def _enrol(cfg: PlatformConfig, plans: list[ProcessPlan]) -> None:
    enrolments = [
        Enrolment(HubIdentity(h.hub_id, nacl.signing.SigningKey(bytes.fromhex(h.seed))).public, ("resident-1",))
        for p in plans
        for h in p.hubs
    ]
    async with open_storage(cfg) as storage:
        for start in range(0, len(enrolments), _ENROL_CHUNK):
            await storage.enroll_hubs(enrolments[start : start + _ENROL_CHUNK])


class _Worker:
    """One :mod:`sim.fleet_hub` process: its plan on stdin, JSON lines on stdout, stderr kept for errors."""

    def __init__(self, proc: asyncio.subprocess.Process, index: int) -> None:
        self.proc = proc
        self.index = index
        self.stderr: collections.deque[str] = collections.deque(maxlen=5)
        self._drain = asyncio.create_task(self._read_stderr(), name=f"fleet-stderr:{index}")

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None  # noqa: S101  piped by _workers
        async for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace").rstrip())

    async def message(self) -> dict[str, object]:
        """The next JSON line; an ``error`` line or an early exit is a :class:`FleetError`."""
        assert self.proc.stdout is not None  # noqa: S101  piped by _workers
        line = await self.proc.stdout.readline()
        if not line:
            await self.proc.wait()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
            last = self.stderr[-1] if self.stderr else "no output"
            raise FleetError(f"fleet process {self.index} exited with {self.proc.returncode}: {last}")
        data = json.loads(line)
        if not isinstance(data, dict):
            raise FleetError(f"fleet process {self.index} printed {line[:80]!r}")
        if "error" in data:
            raise FleetError(str(data["error"]))
        return data

    async def send(self, text: str) -> None:
        """Write one line to the process's stdin."""
        assert self.proc.stdin is not None  # noqa: S101  piped by _workers
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()

    async def stop(self) -> None:
        """Kill the process if it still runs, and reap it."""
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        self._drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._drain


@contextlib.asynccontextmanager
async def _workers(plans: list[ProcessPlan]) -> AsyncIterator[list[_Worker]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(_REPO), os.environ.get("PYTHONPATH"))))}
    workers: list[_Worker] = []
    try:
        for plan in plans:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "sim.fleet_hub",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                limit=1 << 26,
            )
            workers.append(_Worker(proc, plan.index))
            await workers[-1].send(plan.to_json())
        yield workers
    finally:
        await asyncio.gather(*(w.stop() for w in workers))


@contextlib.contextmanager
def _workdir(options: FleetOptions) -> Iterator[Path]:
    if options.workdir is not None:
        options.workdir.mkdir(parents=True, exist_ok=True)
        yield options.workdir
        return
    shm = Path("/dev/shm")  # noqa: S108  the outboxes' fsyncs are the hubs' cost, not the platform's
    # /dev/shm is memory: used only with room to spare (an outbox takes ~20 KB here; 1 MiB per hub is the margin).
    roomy = shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > options.hubs * 2**20
    base = str(shm) if roomy else None
    with tempfile.TemporaryDirectory(prefix="carehub-fleet-", dir=base) as tmp:
        yield Path(tmp)


def _produced(results: list[ProcessResult]) -> collections.Counter[tuple[str, str]]:
    produced: collections.Counter[tuple[str, str]] = collections.Counter()
    for result in results:
        for line in Path(result.produced_file).read_text(encoding="utf-8").splitlines():
            hub, _, rid = line.partition(" ")
            produced[hub, rid] += 1
    return produced


async def _stored(cfg: PlatformConfig, hubs: set[str] | None) -> collections.Counter[tuple[str, str]]:
    async with open_storage(cfg) as storage:
        readings = await storage.readings()
    return collections.Counter((r.hub, r.record_id) for r in readings if hubs is None or r.hub in hubs)


async def run_fleet(options: FleetOptions, *, on_go: Callable[[], None] | None = None) -> FleetReport:
    """Enrol, prepare, storm, drain and compare (``on_go``: called just before the storm starts).

    Raises:
        FleetError: the config, broker, database or a worker process failed, or the fleet did not drain in time.
    """
    try:
        cfg = load_platform_config(options.config)
    except PlatformConfigError as exc:
        raise FleetError(str(exc)) from exc
    nodes = _brokers(options, cfg)
    with _workdir(options) as workdir:
        plans = _plans(options, nodes, cfg, workdir)
        try:
            await _enrol(cfg, plans)
        except (StorageError, OSError) as exc:
            raise FleetError(f"cannot enrol the fleet in the platform's database: {exc}") from exc
        async with _workers(plans) as workers:
            for worker in workers:
                await worker.message()  # {"ready": true}: its outboxes hold their backlogs
            if on_go is not None:
                on_go()
            go = time.time() + _GO_MARGIN_S
            for worker in workers:
                await worker.send(f"go {go!r}")
            try:
                results = [ProcessResult.from_json(await w.message()) for w in workers]
            except ValueError as exc:
                raise FleetError(str(exc)) from exc
        produced = _produced(results)
    try:
        stored = await _stored(cfg, {h.hub_id for p in plans for h in p.hubs})
    except (StorageError, OSError) as exc:
        raise FleetError(f"cannot read the platform's readings: {exc}") from exc
    return _report(options, results, produced, stored, _hubs_per_node(plans))


def _hubs_per_node(plans: Sequence[ProcessPlan]) -> tuple[tuple[str, int], ...]:
    """``(HOST:PORT, hubs)`` per broker node, in the order of the processes that use them."""
    count: dict[str, int] = {}
    for plan in plans:
        node = f"[{plan.host}]:{plan.port}" if ":" in plan.host else f"{plan.host}:{plan.port}"
        count[node] = count.get(node, 0) + len(plan.hubs)
    return tuple(count.items())


def _report(
    options: FleetOptions,
    results: list[ProcessResult],
    produced: collections.Counter[tuple[str, str]],
    stored: collections.Counter[tuple[str, str]],
    hubs_per_node: tuple[tuple[str, int], ...] = (),
) -> FleetReport:
    latencies = [x for r in results for x in r.panic_latencies_ms]
    if len(latencies) != options.panics:
        raise FleetError(f"{len(latencies)} of {options.panics} panics were acked")
    envelopes = sum(r.envelopes for r in results)
    sent = sum(r.envelopes_sent for r in results)
    published = sum(r.envelopes_published for r in results)
    drain = max(r.drain_s for r in results)
    connected = max(r.connected_s for r in results)

    def ms(q: float) -> float | None:
        return round(percentile(latencies, q), 3) if latencies else None

    traces = sorted((t for r in results for t in r.panic_traces), key=lambda t: -t.acked_ms)
    bulk = [r for r in results if not r.probe]
    errors: collections.Counter[str] = collections.Counter()
    for r in results:
        errors.update(dict(r.connection_errors))
    probes = [r for r in results if r.probe]

    def part(start: Callable[[PanicTrace], float], end: Callable[[PanicTrace], float]) -> float | None:
        """The longest ``end - start`` of the panics where both steps were seen."""
        spans = [end(t) - start(t) for t in traces if start(t) >= 0 and end(t) >= 0]
        return round(max(spans), 3) if spans else None

    return FleetReport(
        hubs=options.hubs,
        processes=len(results),
        backlog=options.backlog,
        panics=options.panics,
        envelopes=envelopes,
        records=sum(produced.values()),
        stored=sum(1 for key in produced if stored[key] > 0),
        lost=sum(1 for key in produced if stored[key] == 0),
        duplicated=sum(n - 1 for n in stored.values() if n > 1) + sum(n - 1 for n in produced.values() if n > 1),
        unexpected=sum(1 for key in stored if key not in produced),
        refused=sum(r.refused for r in results),
        frames_sent=sum(r.frames_sent for r in results),
        envelopes_sent=sent,
        amplification=round(published / envelopes, 4) if envelopes else 0.0,
        resends=sum(r.resends for r in results),
        connects=sum(r.connects for r in results),
        connection_failures=sum(r.connection_failures for r in results),
        panic_p50_ms=ms(50),
        panic_p99_ms=ms(99),
        panic_max_ms=ms(100),
        drain_s=round(drain, 3),
        envelopes_per_s=round(options.hubs * options.backlog / drain, 1) if drain > 0 else 0.0,
        connected_s=round(connected, 3),
        steady_envelopes_per_s=steady_rate(
            [r.acked_series for r in results],
            [r.acked_times for r in results],
            connected,
            options.hubs * options.backlog,
            _STEADY_SHARE,
        ),
        connected_envelopes_per_s=rate_after(
            [r.acked_series for r in results],
            [r.acked_times for r in results],
            connected,
            drain,
            options.hubs * options.backlog,
        ),
        peak_envelopes_per_s=peak_rate(
            [r.acked_series for r in results], _PEAK_WINDOW_S, [r.acked_times for r in results]
        ),
        panics_unconnected=sum(r.panics_unconnected for r in results),
        panic_hub_max_ms=part(lambda t: 0.0, lambda t: t.publish_ms),
        panic_puback_max_ms=part(lambda t: t.publish_ms, lambda t: t.puback_ms),
        panic_platform_max_ms=part(lambda t: t.puback_ms, lambda t: t.acked_ms),
        lost_examples=tuple(f"{hub} {rid}" for hub, rid in produced if stored[hub, rid] == 0)[:5],
        hubs_per_node=hubs_per_node,
        panic_seal_max_ms=part(lambda t: 0.0, lambda t: t.put_ms),
        panic_offer_max_ms=part(lambda t: t.put_ms, lambda t: t.offered_ms),
        panic_dispatch_max_ms=part(lambda t: t.offered_ms, lambda t: t.publish_ms),
        panic_losses=sum(1 for t in traces if t.losses),
        panic_loop_lag_max_ms=max((t.loop_lag_max_ms for t in traces), default=None),
        loop_lag_max_ms=max((r.loop_lag_max_ms for r in bulk), default=0.0),
        loop_lag_p99_ms=max((r.loop_lag_p99_ms for r in bulk), default=0.0),
        fleet_cpu_s=round(sum(r.cpu_s for r in results), 1),
        fleet_cpu_busy=tuple(round(r.cpu_s / r.run_s, 3) if r.run_s > 0 else 0.0 for r in (*bulk, *probes)),
        reconnects=sum(r.connects for r in results) - options.hubs,
        panic_traces=tuple(traces),
        probe_processes=len(probes),
        probe_loop_lag_max_ms=max((r.loop_lag_max_ms for r in probes), default=None),
        probe_loop_lag_p99_ms=max((r.loop_lag_p99_ms for r in probes), default=None),
        loop_lag_series_ms=tuple(
            max(r.loop_lag_series_ms[k] if k < len(r.loop_lag_series_ms) else 0.0 for r in bulk)
            for k in range(max((len(r.loop_lag_series_ms) for r in bulk), default=0))
        ),
        connection_errors=tuple(sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))),
        envelopes_published=published,
        amplification_pubacked=round(sent / envelopes, 4) if envelopes else 0.0,
    )
