"""``python -m carehub.bench_ingest``: the ingest core's CPU per envelope without a broker, repeatable (issue 15).

``carehub bench platform`` measures the worker processes end to end, broker client, idle fetching and all, on a
machine shared with the load generator. This harness measures the part the platform's code decides: a real
:class:`community.ingest_core.IngestCore` over a real storage engine (SQLite in a temporary directory, or
PostgreSQL with ``--postgres URL``) handling pre-sealed uplink frames (one single-record envelope per sample
reading, as ``sim.fleet`` seals them) in batches of ``--frames-per-batch`` frames (1: the Mosquitto worker; 16: the
JetStream worker as the bench configures it), the acks signed as the workers sign them, on the event loop the workers
run on (uvloop, :func:`runtime.aio.run`). It prints:

* ``crypto_open_verify_us``: :func:`protocols.envelope.open_envelope` alone on the same envelopes (best of three);
* ``core_cpu_per_envelope_us``: this process's CPU time (all threads: SQLite's included, PostgreSQL's server not)
  for handling every frame and signing every ack, divided by the envelopes; ``wall_per_envelope_us`` likewise;
* ``cpu_ratio_to_crypto``: the two divided;
* ``crypto_interleaved_us`` and ``cpu_ratio_to_interleaved_crypto``: the bare cost measured again (best of three)
  on each slice of ten batches' envelopes right before the slice is handled, summed, and the ratio to it. This VM's
  speed drifts by tens of percent within a minute (other tenants), so a bare cost measured once before the run can
  be far from the speed the run had; slices measured next to their handling follow the drift.

``--enrolled N`` enrols N more hubs (real keys, in chunks) before the run, so the same run can be compared with 10
and with 200,000 hubs enrolled. ``--profile FILE`` writes a cProfile of the handling to ``FILE`` (``.prof``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from community.config import load_platform_config
from community.ingest_core import IngestCore, IngestStats, UplinkFrame
from community.samples import T0, bp_record
from community.storage import Enrolment, SqliteStorage, Storage
from community.storage_open import open_storage
from community.wire import PlatformCodec
from protocols.envelope import open_envelope, seal
from protocols.keys import HubIdentity, HubPublicKey, PlatformIdentity
from protocols.record import Record
from protocols.topics import encode_uplink, up_topic
from runtime import aio

__all__ = ["IngestBenchOptions", "enroll_extra_hubs", "enroll_extra_hubs_at", "main", "run_ingest_bench"]

_ENROL_CHUNK = 5_000
# Batches handled between two measurements of the bare crypto cost (cpu_ratio_to_interleaved_crypto).
_SLICE_BATCHES = 10


@dataclass(frozen=True, slots=True)
class IngestBenchOptions:
    """One run: ``hubs`` hubs with ``backlog`` envelopes each, ``frame`` envelopes per frame."""

    hubs: int = 200
    backlog: int = 20
    frame: int = 20
    frames_per_batch: int = 1
    enrolled: int = 0
    postgres: str | None = None
    profile: Path | None = None


async def enroll_extra_hubs(storage: Storage, count: int, *, prefix: str = "extra") -> None:
    """Enrol ``count`` hubs nobody runs (fresh Ed25519 keys, ``<prefix>-<n>``), ``_ENROL_CHUNK`` per transaction."""
    for start in range(0, count, _ENROL_CHUNK):
        chunk = [
            Enrolment(HubIdentity.generate(f"{prefix}-{n}").public, ("resident-1",))
            for n in range(start, min(count, start + _ENROL_CHUNK))
        ]
        await storage.enroll_hubs(chunk)


async def enroll_extra_hubs_at(config: Path, count: int) -> None:
    """:func:`enroll_extra_hubs` into the database of the platform whose ``platform.toml`` is ``config``."""
    async with open_storage(load_platform_config(config)) as storage:
        await enroll_extra_hubs(storage, count)


def _frames(
    platform: PlatformIdentity, hubs: Sequence[HubIdentity], backlog: int, per_frame: int
) -> tuple[list[UplinkFrame], list[tuple[str, bytes]]]:
    frames: list[UplinkFrame] = []
    envelopes: list[tuple[str, bytes]] = []
    for hub in hubs:
        sealed: list[bytes] = []
        for n in range(backlog):
            record: Record = bp_record(hub.hub_id, n, seq=n + 1)
            sealed.append(seal(hub, platform.public.box_key, n + 1, T0, [record.to_cbor()]))
        envelopes.extend((hub.hub_id, e) for e in sealed)
        topic = up_topic(hub.hub_id)
        chunks = (sealed[i : i + per_frame] for i in range(0, backlog, per_frame))
        frames.extend(UplinkFrame(topic, encode_uplink(chunk)) for chunk in chunks)
    return frames, envelopes


def _crypto_us(
    platform: PlatformIdentity, hubs: Sequence[HubIdentity], envelopes: Sequence[tuple[str, bytes]]
) -> float:
    return _best_open_s(platform, hubs, envelopes) / len(envelopes) * 1e6


def _best_open_s(
    platform: PlatformIdentity, hubs: Sequence[HubIdentity], envelopes: Sequence[tuple[str, bytes]]
) -> float:
    """CPU seconds to open and verify every one of ``envelopes`` (hub, bytes), the best of three passes."""
    known = {h.hub_id: h.verify_key for h in hubs}
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for hub, data in envelopes:
            open_envelope(data, platform.box_key, known, expected_hub=hub)
        best = min(best, time.process_time() - start)
    return best


def _slice_crypto_s(
    platform: PlatformIdentity, hubs: Sequence[HubIdentity], wire: PlatformCodec, frames: Sequence[UplinkFrame]
) -> float:
    """The bare open+verify CPU time of the envelopes of ``frames`` (best of three), measured right before they are
    handled: the machine's speed at that moment, for :data:`_SLICE_BATCHES` batches at a time."""
    envelopes = [(hub, e) for f in frames if (hub := wire.hub_of_uplink(f.topic)) for e in wire.split_frame(f.payload)]
    return _best_open_s(platform, hubs, envelopes)


@contextlib.asynccontextmanager
async def _storage(options: IngestBenchOptions, tmp: Path) -> AsyncIterator[Storage]:
    if options.postgres is None:
        async with SqliteStorage(tmp / "platform.db") as sqlite:
            yield sqlite
    else:
        from community.storage_pg import PostgresStorage  # noqa: PLC0415 - psycopg only when asked for

        async with PostgresStorage(options.postgres) as pg:
            yield pg


async def run_ingest_bench(options: IngestBenchOptions) -> dict[str, float | int | str]:
    """Seal, enrol, handle every frame once; the figures as one flat dict."""
    platform = PlatformIdentity.generate()
    hubs = [HubIdentity.generate(f"bench-{n}") for n in range(options.hubs)]
    frames, envelopes = _frames(platform, hubs, options.backlog, options.frame)
    crypto_us = _crypto_us(platform, hubs, envelopes)
    wire = PlatformCodec(platform)
    with tempfile.TemporaryDirectory(prefix="carehub-bench-ingest-") as tmp:
        async with _storage(options, Path(tmp)) as storage:
            await enroll_extra_hubs(storage, options.enrolled)
            await storage.enroll_hubs([Enrolment(HubPublicKey(h.hub_id, h.verify_key), ("resident-1",)) for h in hubs])
            core = IngestCore(storage, wire, IngestStats(), asyncio.Queue(maxsize=1024))
            profiler = cProfile.Profile() if options.profile is not None else None
            step = options.frames_per_batch
            cpu = wall = main_cpu = interleaved_s = 0.0
            signed = 0
            batches = [frames[i : i + step] for i in range(0, len(frames), step)]
            for start in range(0, len(batches), _SLICE_BATCHES):
                chunk = batches[start : start + _SLICE_BATCHES]
                interleaved_s += _slice_crypto_s(platform, hubs, wire, [f for batch in chunk for f in batch])
                cpu0, wall0, main0 = time.process_time(), time.perf_counter(), time.thread_time()
                if profiler is not None:
                    profiler.enable()
                for batch in chunk:
                    acks = await core.handle(batch)
                    for ack in acks:
                        signed += len(wire.encode_ack(ack))
                if profiler is not None:
                    profiler.disable()
                cpu += time.process_time() - cpu0
                wall += time.perf_counter() - wall0
                main_cpu += time.thread_time() - main0
            stored = core.stats.envelopes_stored
    if profiler is not None and options.profile is not None:
        profiler.dump_stats(str(options.profile))
    if stored != len(envelopes):
        raise RuntimeError(f"stored {stored} of {len(envelopes)} envelopes")
    per_env = cpu / len(envelopes) * 1e6
    interleaved_us = interleaved_s / len(envelopes) * 1e6
    return {
        "engine": "sqlite" if options.postgres is None else "postgresql",
        "hubs": options.hubs,
        "enrolled_extra": options.enrolled,
        "envelopes": len(envelopes),
        "envelopes_per_frame": options.frame,
        "frames_per_batch": options.frames_per_batch,
        "crypto_open_verify_us": round(crypto_us, 1),
        "core_cpu_per_envelope_us": round(per_env, 1),
        "main_thread_cpu_per_envelope_us": round(main_cpu / len(envelopes) * 1e6, 1),
        "wall_per_envelope_us": round(wall / len(envelopes) * 1e6, 1),
        "cpu_ratio_to_crypto": round(per_env / crypto_us, 2),
        "crypto_interleaved_us": round(interleaved_us, 1),
        "cpu_ratio_to_interleaved_crypto": round(per_env / interleaved_us, 2),
        "ack_bytes": signed,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m carehub.bench_ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--hubs", type=int, default=200)
    parser.add_argument("--backlog", type=int, default=20)
    parser.add_argument("--frame", type=int, default=20, help="envelopes per frame")
    parser.add_argument("--frames-per-batch", type=int, default=1)
    parser.add_argument("--enrolled", type=int, default=0, help="extra hubs enrolled before the run")
    parser.add_argument("--postgres", metavar="URL")
    parser.add_argument("--profile", type=Path, metavar="FILE")
    a = parser.parse_args(argv)
    options = IngestBenchOptions(a.hubs, a.backlog, a.frame, a.frames_per_batch, a.enrolled, a.postgres, a.profile)
    json.dump(aio.run(run_ingest_bench(options)), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
