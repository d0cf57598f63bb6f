"""Platform ingest at the protocol's limits and under defects: nothing stops it quietly (issues 19.3, 17.6).

A real ``carehub platform run`` process against real Mosquitto stores envelopes with ``seq = 2**63`` and records with
``seq = 2**64 - 1`` (the protocol allows both; SQLite's INTEGER is signed 64-bit) and goes on acking. A defect in
the ingest loop is logged with its traceback and the task's name, counted, and the loop restarts; a defect that
keeps coming back ends the process with exit 1, so systemd restarts it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiomqtt
import nacl.public
import nacl.signing
import pytest

from community.ingest import IngestWorker, WorkerSettings
from community.samples import T0, bp_record
from community.storage import EnvelopeOutcome, EnvelopeToStore, HubKeyChanges, Refusal, SqliteStorage, StorageError
from community.wire import PlatformCodec
from gateway.wire import HubWire
from protocols import cbor
from protocols.acks import Ack
from protocols.cbor import MAX_UINT
from protocols.envelope import ENVELOPE_DOMAIN
from protocols.keys import HubIdentity, PlatformIdentity, save_platform_identity, sign_detached
from protocols.record import Record
from sim.broker import MosquittoBroker, mosquitto_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
]

REPO = Path(__file__).resolve().parents[2]
BOUND = 30  # seconds: an upper bound for awaiting events, never a sleep
CAREHUB = Path(sys.executable).with_name("carehub")


def write_platform(tmp_path: Path, broker: MosquittoBroker, platform: PlatformIdentity) -> Path:
    (tmp_path / "keys").mkdir()
    save_platform_identity(tmp_path / "keys" / "platform.key", platform)
    cfg = tmp_path / "platform.toml"
    cfg.write_text(
        f'[broker]\nurl = "mqtt://{broker.host}:{broker.port}"\n'
        '[storage]\ndatabase = "platform.db"\n'
        '[keys]\nidentity = "keys/platform.key"\n'
    )
    return cfg


async def enroll(db: Path, *hubs: HubIdentity) -> None:
    async with SqliteStorage(db) as storage:
        for hub in hubs:
            await storage.enroll_hub(hub.public)


async def spawn(args: Sequence[str], *, prelude: str | None = None) -> asyncio.subprocess.Process:
    """``carehub ARGS`` as its own process (through the installed entry point, or with ``prelude`` run first)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if prelude is None:
        command = [str(CAREHUB), *args]
    else:
        script = f"import sys\n{prelude}\nfrom carehub.cli import main\nsys.argv = ['carehub', *sys.argv[1:]]\nmain()\n"
        command = [sys.executable, "-c", script, *args]
    return await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )


async def wait_ingesting(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    async with asyncio.timeout(BOUND):
        line = await proc.stdout.readline()
    assert b"ingesting from" in line, line


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
    await proc.wait()


async def next_ack(client: aiomqtt.Client, wire: HubWire) -> Ack:
    async with asyncio.timeout(BOUND):
        async for message in client.messages:
            return wire.open_ack(bytes(message.payload))
    raise AssertionError("the ack subscription ended")


def frame(wire: HubWire, seq: int, records: list[Record]) -> bytes:
    return wire.encode_frame([wire.seal(seq, records, T0)])


def crafted_envelope(
    hub: HubIdentity, platform: PlatformIdentity, seq: int, records: list[bytes], *, version: int = 1
) -> bytes:
    """An envelope built by hand, as an attacker holding ``hub``'s key would: validly signed and sealed, with any
    ``seq``, version and record bytes (``protocols.envelope.seal`` refuses what the protocol does not allow)."""
    inner = cbor.dumps(
        {"v": version, "hub": hub.hub_id, "seq": seq, "sealed_at": cbor.to_micros(T0), "records": records},
        "envelope",
    )
    plaintext = sign_detached(hub.signing_key, ENVELOPE_DOMAIN, inner) + inner
    return bytes(nacl.public.SealedBox(platform.public.box_key).encrypt(plaintext))


def record_with_seq(record: Record, seq: int) -> bytes:
    """``record``'s CBOR with its ``seq`` replaced (any unsigned 64-bit value)."""
    fields = cbor.loads(record.to_cbor(), "record")
    assert isinstance(fields, dict)
    fields["seq"] = seq
    return cbor.dumps(fields, "record")


async def test_platform_run_handles_sequence_numbers_at_and_beyond_the_protocols_limits(tmp_path, mosquitto):
    """An enrolled hub's envelope with seq 2**63, or a record with seq 2**64-1, once made the ingest task die of
    OverflowError while ``carehub platform run`` stayed up printing nothing. Now: the largest values the protocol
    allows (2**63-1, ``protocols.cbor.MAX_UINT``) are stored exactly; larger ones are refused as malformed (named
    in the ack when the envelope's own seq can be), and the process goes on ingesting."""
    platform, hub = PlatformIdentity.generate(), HubIdentity.generate("hub-a")
    cfg = write_platform(tmp_path, mosquitto, platform)
    await enroll(tmp_path / "platform.db", hub)
    wire = HubWire(hub, platform.public)
    top = bp_record("hub-a", 1, seq=MAX_UINT)
    proc = await spawn(["platform", "run", "-c", str(cfg)])
    try:
        await wait_ingesting(proc)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            await client.subscribe("carehub/v1/hub-a/ack", qos=1)
            up = "carehub/v1/hub-a/up"
            beyond = crafted_envelope(hub, platform, 2**63, [bp_record("hub-a", 2).to_cbor()])
            await client.publish(up, wire.encode_frame([beyond]), qos=1)  # quarantined: no seq it could be named by
            huge_record = crafted_envelope(hub, platform, 7, [record_with_seq(bp_record("hub-a", 3), 2**64 - 1)])
            await client.publish(up, wire.encode_frame([huge_record]), qos=1)
            ack = await next_ack(client, wire)
            assert (ack.stored, [(r.seq, r.reason.value) for r in ack.rejected]) == ((), [(7, "malformed")])
            await client.publish(up, frame(wire, MAX_UINT, [top]), qos=1)
            assert (await next_ack(client, wire)).stored == (MAX_UINT,)
            await client.publish(up, frame(wire, MAX_UINT, [top]), qos=1)  # a re-send: a replay, acked again
            assert (await next_ack(client, wire)).stored == (MAX_UINT,)
            await client.publish(up, frame(wire, 1, [bp_record("hub-a", 4)]), qos=1)
            assert (await next_ack(client, wire)).stored == (1,)
        assert proc.returncode is None
    finally:
        await stop(proc)
    readings = await spawn(["platform", "readings", "-c", str(cfg), "--json"])
    out, err = await readings.communicate()
    assert readings.returncode == 0, err
    rows = json.loads(out)
    assert [(r["record_id"], r["record_seq"], r["envelope_seq"]) for r in rows] == [
        (top.record_id.hex(), MAX_UINT, MAX_UINT),
        (bp_record("hub-a", 4).record_id.hex(), 4, 1),
    ]
    rejected = await spawn(["platform", "rejected", "-c", str(cfg), "--json"])
    out, err = await rejected.communicate()
    assert rejected.returncode == 0, err
    assert [(r["hub"], r["seq"], r["reason"]) for r in json.loads(out)] == [
        ("hub-a", None, "malformed"),
        ("hub-a", 7, "malformed"),
    ]


_DEFECT = """
from community.wire import PlatformCodec

def _defect(self, share_group):
    raise RuntimeError("injected defect")

PlatformCodec.uplink_filter = _defect
"""


async def test_a_defect_that_keeps_coming_back_ends_platform_run_with_exit_1(tmp_path, mosquitto):
    """Each failure is logged with the task's name and traceback; after five in a row the process exits 1."""
    cfg = write_platform(tmp_path, mosquitto, PlatformIdentity.generate())
    proc = await spawn(["platform", "run", "-c", str(cfg)], prelude=_DEFECT)
    try:
        async with asyncio.timeout(BOUND):
            out, err = await proc.communicate()
    finally:
        await stop(proc)
    text = err.decode()
    assert proc.returncode == 1, text
    for n in range(1, 5):
        assert f"task ingest:carehub-platform failed ({n} in a row); restarting its loop" in text
    assert "task ingest:carehub-platform failed 5 times in a row without handling a frame; giving up" in text
    assert text.count("Traceback (most recent call last)") == 5
    assert text.splitlines().count("RuntimeError: injected defect") == 5  # each traceback's last line
    last = text.strip().splitlines()[-1]
    assert last == (
        "error: platform worker carehub-platform stopped after repeated failures (last: RuntimeError: injected defect)"
    )
    assert out == b""


class DefectiveStorage(SqliteStorage):
    """SQLite storage whose next ``defects`` batches fail with an unexpected exception (a stand-in for any bug)."""

    def __init__(self, path: Path, defects: int) -> None:
        super().__init__(path)
        self.defects = defects

    async def store_batch(
        self, envelopes: Sequence[EnvelopeToStore], refused: Sequence[Refusal] = ()
    ) -> list[EnvelopeOutcome]:
        if self.defects:
            self.defects -= 1
            raise RuntimeError("injected defect")
        return await super().store_batch(envelopes, refused)


@pytest.fixture
def keys() -> tuple[PlatformIdentity, HubIdentity]:
    return PlatformIdentity.generate(), HubIdentity.generate("hub-a")


@pytest.fixture
async def ack_client(mosquitto: MosquittoBroker) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe("carehub/v1/hub-a/ack", qos=1)
        yield client


async def test_the_ingest_loop_restarts_after_a_defect_and_stores_the_resent_frame(
    tmp_path, mosquitto, keys, ack_client, caplog
):
    platform, hub = keys
    wire = HubWire(hub, platform.public)
    settings = WorkerSettings(mosquitto.host, mosquitto.port, client_id="ingest-7", backoff_base=0.01)
    caplog.set_level(logging.ERROR, logger="community.ingest")
    async with DefectiveStorage(tmp_path / "platform.db", defects=1) as storage:
        await storage.enroll_hub(hub.public)
        async with IngestWorker(settings, storage, PlatformCodec(platform)) as worker:
            async with asyncio.timeout(BOUND):
                await worker.connected.wait()
            payload = frame(wire, 1, [bp_record("hub-a", 1)])
            await ack_client.publish("carehub/v1/hub-a/up", payload, qos=1)
            async with asyncio.timeout(BOUND):
                await worker.restarted.wait()
                await worker.connected.wait()
            assert worker.stats.failures == 1
            assert not worker.failed.is_set()
            # The hub re-sends what was never acked; the restarted loop stores it.
            await ack_client.publish("carehub/v1/hub-a/up", payload, qos=1)
            assert (await next_ack(ack_client, wire)).stored == (1,)
        assert [r.record_id for r in await storage.readings()] == [bp_record("hub-a", 1).record_id.hex()]
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "task ingest:ingest-7 failed (1 in a row); restarting its loop"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


class FailingDatabase(SqliteStorage):
    """SQLite storage whose next ``failures`` reads of the hub registry's changes or batches fail as a database
    failure (disk full, database down)."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures

    def _fail(self) -> None:
        if self.failures:
            self.failures -= 1
            raise StorageError(f"platform database {self.path}: database or disk is full (injected)")

    async def hub_key_changes(self, since: int | None) -> HubKeyChanges:
        self._fail()
        return await super().hub_key_changes(since)

    async def store_batch(
        self, envelopes: Sequence[EnvelopeToStore], refused: Sequence[Refusal] = ()
    ) -> list[EnvelopeOutcome]:
        self._fail()
        return await super().store_batch(envelopes, refused)


async def test_a_database_failure_is_neither_acked_nor_refused(tmp_path, mosquitto, keys, ack_client):
    """A transient failure (the database) never becomes a refusal: nothing is acked, nothing quarantined, the loop
    does not count a defect; the hub's re-send is stored and its forged companion refused then."""
    platform, hub = keys
    wire = HubWire(hub, platform.public)
    forged = HubWire(HubIdentity.generate("hub-a"), platform.public)  # claims hub-a, signs with another key
    payload = wire.encode_frame(
        [wire.seal(1, [bp_record("hub-a", 1)], T0), forged.seal(2, [bp_record("hub-a", 2)], T0)]
    )
    async with FailingDatabase(tmp_path / "platform.db", failures=0) as storage:
        await storage.enroll_hub(hub.public)
        storage.failures = 2  # the first frame fails reading the hub registry, the second storing the batch
        settings = WorkerSettings(mosquitto.host, mosquitto.port, client_id="ingest-8")
        async with IngestWorker(settings, storage, PlatformCodec(platform)) as worker:
            async with asyncio.timeout(BOUND):
                await worker.connected.wait()
            for _ in range(3):  # two failures, then the hub's re-send succeeds
                await ack_client.publish("carehub/v1/hub-a/up", payload, qos=1)
            ack = await next_ack(ack_client, wire)
            # The first ack this hub ever got (ack_seq 1) answers the last re-send: the failed attempts got none.
            assert ack.ack_seq == 1
            assert ack.stored == (1,)
            assert [(r.seq, r.reason.value) for r in ack.rejected] == [(2, "bad_signature")]
            assert worker.stats.storage_errors == 2
            assert worker.stats.failures == 0
            assert worker.stats.rejections == {"bad_signature": 1}
            assert [q.refusal.envelope_seq for q in await storage.quarantine()] == [2]
            assert await storage.rejections() == {"bad_signature": 1}
