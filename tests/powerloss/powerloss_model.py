"""What a power cut may leave on disk after a recorded timeline of file operations.

The model is that of a journaling file system such as ext4 (the Raspberry Pi's root file system), made weaker where
the guarantees are weakest, so every state a real disk could show is among the states generated:

* **Names** (create, mkdir, rename, unlink) are journaled in order: a power cut keeps a prefix of them. The journal
  is committed by ``fsync`` of any file or directory, by ``fdatasync`` of a directory, and by ``fdatasync`` of a
  file whose size changed (or that was created) since it was last synced; everything up to the last commit before
  the cut is kept, and any prefix of the rest may be.
* **Bytes** (write, pwrite, ftruncate) are durable only once ``fsync``/``fdatasync`` of that same file completed
  after them. Each write or truncation not yet synced is independently kept or lost, and a kept write may be
  *torn*: each 512-byte sector it touches is kept or lost on its own (unwritten sectors keep their old contents;
  a gap past the end of the file reads as zeros).
* SQLite's ``-shm`` index is left out (SQLite rebuilds it after a crash).

:attr:`FileSystem.POSIX` is stricter about names: only what POSIX itself promises, a name made durable by ``fsync``
of its own directory; the unsynced names of each directory are cut to a prefix independently.

A crash point ``k`` means the first ``k`` operations completed. :func:`crash_states` gives, for a crash point, the
state with nothing unsynced kept, the state with everything kept (what a process kill leaves), and random mixtures.
"""

from __future__ import annotations

import bisect
import enum
import random
from dataclasses import dataclass
from pathlib import Path

from powerloss_trace import Op, OpKind, Recording

__all__ = ["CrashState", "FileSystem", "Timeline", "Variant", "materialise"]

SECTOR = 512

_METADATA = frozenset({OpKind.CREATE, OpKind.MKDIR, OpKind.RENAME, OpKind.UNLINK})
_DATA = frozenset({OpKind.WRITE, OpKind.TRUNCATE})


class FileSystem(enum.Enum):
    """Which promises about names the model relies on."""

    EXT4 = "ext4"  # a journal commit (any fsync, a directory sync, a size-changing fdatasync) keeps all earlier names
    POSIX = "posix"  # a name is durable only once its directory was synced


class Variant(enum.Enum):
    """Which of the allowed states at a crash point."""

    SYNCED = "synced"  # only what was synced
    EVERYTHING = "everything"  # all issued operations (a process kill, or a lucky power cut)
    RANDOM = "random"  # any mixture, with torn writes


@dataclass(frozen=True, slots=True)
class CrashState:
    """The files a power cut left: paths relative to the root, their bytes, and the directories."""

    point: int
    variant: Variant
    files: dict[str, bytes]
    dirs: frozenset[str]
    torn_writes: int
    dropped_ops: int


class Timeline:
    """A recording with, for each operation, when it became durable."""

    def __init__(self, recording: Recording, fs: FileSystem = FileSystem.EXT4) -> None:
        self.recording = recording
        self.fs = fs
        self.ops = recording.ops
        never = len(self.ops) + 1
        # data ops: index of the sync that made them durable; names under POSIX: the sync of their directory
        self.synced_at: list[int] = [never] * len(self.ops)
        self.directory: dict[int, str] = {}  # name ops: the directory whose sync makes them durable
        unsynced_names: dict[str, list[int]] = {}
        self.commits: list[int] = []  # indices of journal commits
        unsynced: dict[int, list[int]] = {}
        meta_dirty: set[int] = set()
        size: dict[int, int] = {}
        for op in self.ops:
            if op.kind in _METADATA:
                parent = op.path.rsplit("/", 1)[0]
                self.directory[op.index] = parent
                unsynced_names.setdefault(parent, []).append(op.index)
                if op.kind is OpKind.RENAME and op.target.rsplit("/", 1)[0] != parent:
                    raise ValueError(f"rename across directories is not modelled: {op.path} -> {op.target}")
            if op.kind is OpKind.CREATE:
                meta_dirty.add(op.inode)
                size[op.inode] = 0
            elif op.kind is OpKind.WRITE:
                unsynced.setdefault(op.inode, []).append(op.index)
                end = op.offset + len(op.data)
                if end > size.get(op.inode, 0):
                    size[op.inode] = end
                    meta_dirty.add(op.inode)
            elif op.kind is OpKind.TRUNCATE:
                unsynced.setdefault(op.inode, []).append(op.index)
                if size.get(op.inode, 0) != op.offset:
                    meta_dirty.add(op.inode)
                size[op.inode] = op.offset
            elif op.kind in (OpKind.FSYNC, OpKind.FDATASYNC):
                if op.kind is OpKind.FSYNC or op.directory or op.inode in meta_dirty:
                    self.commits.append(op.index)
                meta_dirty.discard(op.inode)
                for index in unsynced.pop(op.inode, []):
                    self.synced_at[index] = op.index
                if op.directory:
                    for index in unsynced_names.pop(op.path, []):
                        self.synced_at[index] = op.index

    @property
    def points(self) -> int:
        """Crash points: after 0, 1, ... len(ops) operations."""
        return len(self.ops) + 1

    def _committed(self, point: int) -> int:
        """Metadata operations with an index below this are durable at ``point``."""
        position = bisect.bisect_left(self.commits, point)
        return self.commits[position - 1] if position else 0

    def _dropped_names(self, point: int, variant: Variant, rng: random.Random) -> set[int]:
        """The name operations a power cut after ``point`` operations loses: the tail after a cut in each queue."""
        if self.fs is FileSystem.EXT4:
            committed = self._committed(point)
            queues = {"": [op.index for op in self.ops[committed:point] if op.kind in _METADATA]}
        else:
            queues = {}
            for op in self.ops[:point]:
                if op.kind in _METADATA and self.synced_at[op.index] >= point:
                    queues.setdefault(self.directory[op.index], []).append(op.index)
        dropped: set[int] = set()
        for pending in queues.values():
            if variant is Variant.SYNCED:
                cut = 0
            elif variant is Variant.EVERYTHING:
                cut = len(pending)
            else:
                cut = rng.randint(0, len(pending))
            dropped.update(pending[cut:])
        return dropped

    def state(self, point: int, variant: Variant, rng: random.Random) -> CrashState:
        """One state a power cut after ``point`` operations may leave."""
        dropped_meta = self._dropped_names(point, variant, rng)
        root = self.recording.root
        names: dict[str, int] = {}
        dirs: set[str] = set()
        contents: dict[int, bytearray] = {}
        torn = dropped = 0
        for op in self.ops[:point]:
            kind = op.kind
            if kind in _METADATA:
                if op.index in dropped_meta:
                    dropped += 1
                    continue
                _apply_name(op, names, dirs, contents)
            elif kind in _DATA:
                durable = self.synced_at[op.index] < point
                sectors: list[int] | None = None
                if not durable:
                    if variant is Variant.SYNCED or (variant is Variant.RANDOM and rng.random() < 0.5):
                        dropped += 1
                        continue
                    if variant is Variant.RANDOM and kind is OpKind.WRITE and rng.random() < 0.5:
                        sectors = _torn_sectors(op, rng)
                        torn += 1
                _apply_data(op, contents.setdefault(op.inode, bytearray()), sectors)
        dirs.add(root)
        files = {
            _relative(path, root): bytes(contents.get(inode, b""))
            for path, inode in names.items()
            if not path.endswith("-shm") and _reachable(path, dirs, root)
        }
        dirs.discard(root)
        return CrashState(point, variant, files, frozenset(_relative(d, root) for d in dirs), torn, dropped)


def _reachable(path: str, dirs: set[str], root: str) -> bool:
    """Every directory from ``root`` down to ``path``'s parent survived (a lost directory takes its files along)."""
    parent = path.rsplit("/", 1)[0]
    while parent != root:
        if parent not in dirs:
            return False
        parent = parent.rsplit("/", 1)[0]
    return True


def _relative(path: str, root: str) -> str:
    return path[len(root) + 1 :]


def _apply_name(op: Op, names: dict[str, int], dirs: set[str], contents: dict[int, bytearray]) -> None:
    if op.kind is OpKind.CREATE:
        names[op.path] = op.inode
        contents[op.inode] = bytearray()
    elif op.kind is OpKind.MKDIR:
        dirs.add(op.path)
    elif op.kind is OpKind.RENAME:
        inode = names.pop(op.path, None)
        if inode is not None:
            names[op.target] = inode
    elif op.kind is OpKind.UNLINK:
        names.pop(op.path, None)
        dirs.discard(op.path)


def _torn_sectors(op: Op, rng: random.Random) -> list[int]:
    """Which sectors (file offsets, multiples of SECTOR) of a torn write reached the disk: a random proper subset."""
    first = op.offset // SECTOR
    last = (op.offset + len(op.data) - 1) // SECTOR
    sectors = list(range(first, last + 1))
    keep = [s for s in sectors if rng.random() < 0.5]
    if len(keep) == len(sectors) and sectors:
        keep.pop(rng.randrange(len(keep)))
    return keep


def _apply_data(op: Op, data: bytearray, sectors: list[int] | None) -> None:
    if op.kind is OpKind.TRUNCATE:
        if op.offset < len(data):
            del data[op.offset :]
        else:
            data.extend(bytes(op.offset - len(data)))
        return
    spans = [(op.offset, op.offset + len(op.data))]
    if sectors is not None:
        spans = [(max(op.offset, s * SECTOR), min(op.offset + len(op.data), (s + 1) * SECTOR)) for s in sectors]
    for start, end in spans:
        if end > len(data):
            data.extend(bytes(end - len(data)))
        data[start:end] = op.data[start - op.offset : end - op.offset]


def materialise(state: CrashState, destination: Path) -> None:
    """Write ``state`` under ``destination`` (an empty directory), private files mode 0600."""
    for directory in sorted(state.dirs, key=len):
        (destination / directory).mkdir()
    for path, data in state.files.items():
        target = destination / path
        target.write_bytes(data)
        target.chmod(0o600)
