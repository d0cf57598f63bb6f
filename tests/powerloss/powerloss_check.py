"""Open what a power cut left with the product's own code and check what it promised.

Per crash state:

* every record acknowledged before the cut (``put_many`` returned) is in the outbox with its exact bytes, or was
  evicted and logged for the eviction report, or its platform ack had been issued;
* every indication acknowledged (the journal's ``flush`` returned) is in the journal or its reading is committed;
* a platform ack that returned stays applied (no row comes back);
* cursors (a meter's RACP position, a pendant's counter) are at least what was acknowledged and never ahead of the
  records committed with them; the envelope sequence counter is beyond every stored row and every acknowledged
  allocation (a sequence number is never handed out twice);
* BLE bonds (``data/bonds.json``) load with bumble's own loader and hold every bond whose save returned;
* no file is unreadable: the outbox opens (``open_outbox`` recovers and migrates) and passes
  ``PRAGMA integrity_check``; the journal opens; ``hub.toml`` and the key files are one complete version written by
  the workload, no older than the last acknowledged one (or absent if none was acknowledged).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import powerloss_workload as work

from gateway.errors import OutboxError
from gateway.journal import IndicationJournal
from gateway.outbox import open_outbox
from gateway.provision.files import HubPaths
from protocols.errors import KeyFileError
from protocols.keys import (
    load_hub_identity,
    load_hub_public_key,
    load_pendant_key,
    load_platform_public_keys,
)
from sim.ble.keystore import DurableJsonKeyStore

__all__ = ["Acknowledged", "Findings", "InitFiles", "check_state"]

_SEQ_KEY = "outbox.next_envelope_seq"


@dataclass(frozen=True, slots=True)
class InitFiles:
    """What the installer's ``init`` wrote (from its marker, known for the whole run): the only version 0."""

    config: str
    state: str
    hub_key_id: str

    @classmethod
    def from_markers(cls, events: Iterable[dict[str, object]]) -> InitFiles:
        """Find the ``init`` acknowledgement among all markers of a run."""
        for event in events:
            if event.get("done") == "init":
                return cls(str(event["config"]), str(event["state"]), str(event["key_id"]))
        raise ValueError("the workload never finished init")


@dataclass(slots=True)
class Acknowledged:
    """What the workload had announced and acknowledged before a crash point (from the markers)."""

    init: InitFiles

    put_seqs: dict[int, tuple[int, ...]] = field(default_factory=dict)  # reading -> seqs, announced
    puts_done: set[int] = field(default_factory=set)
    journal_done: set[int] = field(default_factory=set)
    acking: set[int] = field(default_factory=set)  # platform acks issued
    acked: set[int] = field(default_factory=set)  # platform acks returned
    alloc_end: int = 0
    racp_done: int | None = None
    pendant_done: int | None = None
    begun: dict[str, set[int]] = field(default_factory=dict)
    done: dict[str, int] = field(default_factory=dict)

    def apply(self, event: dict[str, object]) -> None:
        """Take one marker into account."""
        if "putting" in event:
            self.put_seqs[_int(event["putting"])] = tuple(_ints(event["seqs"]))
        elif "put" in event:
            reading = _int(event["put"])
            self.puts_done.add(reading)
            if reading % 5 == 0:
                self.pendant_done = reading
            else:
                self.racp_done = reading
        elif "journal" in event:
            self.journal_done.add(_int(event["journal"]))
        elif "acking" in event:
            self.acking.update(_ints(event["acking"]))
        elif "acked" in event:
            self.acked.update(_ints(event["acked"]))
        elif "alloc" in event:
            self.alloc_end = max(self.alloc_end, _ints(event["alloc"])[1])
        elif event.get("begin") == "init":
            for name in ("init", "config", "hub"):
                self.begun.setdefault(name, set()).add(0)
        elif event.get("done") == "init":
            for name in ("init", "config", "hub"):
                self.done[name] = 0
        elif "begin" in event:
            self.begun.setdefault(str(event["begin"]), set()).add(_int(event["version"]))
        elif "done" in event:
            self.done[str(event["done"])] = _int(event["version"])
        else:
            raise ValueError(f"unknown marker {event!r}")


def _int(value: object) -> int:
    if not isinstance(value, int):
        raise TypeError(f"expected an int in a marker, got {value!r}")
    return value


def _ints(value: object) -> list[int]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list in a marker, got {value!r}")
    return [_int(v) for v in value]


@dataclass(slots=True)
class Findings:
    """What went wrong in one crash state (all zero when the storage kept its promises)."""

    lost_records: int = 0  # acknowledged records (envelopes or indications) neither stored nor accounted for
    unreadable_files: int = 0
    resurrected: int = 0
    cursor_errors: int = 0
    messages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing wrong."""
        return not (self.lost_records or self.unreadable_files or self.resurrected or self.cursor_errors)

    def note(self, text: str) -> None:
        """Remember a finding's description."""
        self.messages.append(text)


async def check_state(root: Path, ack: Acknowledged) -> Findings:
    """Check the crash state materialised at ``root`` against what was acknowledged."""
    findings = Findings()
    paths = work.hub_paths(root)
    init = ack.init
    _check_versioned(paths.config, "config", ack, findings, lambda p, vs: _read_config(p, vs, init))
    _check_versioned(paths.hub_key, "hub", ack, findings, lambda p, vs: _read_hub_key(p, vs, init))
    _check_versioned(paths.pendant_key(work.PENDANT), "pendant", ack, findings, _read_pendant_key)
    _check_versioned(
        paths.state, "init", ack, findings, lambda p, vs: 0 if p.read_bytes() == init.state.encode() else None
    )
    _check_public_keys(paths, ack, findings)
    await _check_bonds(root / "data" / "bonds.json", ack, findings)
    outbox = root / "data" / "outbox.db"
    committed = await _check_outbox(outbox, outbox.exists(), ack, findings)
    _check_journal(root / "data" / "journal", ack, committed, findings)
    return findings


def _read_state(path: Path, init: InitFiles) -> int | None:
    return 0 if path.read_bytes() == init.state.encode() else None


def _read_config(path: Path, candidates: set[int], init: InitFiles) -> int | None:
    text = path.read_bytes()
    if 0 in candidates and text == init.config.encode():
        return 0
    return next((v for v in candidates if v and text == work.config_text(v).encode()), None)


def _read_hub_key(path: Path, candidates: set[int], init: InitFiles) -> int | None:
    try:
        identity = load_hub_identity(path)
    except KeyFileError:
        return None
    if 0 in candidates and identity.key_id == init.hub_key_id:
        return 0
    return next((v for v in candidates if v and work.hub_identity(v).key_id == identity.key_id), None)


def _read_pendant_key(path: Path, candidates: set[int]) -> int | None:
    try:
        pendant_id, key = load_pendant_key(path)
    except KeyFileError:
        return None
    if pendant_id != work.PENDANT:
        return None
    return next((v for v in candidates if work.pendant_key(v) == key), None)


async def _check_bonds(path: Path, ack: Acknowledged, findings: Findings) -> None:
    """``bonds.json``: loads with bumble's own loader and holds exactly bonds 1..n, n no fewer than acknowledged."""
    acknowledged = ack.done.get("bonds", 0)
    try:
        bonds = dict(await DurableJsonKeyStore(work.HUB_ADDRESS, str(path)).get_all())
    except (ValueError, KeyError, TypeError) as exc:
        findings.unreadable_files += 1
        findings.note(f"bonds: unreadable ({type(exc).__name__}: {exc})")
        return
    count = len(bonds)
    expected = {work.bond_name(n): work.bond_keys(n).ltk for n in range(1, count + 1)}
    if {name: keys.ltk for name, keys in bonds.items()} != expected or count not in ack.begun.get("bonds", {0}) | {0}:
        findings.unreadable_files += 1
        findings.note(f"bonds: {sorted(bonds)} is not a set of bonds the workload saved")
    elif count < acknowledged:
        findings.lost_records += acknowledged - count
        findings.note(f"bonds: {count} bonds, {acknowledged} were acknowledged")


def _check_public_keys(paths: HubPaths, ack: Acknowledged, findings: Findings) -> None:
    """The public key files init wrote: present once init was acknowledged, and never torn."""
    platform = paths.keys / f"platform-{work.platform_keys().key_id}.pub"
    for path, load in ((paths.hub_pub, load_hub_public_key), (platform, load_platform_public_keys)):
        if path.exists():
            try:
                load(path)
            except KeyFileError as exc:
                findings.unreadable_files += 1
                findings.note(f"{path.name}: unreadable ({exc})")
        elif "init" in ack.done:
            findings.unreadable_files += 1
            findings.note(f"{path.name}: missing after init was acknowledged")


def _check_versioned(
    path: Path, name: str, ack: Acknowledged, findings: Findings, read: Callable[[Path, set[int]], int | None]
) -> None:
    """The file is absent (only if no version was acknowledged) or one complete version, none older than acknowledged.

    Only versions the workload had begun to write can be there; ``read`` finds which one the file is.
    """
    acknowledged = ack.done.get(name)
    if not path.exists():
        if acknowledged is not None:
            findings.unreadable_files += 1
            findings.note(f"{name}: file missing after version {acknowledged} was acknowledged")
        return
    version = read(path, ack.begun.get(name, set()))
    if version is None:
        findings.unreadable_files += 1
        findings.note(f"{name}: not a complete version written by the workload")
    elif acknowledged is not None and version < acknowledged:
        findings.unreadable_files += 1
        findings.note(f"{name}: version {version} found, {acknowledged} was acknowledged")


async def _check_outbox(path: Path, exists: bool, ack: Acknowledged, findings: Findings) -> set[int]:
    """Check the outbox; returns the readings whose records are committed (stored or accounted for)."""
    if not exists and not ack.puts_done and not ack.alloc_end:
        return set()
    try:
        async with open_outbox(path, max_bytes=work.MAX_BYTES, reserve_bytes=0) as outbox:
            items = await outbox.peek_batch(1 << 30, 1 << 40)
            evicted = await outbox.pending_evictions()
            counter = await outbox.get_cursor(_SEQ_KEY)
            racp = await outbox.get_cursor(work.RACP_CURSOR)
            pendant = await outbox.get_cursor(work.PENDANT_CURSOR)
    except OutboxError as exc:
        findings.unreadable_files += 1
        findings.note(f"outbox: does not open ({exc})")
        return set()
    with sqlite3.connect(path) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
    conn.close()
    if integrity != [("ok",)]:
        findings.unreadable_files += 1
        findings.note(f"outbox: integrity_check {integrity[:3]}")
    stored = {item.envelope_seq: item.envelope for item in items}
    for seq, data in stored.items():
        if data != work.envelope(seq):
            findings.unreadable_files += 1
            findings.note(f"outbox: envelope {seq} has other bytes than were put")
    gone = set(evicted.seqs if evicted is not None else ()) | ack.acking

    def accounted(seqs: Iterable[int]) -> bool:
        return all(seq in stored or seq in gone for seq in seqs)

    for reading in sorted(ack.puts_done):
        missing = [seq for seq in ack.put_seqs[reading] if seq not in stored and seq not in gone]
        if missing:
            findings.lost_records += len(missing)
            findings.note(f"outbox: acknowledged envelopes {missing} of reading {reading} lost")
    back = sorted(ack.acked & stored.keys())
    if back:
        findings.resurrected += len(back)
        findings.note(f"outbox: acked envelopes {back} are back")
    next_seq = counter if isinstance(counter, int) else 0
    if next_seq < ack.alloc_end or (stored and max(stored) >= next_seq):
        findings.cursor_errors += 1
        findings.note(f"outbox: sequence counter {counter!r} behind allocations ({ack.alloc_end}) or rows")
    racp_value = racp if isinstance(racp, int) else None
    _check_cursor("racp", racp_value, raw=racp, acknowledged=ack.racp_done, ack=ack, accounted=accounted, out=findings)
    pendant_value = int.from_bytes(pendant, "big") if isinstance(pendant, bytes) else None
    _check_cursor(
        "pendant", pendant_value, raw=pendant, acknowledged=ack.pendant_done, ack=ack, accounted=accounted, out=findings
    )
    return {reading for reading, seqs in ack.put_seqs.items() if seqs and all(s in stored or s in gone for s in seqs)}


def _check_cursor(
    name: str,
    value: int | None,
    *,
    raw: object,
    acknowledged: int | None,
    ack: Acknowledged,
    accounted: Callable[[Iterable[int]], bool],
    out: Findings,
) -> None:
    findings = out
    if raw is not None and value is None:
        findings.cursor_errors += 1
        findings.note(f"cursor {name}: unexpected value {raw!r}")
        return
    if acknowledged is not None and (value is None or value < acknowledged):
        findings.cursor_errors += 1
        findings.note(f"cursor {name}: {value} is behind the acknowledged {acknowledged}")
    if value is not None and (value not in ack.put_seqs or not accounted(ack.put_seqs[value])):
        findings.cursor_errors += 1
        findings.note(f"cursor {name}: {value} is ahead of the stored records")


def _check_journal(path: Path, ack: Acknowledged, committed: set[int], findings: Findings) -> None:
    try:
        with IndicationJournal(path) as journal:
            pending = journal.pending()
    except OSError as exc:
        findings.unreadable_files += 1
        findings.note(f"journal: does not open ({exc})")
        return
    expected = {work.entry(reading): reading for reading in ack.journal_done}
    unnumbered = (replace(e, number=0) for e in pending)  # numbers are per run; the reading is what counts
    present = {expected[e] for e in unnumbered if e in expected}
    lost = sorted(r for r in ack.journal_done if r not in present and r not in committed)
    if lost:
        findings.lost_records += len(lost)
        findings.note(f"journal: acknowledged indications {lost} neither in the journal nor in the outbox")
