"""The indication journal: what the hub received from meters and has not committed yet, durable and sealed at rest.

What it protects, and what it cannot (see also ``docs/ble.md``):

A meter forgets a reading once its indication is confirmed. On a real hub ``bluetoothd`` sends that confirmation
itself, as the indication arrives, before the value travels over D-Bus to bleak's callback in this process; no
code in the hub runs between the meter's "received" and the confirmation. So there is a window, from the
confirmation until the callback has handed the reading on, in which a crash of the hub process (or of
``bluetoothd``) loses a reading the meter has already erased. The journal cannot close that window; nothing above
BlueZ can. (bumble, the simulator's stack, runs in-process and confirms only when the callback returns, so there the
window is smaller; the journal does not rely on that any more.)

What the journal does protect is everything after the callback: a reading waits in its session's queue, then in a
commit of the outbox (decoding, sealing, SQLite, fsync), and a slow SD card can hold hundreds of readings there (a
glucose meter's stored records arrive in a burst). Each one is appended here as it arrives, and a crash of the hub
loses none of them: after a restart :meth:`IndicationJournal.pending` returns them and the hub stores them again
(record ids are stable, so a reading stored twice is still stored once at the platform). Entries are released with
:meth:`IndicationJournal.release` (by the number :meth:`IndicationJournal.append` gave them) once their readings are
in the outbox, and the file is truncated whenever no entry is outstanding, so the journal holds what is in flight,
never history. An entry's number also lets the hub read back, in the same run, a reading it left to the journal
alone (a session's queue was full).

Off the event loop: :meth:`IndicationJournal.append` runs inside bleak's notification callback, on the event loop
that also raises the pendant's alarms, so it only puts the entry on a bounded list (no I/O, no lock held for longer
than a list append) and returns. A writer thread of its own writes what has accumulated with one ``write`` and one
``fdatasync`` (a group commit: a burst of indications costs a few syncs, not one each), and truncates the file and
replaces the key when everything is committed. An entry is therefore durable a few milliseconds after its callback,
normally long before its reading's outbox commit (which decodes, seals and fsyncs a database). If the disk stalls and
``capacity`` entries wait, further entries are not journaled (:attr:`IndicationJournal.unjournaled` counts them,
and the log says so); their readings still go on to the outbox as usual, they are only not protected against a
crash while they wait.

Invariant 3 (nothing readable at rest): each entry is encrypted (XSalsa20-Poly1305, PyNaCl's SecretBox) with a
journal key kept beside the journal (``<journal>.key``, mode 0600). The hub must be able to read back what a crash
left, so that key cannot be one only the platform holds; instead it is overwritten with a fresh one each time the
journal is emptied. Entries whose readings are already in the outbox were therefore written under a key that no
longer exists, and blocks the file system freed at the truncation reveal nothing even to someone holding the hub's
keys; only what a crash left in flight (to be stored at the next start) is readable with the current key.

Format: one line per indication, the hex of ``nonce || ciphertext`` of ``NUMBER ADDRESS UUID HEX ISO-TIME`` (the
number in decimal, unique within a run); a torn or garbled last line (a crash mid-write) is ignored.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Self

import nacl.exceptions
import nacl.secret
import nacl.utils

from protocols import atomic

__all__ = ["IndicationJournal", "JournalEntry"]

_log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 4096  # entries waiting for the writer thread; about 1 MB of memory at most
_CLOSE_WAIT = 10.0  # seconds closing waits for the writer thread to finish what is queued


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One indication as received.

    Attributes:
        number: given by :meth:`IndicationJournal.append` (unique within a run); ignored when appending.
    """

    address: str
    uuid: int
    data: bytes
    received_at: datetime
    number: int = 0


@dataclass(frozen=True, slots=True)
class _Release:
    """The readings of these entries are committed to the outbox."""

    numbers: tuple[int, ...]


class IndicationJournal:
    """Append-only, encrypted, written and fsynced by a thread of its own; emptied whenever nothing is outstanding.

    A synchronous context manager: entering opens the file and starts the writer thread; leaving writes what is
    queued, then stops the thread and closes the file. :meth:`append` and :meth:`release` may be called from the event
    loop (they never block on I/O); :meth:`flush` and :meth:`pending` do I/O and belong in a thread or in start-up.
    """

    def __init__(self, path: Path, *, capacity: int = DEFAULT_CAPACITY, writer: atomic.Writer = os.write) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.path = path
        self.key_path = path.with_name(path.name + ".key")
        self.capacity = capacity
        self._writer = writer  # os.write; tests pass one that takes a few bytes at a time, as a filling disk does
        self.unjournaled = 0  # entries not journaled: `capacity` entries were waiting, or the disk refused them
        self._fd = -1
        self._box: nacl.secret.SecretBox | None = None
        self._written = False  # entries were written under the current key
        self._ops: deque[JournalEntry | _Release] = deque()
        self._queued_entries = 0
        self._numbers = 0  # the last number given
        self._submitted = 0  # operations handed to the writer
        self._finished = 0  # operations the writer has made durable
        self._outstanding: set[int] = set()  # entries in the file whose readings are not committed yet
        self._closing = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        atomic.make_directories(self.path.parent)  # durable in its parent too, or a power cut may take it away
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._box = self._load_box()
        self._written = os.fstat(self._fd).st_size > 0  # an earlier run's entries, under the current key
        if self._box is None or not self._written:
            # Nothing left to read back: start this run under a key of its own.
            self._rotate()
        self._closing = False
        self._thread = threading.Thread(target=self._write_loop, name=f"journal:{self.path.name}", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(_CLOSE_WAIT)
            if thread.is_alive():
                # The disk does not answer: leave the thread (a daemon) its file rather than wait with the hub.
                _log.error(
                    "indication journal %s: still writing after %g s; the last entries may not be durable",
                    self.path,
                    _CLOSE_WAIT,
                )
                return
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- the event loop's side: enqueue only ------------------------------------------------------------------

    def append(self, entry: JournalEntry) -> int | None:
        """Queue `entry` for the writer thread; its number, or None (and counted) when `capacity` entries wait."""
        with self._cond:
            if self._thread is None or self._closing:
                raise RuntimeError("the journal is not open")
            if self._queued_entries >= self.capacity:
                self.unjournaled += 1
                refused = self.unjournaled
            else:
                self._numbers += 1
                self._ops.append(replace(entry, number=self._numbers))
                self._queued_entries += 1
                self._submitted += 1
                self._cond.notify()
                return self._numbers
        if refused == 1 or refused % 1000 == 0:
            _log.error(
                "indication journal %s: %d entries wait for the disk; %d not journaled",
                self.path,
                self.capacity,
                refused,
            )
        return None

    def release(self, numbers: Iterable[int] = ()) -> None:
        """The readings of the entries `numbers` are now in the outbox; the file is emptied once no entry written in
        this run is outstanding (with no numbers: check only, e.g. after an earlier run's entries were stored)."""
        with self._cond:
            if self._thread is None or self._closing:
                raise RuntimeError("the journal is not open")
            self._ops.append(_Release(tuple(numbers)))
            self._submitted += 1
            self._cond.notify()

    # -- blocking calls -----------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Block until everything appended or released so far was handled by the writer: on disk (the file truncated
        if due), or, if the disk refused it, logged and counted in :attr:`unjournaled`."""
        with self._cond:
            target = self._submitted
            while self._finished < target:
                self._cond.wait()

    def pending(self) -> list[JournalEntry]:
        """The entries in the file (at start-up: what an earlier run left uncommitted)."""
        try:
            text = self.path.read_bytes().decode("ascii", errors="replace")
        except FileNotFoundError:
            return []
        lines = text.split("\n")[:-1]  # the part after the last newline is torn or empty
        if not lines:
            return []
        box = self._box or self._load_box()
        if box is None:
            _log.error("indication journal %s: %d entries but no readable key %s", self.path, len(lines), self.key_path)
            return []
        entries = []
        for number, line in enumerate(lines, 1):
            entry = _open_line(box, line)
            if entry is None:
                _log.error("indication journal %s: entry %d cannot be read; skipped", self.path, number)
            else:
                entries.append(entry)
        return entries

    # -- the writer thread --------------------------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._ops and not self._closing:
                    self._cond.wait()
                if not self._ops:
                    return  # closing, and everything is written
                batch = list(self._ops)
                self._ops.clear()
            lost = self._write(batch)
            with self._cond:
                self.unjournaled += lost
                self._queued_entries -= sum(isinstance(op, JournalEntry) for op in batch)
                self._finished += len(batch)
                self._cond.notify_all()

    def _write(self, batch: list[JournalEntry | _Release]) -> int:
        """Write, sync and release what `batch` says; returns how many of its entries could not be journaled."""
        box = self._box
        if box is None:  # not after __enter__, which fails without a key
            return sum(isinstance(op, JournalEntry) for op in batch)
        lines = []
        added: set[int] = set()
        released: set[int] = set()
        for op in batch:
            if isinstance(op, JournalEntry):
                plain = f"{op.number} {op.address} {op.uuid:04x} {op.data.hex()} {op.received_at.isoformat()}"
                lines.append(bytes(box.encrypt(plain.encode("utf-8"))).hex() + "\n")
                added.add(op.number)
            else:
                released.update(op.numbers)
        lost = 0
        if lines:
            self._written = True  # (part of) the batch may reach the file even if the call fails
            try:
                atomic.write_all(self._fd, "".join(lines).encode("ascii"), writer=self._writer, name=str(self.path))
                os.fdatasync(self._fd)
            except OSError as exc:
                lost = len(added)
                _log.error("indication journal %s: cannot write (%s); %d entries not journaled", self.path, exc, lost)
            else:
                self._outstanding |= added  # only entries that reached the file are outstanding
        self._outstanding -= released  # (a release of an entry that never reached it changes nothing)
        if not self._outstanding and self._written:
            try:
                os.ftruncate(self._fd, 0)
                os.fdatasync(self._fd)
            except OSError as exc:  # the entries stay, readable, until the next emptying succeeds
                _log.error("indication journal %s: cannot empty it (%s)", self.path, exc)
            else:
                self._rotate()
        return lost

    def _load_box(self) -> nacl.secret.SecretBox | None:
        try:
            key = bytes.fromhex(self.key_path.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None
        if len(key) != nacl.secret.SecretBox.KEY_SIZE:
            return None
        return nacl.secret.SecretBox(key)

    def _rotate(self) -> None:
        key = nacl.utils.random(nacl.secret.SecretBox.KEY_SIZE)
        try:
            self._write_key(key)
        except OSError as exc:
            if self._box is None:
                raise OSError(f"indication journal {self.path}: cannot write its key {self.key_path} ({exc})") from exc
            # Storage trouble: keep the old key (entries stay readable, none is lost) and try again next time.
            _log.error("indication journal %s: key not replaced (%s)", self.path, exc)
            return
        self._box = nacl.secret.SecretBox(key)
        self._written = False

    def _write_key(self, key: bytes) -> None:
        """Overwrite the key file in place and sync it before any entry is written under the new key.

        In place, not by rename: the old key's bytes are overwritten rather than left in a freed block, and one
        fdatasync suffices. A write torn by a crash is harmless: the journal is empty whenever its key is replaced.
        """
        created = not self.key_path.exists()
        fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            os.pwrite(fd, key.hex().encode("ascii") + b"\n", 0)  # always 65 bytes: the old key is covered
            os.fdatasync(fd)
        finally:
            os.close(fd)
        if created:  # make the new directory entry durable too
            dir_fd = os.open(self.key_path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def _open_line(box: nacl.secret.SecretBox, line: str) -> JournalEntry | None:
    try:
        number, address, uuid, data, at = box.decrypt(bytes.fromhex(line)).decode("utf-8").split(" ")
        return JournalEntry(address, int(uuid, 16), bytes.fromhex(data), datetime.fromisoformat(at), int(number))
    except (ValueError, UnicodeDecodeError, nacl.exceptions.CryptoError):
        return None
