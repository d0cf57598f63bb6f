"""Record what a workload asks of the file system, with strace, as a list of typed operations.

The workload runs under ``strace -f -y -xx`` (every thread, file descriptors annotated with their paths, every byte of
every string in hex, nothing truncated). Each system call that changes a file under the workload's root becomes one
:class:`Op`, in the order the calls completed; writes to the marker file (outside the root) become :class:`Marker`
operations, which is how the workload says "this was acknowledged" at a precise point of the same timeline.

Only what the product's storage uses is modelled: open/openat/creat, write, pwrite64, lseek, ftruncate, fsync,
fdatasync, rename(at/at2), unlink(at), mkdir(at), rmdir, close, dup. Any other call that would change a file under
the root (writev, fallocate, mmap'd writes are not traced) makes the recording fail loudly rather than be wrong: the
only mmap'd file, SQLite's ``-shm`` index, is rebuilt by SQLite after a crash and is left out of every crash state.
"""

from __future__ import annotations

import enum
import json
import os
import re
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Marker",
    "Op",
    "OpKind",
    "Recording",
    "TraceError",
    "parse_trace",
    "record",
]

_SYSCALLS = (
    "open,openat,creat,write,pwrite64,writev,pwritev,pwritev2,lseek,ftruncate,truncate,fallocate,fsync,fdatasync,"
    "sync_file_range,rename,renameat,renameat2,unlink,unlinkat,mkdir,mkdirat,rmdir,close,dup,dup2,dup3,fcntl"
)


class TraceError(RuntimeError):
    """The trace cannot be turned into a faithful model (an unsupported call touched the root, or it is cut)."""


class OpKind(enum.Enum):
    """What one operation does; metadata operations change names, data operations change an inode's bytes."""

    CREATE = "create"  # metadata: a new empty file (inode) under a name
    MKDIR = "mkdir"  # metadata
    RENAME = "rename"  # metadata
    UNLINK = "unlink"  # metadata (also rmdir)
    WRITE = "write"  # data: bytes at an offset of an inode
    TRUNCATE = "truncate"  # data: an inode's length
    FSYNC = "fsync"  # an inode's data and metadata durable (and, on a journaling file system, all earlier names)
    FDATASYNC = "fdatasync"  # an inode's data durable
    MARKER = "marker"  # the workload acknowledged something


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of the recorded timeline.

    Attributes:
        index: position in the timeline (0-based).
        kind: what it does.
        inode: the file it acts on (WRITE, TRUNCATE, FSYNC, FDATASYNC, CREATE); -1 for a directory sync.
        path: the name it acts on (CREATE, MKDIR, UNLINK, RENAME source; the directory for a directory sync).
        target: RENAME's destination.
        offset: WRITE's offset or TRUNCATE's length.
        data: WRITE's bytes.
        directory: FSYNC/FDATASYNC of a directory.
        marker: MARKER's decoded JSON object.
    """

    index: int
    kind: OpKind
    inode: int = -1
    path: str = ""
    target: str = ""
    offset: int = 0
    data: bytes = b""
    directory: bool = False
    marker: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Marker:
    """An acknowledgement the workload wrote, with its place in the timeline."""

    index: int
    event: dict[str, object]


@dataclass(frozen=True, slots=True)
class Recording:
    """A parsed trace: the operations, the workload's root, and how many system calls were read."""

    root: str
    ops: tuple[Op, ...]
    syscalls: int

    def markers(self) -> Iterator[Marker]:
        """The acknowledgements, in timeline order."""
        for op in self.ops:
            if op.kind is OpKind.MARKER:
                yield Marker(op.index, op.marker)


_LINE = re.compile(r"^(?P<pid>\d+) +(?P<rest>.*)$")
_CALL = re.compile(r"^(?P<name>\w+)\((?P<args>.*)\) += (?P<ret>.*)$")
_RESUMED = re.compile(r"^<\.\.\. (?P<name>\w+) resumed>(?P<tail>.*)$")
_CLOSED = "<closed at entry>"
_FD = re.compile(r"^(?P<fd>-?\d+|AT_FDCWD)(?:<(?P<path>[^>]*)>(?:\(deleted\))?)?$")


def _unhex(text: str) -> bytes:
    """The bytes of a strace ``-xx`` string body (every byte written as ``\\xHH``)."""
    if len(text) % 4:
        raise TraceError(f"unexpected string escape in trace: {text[:40]!r}")
    return bytes.fromhex(text.replace("\\x", ""))


def _split_args(args: str) -> list[str]:
    """Split a call's arguments at top-level commas (strings hold only ``\\xHH`` escapes, so no commas or quotes)."""
    out: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(args):
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(args[start:i].strip())
            start = i + 1
    tail = args[start:].strip()
    if tail:
        out.append(tail)
    return out


def _string(arg: str) -> bytes:
    if arg.endswith("..."):
        raise TraceError("a string in the trace was truncated; raise strace -s")
    if not (arg.startswith('"') and arg.endswith('"')):
        raise TraceError(f"expected a string argument, got {arg[:40]!r}")
    return _unhex(arg[1:-1])


def _fd(arg: str) -> tuple[int, str | None]:
    match = _FD.match(arg)
    if match is None:
        raise TraceError(f"expected a file descriptor, got {arg[:60]!r}")
    fd = -100 if match["fd"] == "AT_FDCWD" else int(match["fd"])
    path = match["path"]
    return fd, None if path is None else _unhex(path).decode("utf-8", "surrogateescape")


@dataclass(slots=True)
class _Handle:
    inode: int  # -1 for a directory
    path: str
    append: bool
    offset: int = 0


@dataclass(slots=True)
class _Builder:
    """Replays the calls on a name -> inode model of the root to turn fds and paths into inodes."""

    root: str
    marker_path: str
    ops: list[Op] = field(default_factory=list)
    names: dict[str, int] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    sizes: dict[int, int] = field(default_factory=dict)
    fds: dict[int, _Handle] = field(default_factory=dict)
    marker_fds: set[int] = field(default_factory=set)
    next_inode: int = 0

    def __post_init__(self) -> None:
        self.dirs.add(self.root)

    def inside(self, path: str | None) -> bool:
        return path is not None and (path == self.root or path.startswith(self.root + "/"))

    def add(self, kind: OpKind, **fields: object) -> None:
        self.ops.append(Op(len(self.ops), kind, **fields))  # type: ignore[arg-type]

    def resolve(self, dirfd: str, raw: bytes) -> str:
        path = raw.decode("utf-8", "surrogateescape")
        if not path.startswith("/"):
            _, base = _fd(dirfd)
            if base is None:
                raise TraceError(f"cannot resolve relative path {path!r}")
            path = os.path.join(base, path)
        return os.path.normpath(path)

    def call(self, name: str, args: list[str], ret: str) -> None:
        if ret.startswith(("-1 ", "?")):
            return  # failed (or interrupted by the exit): changed nothing
        handler = getattr(self, "_" + name, None)
        if handler is not None:
            handler(args, ret)

    # -- opening and closing
    def _open_common(self, path: str, flags: str, ret: str) -> None:
        fd, _ = _fd(ret.split(" ", maxsplit=1)[0])
        if path == self.marker_path:
            self.marker_fds.add(fd)
            return
        self.fds.pop(fd, None)
        self.marker_fds.discard(fd)
        if not self.inside(path):
            return
        if path in self.dirs or "O_DIRECTORY" in flags:
            self.fds[fd] = _Handle(-1, path, append=False)
            return
        inode = self.names.get(path)
        if inode is None:
            if "O_CREAT" not in flags:
                raise TraceError(f"{path} opened without O_CREAT but not known to the model")
            inode = self.next_inode
            self.next_inode += 1
            self.names[path] = inode
            self.sizes[inode] = 0
            self.add(OpKind.CREATE, inode=inode, path=path)
        elif "O_TRUNC" in flags and self.sizes[inode] > 0:
            self.sizes[inode] = 0
            self.add(OpKind.TRUNCATE, inode=inode, offset=0)
        self.fds[fd] = _Handle(inode, path, append="O_APPEND" in flags)

    def _openat(self, args: list[str], ret: str) -> None:
        self._open_common(self.resolve(args[0], _string(args[1])), args[2], ret)

    def _open(self, args: list[str], ret: str) -> None:
        self._open_common(self.resolve("AT_FDCWD", _string(args[0])), args[1], ret)

    def _creat(self, args: list[str], ret: str) -> None:
        self._open_common(self.resolve("AT_FDCWD", _string(args[0])), "O_CREAT|O_TRUNC", ret)

    def _close(self, args: list[str], ret: str) -> None:
        fd, _ = _fd(args[0])
        self.fds.pop(fd, None)
        self.marker_fds.discard(fd)

    def _dup_common(self, old: int, new: int) -> None:
        if old in self.marker_fds:
            self.marker_fds.add(new)
        handle = self.fds.get(old)
        if handle is not None:
            self.fds[new] = handle  # a dup shares the offset
        else:
            self.fds.pop(new, None)

    def _dup(self, args: list[str], ret: str) -> None:
        self._dup_common(_fd(args[0])[0], _fd(ret.split(" ", maxsplit=1)[0])[0])

    def _dup2(self, args: list[str], ret: str) -> None:
        self._dup_common(_fd(args[0])[0], _fd(args[1])[0])

    _dup3 = _dup2

    def _fcntl(self, args: list[str], ret: str) -> None:
        if args[1].startswith("F_DUPFD"):
            self._dup_common(_fd(args[0])[0], _fd(ret.split(" ", maxsplit=1)[0])[0])

    # -- data
    def _file(self, arg: str) -> _Handle | None:
        fd, path = _fd(arg)
        handle = self.fds.get(fd)
        if handle is None and self.inside(path) and fd not in self.marker_fds:
            raise TraceError(f"write to {path} through fd {fd} that the model did not see opened")
        return handle

    def _write_at(self, handle: _Handle, data: bytes, offset: int) -> None:
        if handle.inode < 0:
            raise TraceError(f"data written to directory {handle.path}")
        self.add(OpKind.WRITE, inode=handle.inode, offset=offset, data=data)
        self.sizes[handle.inode] = max(self.sizes[handle.inode], offset + len(data))

    def _write(self, args: list[str], ret: str) -> None:
        fd, _ = _fd(args[0])
        count = int(ret.split(" ", maxsplit=1)[0])
        if fd in self.marker_fds:
            for line in _string(args[1])[:count].decode().splitlines():
                self.add(OpKind.MARKER, marker=json.loads(line))
            return
        handle = self._file(args[0])
        if handle is None:
            return
        offset = self.sizes[handle.inode] if handle.append else handle.offset
        self._write_at(handle, _string(args[1])[:count], offset)
        handle.offset = offset + count

    def _pwrite64(self, args: list[str], ret: str) -> None:
        handle = self._file(args[0])
        if handle is not None:
            count = int(ret.split(" ", maxsplit=1)[0])
            self._write_at(handle, _string(args[1])[:count], int(args[3]))

    def _lseek(self, args: list[str], ret: str) -> None:
        handle = self._file(args[0])
        if handle is not None:
            handle.offset = int(ret.split(" ", maxsplit=1)[0])

    def _ftruncate(self, args: list[str], ret: str) -> None:
        handle = self._file(args[0])
        if handle is not None:
            length = int(args[1])
            self.sizes[handle.inode] = length
            self.add(OpKind.TRUNCATE, inode=handle.inode, offset=length)

    def _truncate(self, args: list[str], ret: str) -> None:
        path = self.resolve("AT_FDCWD", _string(args[0]))
        if self.inside(path):
            inode = self.names[path]
            self.sizes[inode] = int(args[1])
            self.add(OpKind.TRUNCATE, inode=inode, offset=int(args[1]))

    def _unsupported(self, args: list[str], ret: str) -> None:
        fd, path = _fd(args[0])
        if fd in self.fds or self.inside(path):
            raise TraceError(f"unsupported call on {path}: the model would be wrong")

    _writev = _pwritev = _pwritev2 = _fallocate = _sync_file_range = _unsupported

    def _fsync_common(self, args: list[str], kind: OpKind) -> None:
        handle = self._file(args[0])
        if handle is not None:
            self.add(kind, inode=handle.inode, path=handle.path, directory=handle.inode < 0)

    def _fsync(self, args: list[str], ret: str) -> None:
        self._fsync_common(args, OpKind.FSYNC)

    def _fdatasync(self, args: list[str], ret: str) -> None:
        self._fsync_common(args, OpKind.FDATASYNC)

    # -- names
    def _rename_common(self, old: str, new: str) -> None:
        if not (self.inside(old) or self.inside(new)):
            return
        if not (self.inside(old) and self.inside(new)):
            raise TraceError(f"rename across the root: {old} -> {new}")
        if old in self.dirs:
            raise TraceError(f"directory rename {old} is not modelled")
        self.names[new] = self.names.pop(old)
        self.add(OpKind.RENAME, path=old, target=new)

    def _rename(self, args: list[str], ret: str) -> None:
        self._rename_common(self.resolve("AT_FDCWD", _string(args[0])), self.resolve("AT_FDCWD", _string(args[1])))

    def _renameat(self, args: list[str], ret: str) -> None:
        self._rename_common(self.resolve(args[0], _string(args[1])), self.resolve(args[2], _string(args[3])))

    _renameat2 = _renameat

    def _unlink_common(self, path: str) -> None:
        if not self.inside(path):
            return
        if path in self.dirs:
            self.dirs.discard(path)
        else:
            del self.names[path]
        self.add(OpKind.UNLINK, path=path)

    def _unlink(self, args: list[str], ret: str) -> None:
        self._unlink_common(self.resolve("AT_FDCWD", _string(args[0])))

    _rmdir = _unlink

    def _unlinkat(self, args: list[str], ret: str) -> None:
        self._unlink_common(self.resolve(args[0], _string(args[1])))

    def _mkdir_common(self, path: str) -> None:
        if self.inside(path):
            self.dirs.add(path)
            self.add(OpKind.MKDIR, path=path)

    def _mkdir(self, args: list[str], ret: str) -> None:
        self._mkdir_common(self.resolve("AT_FDCWD", _string(args[0])))

    def _mkdirat(self, args: list[str], ret: str) -> None:
        self._mkdir_common(self.resolve(args[0], _string(args[1])))


def parse_trace(lines: Sequence[str] | Iterator[str], root: Path, marker: Path) -> Recording:
    """Turn strace output (``-f -y -xx -s BIG``, one ``PID call(...) = ret`` per line) into a :class:`Recording`."""
    builder = _Builder(str(root), str(marker))
    pending: dict[str, str] = {}
    syscalls = 0
    for raw in lines:
        line = raw.rstrip("\n")
        match = _LINE.match(line)
        if match is None:
            continue
        pid, rest = match["pid"], match["rest"]
        if rest.startswith(("+++", "---")):
            continue
        if rest.endswith(" <unfinished ...>"):
            head = rest[: -len(" <unfinished ...>")]
            if head.startswith("close("):
                # The number is free as soon as close starts: another thread may be handed it before this close
                # returns, so the close is applied now and its completion ignored.
                builder.call("close", _split_args(head[len("close(") :]), "0")
                head = _CLOSED
            pending[pid] = head
            continue
        resumed = _RESUMED.match(rest)
        if resumed is not None:
            head = pending.pop(pid, None)
            if head is None:
                raise TraceError(f"resumed call without its start: {line[:80]!r}")
            if head == _CLOSED:
                syscalls += 1
                continue
            rest = head + resumed["tail"]
        call = _CALL.match(rest)
        if call is None:
            raise TraceError(f"cannot parse trace line: {line[:120]!r}")
        syscalls += 1
        builder.call(call["name"], _split_args(call["args"]), call["ret"].strip())
    return Recording(str(root), tuple(builder.ops), syscalls)


def record(workload: Sequence[str], root: Path, marker: Path, trace: Path) -> Recording:
    """Run ``workload`` (a command line) under strace and parse what it did to ``root``.

    Raises:
        TraceError: strace failed, the workload failed, or the trace cannot be modelled.
    """
    command = [
        "strace",
        "-f",
        "-qq",
        "-y",
        "-xx",
        "-s",
        "16777216",
        "-e",
        f"trace={_SYSCALLS}",
        "-o",
        str(trace),
        *workload,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TraceError(f"workload under strace exited {done.returncode}: {done.stderr[-2000:]}")
    with trace.open(encoding="ascii", errors="strict") as lines:
        return parse_trace(lines, root, marker)
