"""An ingest worker's /metrics and /healthz (issue 15 item 10): a real ``carehub platform run --metrics`` process
against real Mosquitto, scraped over HTTP on 127.0.0.1; and the collector's figures from known counters."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import aiomqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_platform_supervision import BOUND, enroll, frame, next_ack, spawn, stop, wait_ingesting, write_platform

from community.ingest import COMMIT_BUCKETS_S, IngestStats, IngestWorker, WorkerSettings
from community.metrics import MetricsAddress, WorkerCollector, health_of
from community.samples import bp_record
from community.storage import SqliteStorage
from community.wire import PlatformCodec
from gateway.wire import HubWire
from protocols.keys import HubIdentity, PlatformIdentity


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_commits_fall_in_their_bucket_and_one_beyond_the_last_only_in_the_total() -> None:
    stats = IngestStats()
    for seconds in (0.0005, 0.003, 0.003, 99.0):
        stats.observe_commit(seconds)
    assert stats.commits == 4
    assert stats.commit_buckets[COMMIT_BUCKETS_S.index(0.001)] == 1
    assert stats.commit_buckets[COMMIT_BUCKETS_S.index(0.005)] == 2
    assert sum(stats.commit_buckets) == 3
    assert stats.commit_seconds == pytest.approx(99.0065)


async def test_the_collector_reports_the_workers_counters(tmp_path) -> None:
    async with SqliteStorage(tmp_path / "p.db") as storage:
        worker = IngestWorker(WorkerSettings("127.0.0.1", 1), storage, PlatformCodec(PlatformIdentity.generate()))
        worker.stats.frames = 7
        worker.stats.rejections = {"bad_signature": 2, "malformed": 1}
        worker.stats.observe_commit(0.002)
        worker.stats.hubs_last_seen = {"hub-a": 1000.0, "hub-b": 1000.0 - 1800, "hub-c": 1000.0 - 7200}
        collector = WorkerCollector(worker, wall_time=lambda: 1000.0)
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value for metric in collector.collect() for s in metric.samples
        }
        assert samples["carehub_ingest_frames_total", ()] == 7
        assert samples["carehub_ingest_rejections_total", (("reason", "bad_signature"),)] == 2
        assert samples["carehub_ingest_commit_seconds_count", ()] == 1
        assert samples["carehub_ingest_commit_seconds_bucket", (("le", "0.0025"),)] == 1
        assert samples["carehub_ingest_commit_seconds_bucket", (("le", "0.001"),)] == 0
        seen = {dict(k[1])["window"]: v for k, v in samples.items() if k[0] == "carehub_ingest_hubs_seen"}
        assert seen == {"300s": 1, "3600s": 2, "86400s": 3}
        assert samples["carehub_ingest_connected", ()] == 0
        assert health_of(worker).status == "connecting"


@pytest.mark.parametrize("bad", ["9464", "host:port", "127.0.0.1:70000", ""])
def test_a_metrics_address_is_host_and_port(bad: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        MetricsAddress.parse(bad)


@pytest.mark.integration
async def test_platform_run_serves_metrics_and_health(tmp_path, mosquitto) -> None:
    platform, hub = PlatformIdentity.generate(), HubIdentity.generate("hub-a")
    cfg = write_platform(tmp_path, mosquitto, platform)
    await enroll(tmp_path / "platform.db", hub)
    proc = await spawn(["platform", "run", "-c", str(cfg), "--metrics", "127.0.0.1:0"])
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(BOUND):
            announced = (await proc.stdout.readline()).decode()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", announced)
        assert match, announced
        base = f"http://127.0.0.1:{match.group(1)}"
        await wait_ingesting(proc)
        wire = HubWire(hub, platform.public)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz") as response:
                assert response.status == 200
                assert (await response.json())["status"] == "ok"
            async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
                await client.subscribe("carehub/v1/hub-a/ack", qos=1)
                records = [bp_record("hub-a", n) for n in range(3)]
                await client.publish("carehub/v1/hub-a/up", frame(wire, 1, records), qos=1)
                assert (await next_ack(client, wire)).stored == (1,)
            # The hub's copy of the ack can arrive before the worker's own publish returned and counted it: read
            # the metrics until the count is in (each read is a round trip to the worker; bounded).
            async with asyncio.timeout(BOUND):
                while True:
                    async with http.get(f"{base}/metrics") as response:
                        assert response.status == 200
                        samples = _samples(await response.text())
                    if samples["carehub_ingest_acks_sent_total", ()] >= 1:
                        break
        assert samples["carehub_ingest_envelopes_stored_total", ()] == 1
        assert samples["carehub_ingest_records_stored_total", ()] == 3
        assert samples["carehub_ingest_acks_sent_total", ()] == 1
        assert samples["carehub_ingest_commit_seconds_count", ()] == 1
        assert samples["carehub_ingest_hubs_seen", (("window", "300s"),)] == 1
        assert samples["carehub_ingest_connected", ()] == 1
    finally:
        await stop(proc)
