"""An ingest worker's Prometheus metrics and health endpoint (issue 15 item 10).

``carehub platform run --metrics HOST:PORT`` serves, next to the worker (the Mosquitto worker and the JetStream worker
alike, :class:`~community.ingest_core.IngestWorkerBase`):

- ``GET /metrics``: the Prometheus text format, read from the worker's own counters (:class:`IngestStats`) at
  scrape time, so nothing is counted twice and a scrape costs nothing between scrapes; a JetStream worker also
  asks the cluster, at scrape time, how far each stream's consumer is behind (``carehub_ingest_stream_pending``,
  ``carehub_ingest_stream_ack_pending``, labelled by stream: the routine and the alarm stream);
- ``GET /healthz``: ``200 {"status": "ok"}`` while the worker is connected to the broker and subscribed, else
  ``503`` with the reason (``connecting``, ``database unavailable`` or ``failed``), for a load balancer, systemd or
  Kubernetes probe.

Metric names follow Prometheus' conventions (``_total`` counters, seconds, a ``reason`` label whose values are the
protocol's rejection reasons, a bounded set). Hubs are not a label: a district has up to 200,000, far too many
series; the worker reports how many hubs it heard from within each of :data:`SEEN_WINDOWS_S` instead.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from community.ingest_core import COMMIT_BUCKETS_S, IngestWorkerBase, StreamLag

__all__ = ["SEEN_WINDOWS_S", "Health", "MetricsAddress", "WorkerCollector", "health_of", "metrics_app", "serve_metrics"]

SEEN_WINDOWS_S: Final = (300, 3600, 86_400)
"""Windows (seconds) for the count of hubs heard from: 5 minutes, an hour, a day."""

_COUNTERS: Final = (
    ("frames", "carehub_ingest_frames", "Uplink frames received."),
    ("envelopes_stored", "carehub_ingest_envelopes_stored", "Envelopes stored for the first time."),
    ("records_stored", "carehub_ingest_records_stored", "Records stored for the first time."),
    ("records_duplicate", "carehub_ingest_records_duplicate", "Records that arrived again (already stored)."),
    ("replays", "carehub_ingest_replays", "Envelopes re-sent by their hub after they were stored."),
    ("acks_sent", "carehub_ingest_acks_sent", "Signed acks published to hubs."),
    ("rejected_in_acks", "carehub_ingest_rejected_in_acks", "Envelopes refused by name in an ack."),
    ("storage_errors", "carehub_ingest_storage_errors", "Frames not acked because the database failed."),
    ("failures", "carehub_ingest_failures", "Unexpected failures the worker restarted after."),
    (
        "redelivered_frames",
        "carehub_ingest_redelivered_frames",
        "Frames JetStream delivered again (not acked within ack_wait); 0 on Mosquitto.",
    ),
    (
        "redelivered_replays",
        "carehub_ingest_redelivered_replays",
        "Envelopes already stored that came in a frame JetStream delivered again.",
    ),
    (
        "duplicate_message_frames",
        "carehub_ingest_duplicate_message_frames",
        "First deliveries of a frame whose bytes an earlier stream message brought this worker (published twice).",
    ),
    (
        "duplicate_message_replays",
        "carehub_ingest_duplicate_message_replays",
        "Envelopes already stored that came in a payload an earlier stream message carried.",
    ),
)


class WorkerCollector(Collector):
    """Reads one worker's counters at scrape time; :attr:`lag` is what the scrape asked the stream for."""

    def __init__(self, worker: IngestWorkerBase, wall_time: Callable[[], float] = time.time) -> None:
        self._worker = worker
        self._wall_time = wall_time
        self.lag: Sequence[StreamLag] = ()

    def collect(self) -> Iterable[Metric]:
        """The worker's metrics now."""
        stats = self._worker.stats
        for attribute, name, documentation in _COUNTERS:
            yield CounterMetricFamily(name, documentation, value=getattr(stats, attribute))
        rejections = CounterMetricFamily(
            "carehub_ingest_rejections", "Envelopes and frames refused, by reason.", labels=["reason"]
        )
        for reason, count in sorted(stats.rejections.items()):
            rejections.add_metric([reason], count)
        yield rejections
        buckets: list[tuple[str, float]] = []
        cumulative = 0
        for bound, count in zip(COMMIT_BUCKETS_S, stats.commit_buckets, strict=True):
            cumulative += count
            buckets.append((repr(bound), cumulative))
        buckets.append(("+Inf", stats.commits))
        yield HistogramMetricFamily(
            "carehub_ingest_commit_seconds",
            "Duration of one frame's storage transaction (fsync included).",
            buckets=buckets,
            sum_value=stats.commit_seconds,
        )
        now = self._wall_time()
        seen = GaugeMetricFamily(
            "carehub_ingest_hubs_seen", "Hubs with an envelope stored or acked within the window.", labels=["window"]
        )
        for window in SEEN_WINDOWS_S:
            count = sum(1 for at in stats.hubs_last_seen.values() if now - at <= window)
            seen.add_metric([f"{window}s"], count)
        yield seen
        pending = GaugeMetricFamily(
            "carehub_ingest_stream_pending",
            "Frames in the stream not yet handed to any worker by its consumer (JetStream num_pending).",
            labels=["stream"],
        )
        ack_pending = GaugeMetricFamily(
            "carehub_ingest_stream_ack_pending",
            "Frames handed to a worker by the stream's consumer and not yet acked (JetStream num_ack_pending).",
            labels=["stream"],
        )
        for lag in self.lag:
            pending.add_metric([lag.stream], lag.pending)
            ack_pending.add_metric([lag.stream], lag.ack_pending)
        yield pending
        yield ack_pending
        yield GaugeMetricFamily(
            "carehub_ingest_connected",
            "1 while the worker is connected to the broker and subscribed.",
            value=1 if self._worker.connected.is_set() else 0,
        )


@dataclass(frozen=True, slots=True)
class Health:
    """A worker's health: whether it can take traffic, and why not."""

    ok: bool
    status: str


def health_of(worker: IngestWorkerBase) -> Health:
    """``ok`` while connected and subscribed; ``failed`` once it gave up; ``database unavailable`` while its last
    batch could not be stored (the frames wait in the broker or stream); else ``connecting``."""
    if worker.failed.is_set():
        return Health(False, "failed")
    if worker.database_down.is_set():
        return Health(False, "database unavailable")
    if worker.connected.is_set():
        return Health(True, "ok")
    return Health(False, "connecting")


def metrics_app(worker: IngestWorkerBase, wall_time: Callable[[], float] = time.time) -> web.Application:
    """The ``/metrics`` and ``/healthz`` endpoints of one worker."""
    registry = CollectorRegistry(auto_describe=False)
    collector = WorkerCollector(worker, wall_time)
    registry.register(collector)

    async def metrics(_request: web.Request) -> web.Response:
        collector.lag = await worker.stream_lag()
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        health = health_of(worker)
        return web.json_response(
            {"status": health.status, "failures": worker.stats.failures}, status=200 if health.ok else 503
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


@dataclass(frozen=True, slots=True)
class MetricsAddress:
    """Where the endpoints listen: ``HOST:PORT`` (port 0: any free port)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> MetricsAddress:
        """``127.0.0.1:9464``, ``[::1]:9464`` or ``:9464`` (all addresses).

        Raises:
            ValueError: not HOST:PORT with a port 0..65535.
        """
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{text!r} is not HOST:PORT (a port 0..65535)")
        return cls(host.strip("[]") or "0.0.0.0", int(port))  # noqa: S104 - ":PORT" asks for every address


@contextlib.asynccontextmanager
async def serve_metrics(worker: IngestWorkerBase, address: MetricsAddress) -> AsyncIterator[int]:
    """Serve the endpoints while the block runs; yields the port listened on."""
    runner = web.AppRunner(metrics_app(worker), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, address.host, address.port)
        await site.start()
        bound = runner.addresses
        yield int(bound[0][1]) if bound else address.port
    finally:
        await runner.cleanup()
