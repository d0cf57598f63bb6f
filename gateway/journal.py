"""A write-ahead journal for indications: durable before the meter is told "received", and sealed at rest.

A meter that indicates a reading forgets it once the hub's Bluetooth stack confirms the indication, and the stack
confirms as soon as the notification callback returns (bumble, and the other stacks bleak drives in-process). The
outbox commit happens later, on its own thread. To keep invariant 1 (durable before acknowledged) the BLE layer
appends each indication's raw bytes here, with fdatasync, inside the callback, before it returns. Entries whose
readings have reached the outbox are dropped by truncating the file once nothing is in flight; after a crash,
:meth:`IndicationJournal.pending` returns what may not have reached the outbox, and the hub stores it again (record
ids are stable, so a reading stored twice is still stored once at the platform).

Invariant 3 (nothing readable at rest): each entry is encrypted (XSalsa20-Poly1305, PyNaCl's SecretBox) with a
journal key kept beside the journal (``<journal>.key``, mode 0600). The hub must be able to read back what a crash
left, so that key cannot be one only the platform holds; instead it is overwritten with a fresh one each time the
journal is emptied. Entries whose readings are already in the outbox were therefore written under a key that no
longer exists, and blocks the file system freed at the truncation reveal nothing even to someone holding the hub's
keys; only what a crash left in flight (to be stored at the next start) is readable with the current key.

Format: one line per indication, the hex of ``nonce || ciphertext`` of ``ADDRESS UUID HEX ISO-TIME``; a torn or
garbled last line (a crash mid-write) is ignored, as its indication was never confirmed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Self

import nacl.exceptions
import nacl.secret
import nacl.utils

__all__ = ["IndicationJournal", "JournalEntry"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One indication as received."""

    address: str
    uuid: int
    data: bytes
    received_at: datetime


class IndicationJournal:
    """Append-only, fsynced, encrypted; truncated (and its key replaced) when everything in it is in the outbox.

    Used from the event loop only.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.key_path = path.with_name(path.name + ".key")
        self._fd = -1
        self._box: nacl.secret.SecretBox | None = None
        self._written = False  # entries were appended under the current key
        self.inflight = 0

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._box = self._load_box()
        self._written = os.fstat(self._fd).st_size > 0  # an earlier run's entries, under the current key
        if self._box is None or not self._written:
            # Nothing left to read back: start this run under a key of its own.
            self._rotate()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def append(self, entry: JournalEntry) -> None:
        """Make `entry` durable (blocks for one fdatasync: a meter reading every few minutes, not a stream)."""
        if self._box is None:
            raise RuntimeError("the journal is not open")
        plain = f"{entry.address} {entry.uuid:04x} {entry.data.hex()} {entry.received_at.isoformat()}"
        line = bytes(self._box.encrypt(plain.encode("utf-8"))).hex() + "\n"
        os.write(self._fd, line.encode("ascii"))
        os.fdatasync(self._fd)
        self._written = True
        self.inflight += 1

    def done(self, count: int = 1) -> None:
        """`count` journaled readings are now in the outbox; once none is in flight, truncate and replace the key."""
        self.inflight = max(0, self.inflight - count)
        if self.inflight == 0:
            os.ftruncate(self._fd, 0)
            os.fdatasync(self._fd)
            if self._written:
                self._rotate()

    def pending(self) -> list[JournalEntry]:
        """Entries left by an earlier run (read before the first append)."""
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
        plain = box.decrypt(bytes.fromhex(line)).decode("utf-8")
        address, uuid, data, at = plain.split(" ")
        return JournalEntry(address, int(uuid, 16), bytes.fromhex(data), datetime.fromisoformat(at))
    except (ValueError, UnicodeDecodeError, nacl.exceptions.CryptoError):
        return None
