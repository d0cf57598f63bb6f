"""Outbox and uplink benchmarks for ``carehub bench --json``.

* ``outbox_rows_per_s``: rows per second committed (fsynced) with group commit and 64 concurrent putters;
* ``outbox_naive_rows_per_s``: the same machine and run, one commit per row (both are medians of alternating
  rounds: :func:`group_and_naive_rows_per_s`);
* ``backlog_drain_s``: seconds to deliver 10,080 buffered readings (a week at one per minute) through a real
  Mosquitto to the reference platform, acked and removed from the outbox, once the broker is back.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from gateway.outbox import Lane, Outbox, OutboxItem, open_outbox
from gateway.uplink import Uplink, UplinkSettings
from protocols.keys import HubIdentity, PlatformIdentity
from sim.broker import MosquittoBroker, mosquitto_available
from sim.platform.ingest import IngestWorker, WorkerSettings
from sim.platform.samples import T0, bp_record
from sim.platform.storage import SqliteStorage
from sim.platform.wire import HubWire, PlatformCodec

__all__ = ["backlog_drain_s", "group_and_naive_rows_per_s", "outbox_rows_per_s", "run_benchmarks"]

_ENVELOPE = bytes(range(256)) * 2  # about the size of a sealed measurement envelope


def _item(seq: int) -> OutboxItem:
    return OutboxItem(seq, _ENVELOPE, Lane.ROUTINE, "measurement", (f"bench:{seq}",), 0.0)


async def _put_rate(path: Path, rows: int, putters: int, *, group_commit: bool) -> float:
    items = iter([_item(seq) for seq in range(rows)])  # built before the clock starts: the outbox is measured
    async with open_outbox(path, group_commit=group_commit) as ob:

        async def putter() -> None:
            for item in items:
                await ob.put(item)

        start = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for n in range(putters):
                tg.create_task(putter(), name=f"bench-putter-{n}")
        return rows / (time.perf_counter() - start)


async def outbox_rows_per_s(workdir: Path, *, rows: int = 4000, putters: int = 64, group_commit: bool = True) -> float:
    """Rows per second through ``await outbox.put`` with ``putters`` concurrent callers."""
    name = "group.db" if group_commit else "naive.db"
    return await _put_rate(workdir / name, rows, putters, group_commit=group_commit)


async def group_and_naive_rows_per_s(
    workdir: Path, *, rounds: int = 5, rows: int = 8000, naive_rows: int = 800, putters: int = 64
) -> tuple[float, float]:
    """Median rows per second with group commit and with one commit per row, measured in alternating rounds.

    Alternating puts both modes under the same disk conditions (a VM's fsync time drifts from second to second),
    and the median of several rounds keeps one disturbed round from deciding the figure.
    """
    group: list[float] = []
    naive: list[float] = []
    for n in range(rounds):
        group.append(await _put_rate(workdir / f"group-{n}.db", rows, putters, group_commit=True))
        naive.append(await _put_rate(workdir / f"naive-{n}.db", naive_rows, putters, group_commit=False))
    return statistics.median(group), statistics.median(naive)


async def _empty(ob: Outbox) -> bool:
    return (await ob.stats()).rows == 0


async def backlog_drain_s(workdir: Path, *, readings: int = 10_080) -> float:
    """Seconds from the uplink connecting to every buffered reading being acked by the platform.

    Each reading is a real protocol v1 measurement record (a Blood Pressure Measurement value and its decoded
    values) sealed into its own envelope, as the hub does.
    """
    platform = PlatformIdentity.generate()
    hub = HubIdentity.generate("bench-hub")
    wire = HubWire(hub, platform.public)
    async with open_outbox(workdir / "drain-outbox.db") as ob:
        seqs = await ob.allocate_seqs(readings)
        records = [bp_record(hub.hub_id, seq) for seq in seqs]
        items = [
            OutboxItem(seq, wire.seal(seq, [rec], T0), Lane.ROUTINE, "measurement", (rec.record_id.hex(),), 0.0)
            for seq, rec in zip(seqs, records, strict=True)
        ]
        for start in range(0, readings, 1000):
            await ob.put_many(items[start : start + 1000])
        async with (
            MosquittoBroker(workdir / "broker") as broker,
            SqliteStorage(workdir / "drain-platform.db") as storage,
        ):
            await storage.enroll_hub(hub.public)
            codec = PlatformCodec(platform)
            async with IngestWorker(WorkerSettings(broker.host, broker.port), storage, codec) as worker:
                await worker.connected.wait()
                settings = UplinkSettings(hub_id="bench-hub", host=broker.host, port=broker.port, ack_timeout=60.0)
                start_time = time.perf_counter()
                async with Uplink(settings, ob, wire) as up, asyncio.timeout(600):
                    while True:
                        up.acked.clear()
                        if await _empty(ob):
                            break
                        await up.acked.wait()
                elapsed = time.perf_counter() - start_time
            stored = len(await storage.readings("bench-hub"))
            if stored != readings:
                raise RuntimeError(f"backlog drain stored {stored} of {readings} readings")
    return elapsed


async def run_benchmarks(workdir: Path | None = None) -> dict[str, float]:
    """All three figures as a dict (``backlog_drain_s`` omitted when mosquitto is not installed)."""
    with tempfile.TemporaryDirectory(prefix="carehub-bench-") as tmp:
        base = workdir or Path(tmp)
        results = {
            "outbox_rows_per_s": round(await outbox_rows_per_s(base), 1),
            "outbox_naive_rows_per_s": round(await outbox_rows_per_s(base, rows=400, group_commit=False), 1),
        }
        if mosquitto_available():
            results["backlog_drain_s"] = round(await backlog_drain_s(base), 3)
        return results


if __name__ == "__main__":
    import json
    import sys

    sys.stdout.write(json.dumps(asyncio.run(run_benchmarks())) + "\n")
