"""Space held back for alarms and panic calls: the outbox's disk reserve (issue 17 item 2, "full disk").

The outbox has its own byte budget (routine rows are evicted beyond it), but the file system is shared: another
program's log can fill it to the last byte, and then SQLite cannot append a single WAL frame (``SQLITE_FULL``). A
panic call that cannot be stored is not confirmed to the pendant (``docs/protocol.md`` §9.4), so without space held
back a full disk would leave a resident's call waiting on the pendant until someone frees space.

The design follows what storage software does for its own metadata (a file system's reserved blocks, a database's
emergency space): space is claimed while there is plenty and given up only for the writes that must not fail.

* **The reserve file.** :class:`DiskReserve` keeps a preallocated file next to the outbox (``<outbox>-reserve``,
  :data:`DEFAULT_RESERVE_BYTES`), allocated with ``posix_fallocate`` so its blocks are really taken (a sparse file
  would hold nothing), fsynced, and its directory fsynced when it is created.
* **Release on a full disk, for the priority lane only.** When a write group fails with ``SQLITE_FULL`` (or an I/O
  error while the file system has no space left), the store rolls the group back. If the group carries an essential
  write - a put with a priority row (alarm, panic event), an acknowledgement (a delete frees pages) or the sequence
  numbers those need - the reserve is truncated to zero (and fsynced, so a journalling file system hands the blocks
  back) and the essential jobs are run again at once; their callers never see the failure. Routine-only writes in
  that group get :class:`DiskFullError` and are not stored: a meter is then not confirmed and keeps its readings, as
  before this change.
* **While the reserve is released** routine writes (routine puts, plain cursor writes) are refused up front with
  :class:`DiskFullError` without touching SQLite: the space freed is for alarms and panic calls, not for the next
  reading. A transaction that carries a priority row is admitted whole, with the routine rows and cursors committed
  with it (splitting it would break ``put_many``'s all-or-nothing promise to its caller).
* **Recovery on its own.** Before every write group, a released reserve is re-created once the file system has
  ``2 x`` the reserve free again (hysteresis: the reserve must not be re-claimed by the first freed kilobyte and
  given up again at once). The full-disk episode then ends and routine writes are admitted again. An outbox opened
  on a file system with too little space starts with the reserve released (the same rules apply).
* **Recorded.** Each episode (:class:`FullDiskEpisode`: start, end, priority commits made from the reserve, routine
  writes refused) is kept in the outbox cursor :data:`EPISODE_CURSOR`, written in the next transaction that
  succeeds; ``carehub doctor`` reads it with the reserve's size and the free space (:func:`reserve_report`).

Everything here runs on the outbox's database thread (the doctor reads files only); nothing here awaits.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeGuard

from gateway.errors import OutboxError

__all__ = [
    "DEFAULT_RESERVE_BYTES",
    "EPISODE_CURSOR",
    "DiskFullError",
    "DiskReserve",
    "FullDiskEpisode",
    "ReserveStatus",
    "free_bytes",
    "is_disk_full",
    "reserve_path",
]

DEFAULT_RESERVE_BYTES: Final = 2 * 2**20
"""Bytes held back for the priority lane. Measured on a filled tmpfs: 2 MiB carried 1,789 priority commits (a
600-byte envelope and a cursor each, one per transaction) before ``SQLITE_FULL`` came back; the WAL, checkpointed
every 256 pages, is reused, so the reserve pays mostly for the database's growth."""
EPISODE_CURSOR: Final = "disk.full_episode"
"""The outbox cursor holding the last full-disk episode (JSON text, :meth:`FullDiskEpisode.encode`)."""
RESERVE_SUFFIX: Final = "-reserve"
_SQLITE_FULL: Final = 13
_SQLITE_IOERR: Final = 10
_NEARLY_FULL: Final = 64 * 1024  # an I/O error with less than this free is taken for a full disk
_ZEROS: Final = bytes(64 * 1024)


class DiskFullError(OutboxError):
    """The file system holding the outbox is full; the write was not stored (routine data) or could not be."""


def reserve_path(outbox: Path) -> Path:
    """The reserve file that belongs to the outbox at ``outbox``."""
    return outbox.with_name(outbox.name + RESERVE_SUFFIX)


def free_bytes(directory: Path) -> int:
    """Bytes an unprivileged writer may still allocate on the file system of ``directory``."""
    found = os.statvfs(directory)
    return found.f_bavail * found.f_frsize


def is_disk_full(exc: sqlite3.Error, directory: Path) -> bool:
    """Whether SQLite's ``exc`` means the file system is out of space."""
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(code, int):
        return False
    primary = code & 0xFF
    if primary == _SQLITE_FULL:
        return True
    if primary == _SQLITE_IOERR:
        try:
            return free_bytes(directory) < _NEARLY_FULL
        except OSError:
            return False
    return False


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True, slots=True)
class FullDiskEpisode:
    """One period in which the outbox's file system was full.

    Attributes:
        started: wall time the first write failed for want of space.
        ended: wall time the reserve was back in place with space to spare (``None`` while the disk is full).
        priority_commits: transactions with priority rows committed while the reserve was released.
        refused: routine write jobs not stored for want of space.
    """

    started: float
    ended: float | None
    priority_commits: int
    refused: int

    def encode(self) -> str:
        """The cursor text."""
        return json.dumps(
            {
                "started": self.started,
                "ended": self.ended,
                "priority_commits": self.priority_commits,
                "refused": self.refused,
            },
            separators=(",", ":"),
        )

    @staticmethod
    def decode(value: object) -> FullDiskEpisode:
        """Read the cursor text back.

        Raises:
            ValueError: ``value`` is not an episode this code wrote.
        """
        data: object = None
        if isinstance(value, str):
            with contextlib.suppress(json.JSONDecodeError):
                data = json.loads(value)
        fields = data if isinstance(data, dict) else {}
        started, ended = fields.get("started"), fields.get("ended")
        commits, refused = fields.get("priority_commits"), fields.get("refused")
        if not (
            _is_number(started) and (ended is None or _is_number(ended)) and _is_count(commits) and _is_count(refused)
        ):
            raise ValueError(f"not a full-disk episode: {value!r:.200}")
        return FullDiskEpisode(float(started), None if ended is None else float(ended), commits, refused)


@dataclass(frozen=True, slots=True)
class ReserveStatus:
    """The reserve as it is on disk.

    Attributes:
        path: the reserve file.
        target: the size it is kept at.
        allocated: bytes it holds now (its allocated blocks; 0 when released or missing).
        free: bytes still free on its file system.
    """

    path: Path
    target: int
    allocated: int
    free: int

    @property
    def present(self) -> bool:
        """Whether the whole reserve is held."""
        return self.allocated >= self.target


def _allocated(path: Path) -> int:
    try:
        found = path.stat()
    except FileNotFoundError:
        return 0
    return min(found.st_size, found.st_blocks * 512)


def reserve_status(path: Path, target: int) -> ReserveStatus:
    """What the reserve file at ``path`` holds (the directory must exist)."""
    return ReserveStatus(path, target, _allocated(path), free_bytes(path.parent))


class DiskReserve:
    """The reserve file of one outbox; used on the outbox's database thread only.

    Args:
        path: the reserve file (:func:`reserve_path`).
        size: bytes to hold back (> 0).
    """

    def __init__(self, path: Path, size: int) -> None:
        if size <= 0:
            raise ValueError(f"the reserve size must be > 0, got {size}")
        self.path = path
        self.size = size
        self._held = False

    @property
    def held(self) -> bool:
        """Whether the reserve is in place (as far as this process has seen)."""
        return self._held

    def status(self) -> ReserveStatus:
        """The reserve as it is on disk now."""
        return reserve_status(self.path, self.size)

    def ensure(self) -> bool:
        """Hold the reserve if it is missing and there is ``2 x`` its size free; whether it is held afterwards.

        Raises:
            OSError: the file cannot be created or written for another reason than a full disk.
        """
        allocated = _allocated(self.path)
        if allocated >= self.size:
            self._held = True
            return True
        if free_bytes(self.path.parent) + allocated < 2 * self.size:
            self._held = False
            return False
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            try:
                self._allocate(fd)
                os.fsync(fd)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                os.ftruncate(fd, 0)  # a part of a reserve is not kept: it would only confuse the figures
                self._held = False
                return False
        finally:
            os.close(fd)
        if created:
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        self._held = True
        return True

    def _allocate(self, fd: int) -> None:
        try:
            os.posix_fallocate(fd, 0, self.size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            # A file system without fallocate: write the blocks (a sparse file would hold nothing back).
            os.lseek(fd, 0, os.SEEK_SET)
            left = self.size
            while left > 0:
                left -= os.write(fd, _ZEROS[: min(left, len(_ZEROS))])

    def release(self) -> int:
        """Give the reserve's blocks back to the file system; returns the bytes released."""
        allocated = _allocated(self.path)
        self._held = False
        if allocated == 0:
            return 0
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.ftruncate(fd, 0)
            # On a journalling file system freed blocks are reusable once the truncation is committed.
            with contextlib.suppress(OSError):
                os.fsync(fd)
        finally:
            os.close(fd)
        return allocated
