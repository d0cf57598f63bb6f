"""The hub's storage doing a busy day's work, run under strace by the power-loss harness.

Run as ``python powerloss_workload.py ROOT MARKER READINGS [UNSAFE...]``. Everything is written by the
product's own code: the installer's ``init`` step (:func:`gateway.provision.steps.init_hub`: key directory, hub
identity and public key files, ``hub.toml``, provisioning state) and pairing's pendant key
(:func:`gateway.provision.steps.provision_pendant_key`); BLE bonds as the radio saves them (``data/bonds.json``,
through the store :mod:`sim.ble.world` opens); later config files through
:func:`gateway.provision.files.write_atomic` and hub key rotations through :mod:`protocols.keys`; indications
through :class:`gateway.journal.IndicationJournal`; envelopes and cursors (a meter's RACP position, a pendant's
counter) through :class:`gateway.outbox.Outbox`, including evictions (a small byte budget), platform acks, and the
outbox closed and opened again (SQLite checkpoints and removes its WAL at close).

Each time the product says something is durable (``put_many`` returned, the journal's ``flush`` returned, a file
write returned), one JSON line is written to MARKER, a file outside ROOT: that write sits in the same strace
timeline, so the checker knows exactly what was acknowledged before each crash point. A line announcing the
operation is written before it starts, so that the checker also knows what may legitimately be on disk.
Contents are derived from numbers (:func:`envelope`, :func:`config_text`, :func:`pendant_key`, :func:`entry`), so the
checker can tell a complete version from a torn one.

UNSAFE names a deliberately broken variant, for the harness's own tests (it must find the loss each one causes):
``config`` writes ``hub.toml`` in place without fsync, ``outbox`` runs SQLite with ``synchronous=OFF``,
``journal`` skips the journal's fdatasync, ``bonds`` saves bonds with bumble's own key store (no fsync), ``mkdir``
creates directories without syncing their parent (as the outbox and journal did before).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from bumble import hci
from bumble.keys import JsonKeyStore, MemoryKeyStore, PairingKeys

import gateway.outbox_store
from gateway import aio
from gateway.core.pendant_link import cursor_key
from gateway.journal import IndicationJournal, JournalEntry
from gateway.outbox import Lane, OutboxItem, open_outbox
from gateway.provision.files import CONFIG_NAME, HubPaths, write_atomic
from gateway.provision.steps import init_hub, provision_pendant_key
from protocols import atomic
from protocols.keys import HubIdentity, PlatformPublicKeys, save_hub_identity
from sim.ble import world

HUB_ID: Final = "hub-powerloss"
METER: Final = "C0:FF:EE:00:00:01"
PENDANT: Final = "C0:FF:EE:00:00:02"
HUB_ADDRESS: Final = "F0:F1:F2:F3:F4:F5"
RACP_CURSOR: Final = f"racp:{METER}"
PENDANT_CURSOR: Final = cursor_key(PENDANT)
MAX_BYTES: Final = 48 * 1024  # small: routine rows are evicted often
SESSIONS: Final = 3
EPOCH: Final = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def envelope(seq: int) -> bytes:
    """The sealed-envelope stand-in stored at ``seq``: 200 to 5,000 bytes, so rows span pages and overflow pages."""
    size = 200 + (seq * 977) % 4800
    block = hashlib.sha256(seq.to_bytes(8, "big")).digest()
    return (block * (size // len(block) + 1))[:size]


def config_text(version: int) -> str:
    """``hub.toml`` version ``version`` >= 1 (about 1.5 KB, so it spans sectors and can be torn); 0 is init's."""
    notes = "".join(f"# note {version}.{n}: the hub's configuration as the installer left it\n" for n in range(24))
    return f'{notes}[hub]\nid = "{HUB_ID}"\nrevision = {version}\n'


def pendant_key(version: int) -> bytes:
    """The pendant's 32-byte key at ``version``."""
    return hashlib.sha256(b"pendant" + version.to_bytes(4, "big")).digest()


def hub_identity(version: int) -> HubIdentity:
    """The hub identity at ``version`` (a deterministic seed)."""
    import nacl.signing  # noqa: PLC0415 - only the workload and checker need it

    seed = hashlib.sha256(b"hub" + version.to_bytes(4, "big")).digest()
    return HubIdentity(HUB_ID, nacl.signing.SigningKey(seed))


def entry(reading: int) -> JournalEntry:
    """The indication of reading ``reading``."""
    return JournalEntry(METER, 0x2A35, reading.to_bytes(4, "big") * 3, EPOCH + timedelta(minutes=reading))


def bond_name(number: int) -> str:
    """The address of the ``number``-th bonded device."""
    return f"C0:FF:EE:00:01:{number:02X}"


def bond_keys(number: int) -> PairingKeys:
    """The keys of the ``number``-th bond."""
    ltk = hashlib.sha256(b"ltk" + number.to_bytes(4, "big")).digest()[:16]
    return PairingKeys(ltk=PairingKeys.Key(ltk, authenticated=True), address_type=hci.AddressType.PUBLIC_DEVICE)


def _radio_keystore(path: Path) -> JsonKeyStore | MemoryKeyStore:
    """The bond store the gateway's radio opens for ``data/bonds.json``."""
    return world._keystore(HUB_ADDRESS, path)


def _bumble_keystore(path: Path) -> JsonKeyStore | MemoryKeyStore:
    return JsonKeyStore(namespace=HUB_ADDRESS, filename=str(path))


bond_store: Callable[[Path], JsonKeyStore | MemoryKeyStore] = _radio_keystore


def pendant_counter(reading: int) -> bytes:
    """The pendant cursor value committed with reading ``reading`` (a big-endian counter)."""
    return reading.to_bytes(8, "big")


UNSAFE_MODES: Final = ("config", "outbox", "journal", "mkdir", "bonds")


def _unsafe_write(
    path: Path, data: bytes, *, mode: int = 0o644, writer: Callable[[int, bytes], int] = os.write
) -> None:
    """What :func:`write_atomic` must not be: in place, no fsync."""
    del writer
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _unsynced(prepare: Callable[[sqlite3.Connection, Path], None]) -> Callable[[sqlite3.Connection, Path], None]:
    def no_sync(conn: sqlite3.Connection, path: Path) -> None:
        prepare(conn, path)
        conn.execute("PRAGMA synchronous=OFF")

    return no_sync


def _break(modes: list[str]) -> None:
    """Switch on the deliberately broken variants named in ``modes``."""
    global write_atomic  # noqa: PLW0603 - the workload's own seam for the harness's tests
    for mode in modes:
        if mode == "config":
            write_atomic = _unsafe_write
        elif mode == "outbox":
            # The store prepares each connection with gateway.outbox_schema.prepare (imported by name).
            gateway.outbox_store.prepare = _unsynced(gateway.outbox_store.prepare)
        elif mode == "journal":
            os.fdatasync = lambda fd: None
        elif mode == "bonds":
            global bond_store  # noqa: PLW0603 - the workload's own seam for the harness's tests
            bond_store = _bumble_keystore
        elif mode == "mkdir":
            atomic.make_directories = lambda directory: directory.mkdir(parents=True, exist_ok=True)
        else:
            raise SystemExit(f"unknown unsafe mode {mode!r}; known: {', '.join(UNSAFE_MODES)}")


class Markers:
    """One JSON line per acknowledgement, each with a single write(2)."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)

    def __call__(self, **event: object) -> None:
        line = (json.dumps(event, sort_keys=True) + "\n").encode()
        if os.write(self._fd, line) != len(line):
            raise OSError("marker line written short")


async def _session(root: Path, mark: Markers, first: int, readings: int, versions: list[int]) -> None:
    data = root / "data"
    with IndicationJournal(data / "journal") as journal:
        journal.pending()
        # Without the full-disk reserve (gateway.disk_reserve): it holds no data (a reserve lost to a power cut is
        # made again at the next open), and its preallocation (fallocate) is outside this harness's file model.
        async with open_outbox(data / "outbox.db", max_bytes=MAX_BYTES, reserve_bytes=0) as outbox:
            for reading in range(first, first + readings):
                number = journal.append(entry(reading))
                if number is None:
                    raise SystemExit("the journal refused an entry: its queue is full")
                journal.flush()
                mark(journal=reading)
                count = 1 + reading % 3
                seqs = await outbox.allocate_seqs(count)
                mark(alloc=[seqs.start, seqs.stop])
                pendant = reading % 5 == 0
                lane = Lane.PRIORITY if pendant else Lane.ROUTINE
                items = [
                    OutboxItem(seq, envelope(seq), lane, "panic" if pendant else "measurement", (f"r{seq}",), 0.0)
                    for seq in seqs
                ]
                cursors: dict[str, int | bytes] = (
                    {PENDANT_CURSOR: pendant_counter(reading)} if pendant else {RACP_CURSOR: reading}
                )
                mark(putting=reading, seqs=list(seqs))
                await outbox.put_many(items, cursors=cursors)
                mark(put=reading, seqs=list(seqs))
                journal.release([number])
                if reading % 4 == 3:
                    batch = await outbox.peek_batch(3, 1 << 30)
                    acked = [item.envelope_seq for item in batch]
                    mark(acking=acked)
                    await outbox.ack(acked)
                    mark(acked=acked)
                if reading % 9 == 8:
                    version = versions[0] = versions[0] + 1
                    mark(begin="config", version=version)
                    write_atomic(root / CONFIG_NAME, config_text(version).encode(), mode=0o600)
                    mark(done="config", version=version)
                    mark(begin="pendant", version=version)
                    provision_pendant_key(hub_paths(root), PENDANT, pendant_key(version))
                    mark(done="pendant", version=version)
                if reading % 6 == 1:
                    bonds = versions[2] = versions[2] + 1
                    mark(begin="bonds", version=bonds)
                    store = bond_store(data / "bonds.json")
                    await store.update(bond_name(bonds), bond_keys(bonds))
                    mark(done="bonds", version=bonds)
                if reading % 17 == 16:
                    version = versions[1] = versions[1] + 1
                    mark(begin="hub", version=version)
                    save_hub_identity(hub_paths(root).hub_key, hub_identity(version))
                    mark(done="hub", version=version)


def platform_keys() -> PlatformPublicKeys:
    """The platform's public keys the hub is set up with (deterministic)."""
    import nacl.public  # noqa: PLC0415 - only the workload and checker need it
    import nacl.signing  # noqa: PLC0415

    seed = hashlib.sha256(b"platform").digest()
    return PlatformPublicKeys(nacl.signing.SigningKey(seed).verify_key, nacl.public.PrivateKey(seed).public_key)


def hub_paths(root: Path) -> HubPaths:
    """The provisioned hub's files under ``root``."""
    return HubPaths.for_config(root / CONFIG_NAME)


async def _main(root: Path, marker: Path, readings: int) -> None:
    mark = Markers(marker)
    paths = hub_paths(root)
    # Set up as an installer does (`carehub provision init`): key directory, identity, public key files, hub.toml,
    # provisioning state; then the pendant's key as pairing writes it.
    mark(begin="init")
    result = init_hub(
        paths,
        hub_id=HUB_ID,
        platform=platform_keys(),
        broker_url="mqtt://127.0.0.1:1883",
        username=None,
        password=None,
        timezone="Europe/Zurich",
    )
    mark(
        done="init",
        version=0,
        key_id=result.hub_key_id,
        config=paths.config.read_text(encoding="utf-8"),
        state=paths.state.read_text(encoding="utf-8"),
    )
    versions = [0, 0, 0]
    mark(begin="pendant", version=0)
    provision_pendant_key(paths, PENDANT, pendant_key(0))
    mark(done="pendant", version=0)
    per_session = max(1, readings // SESSIONS)
    for session in range(SESSIONS):
        await _session(root, mark, session * per_session, per_session, versions)


if __name__ == "__main__":
    _break(sys.argv[4:])
    aio.run(_main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])))
