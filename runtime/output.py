"""A command's output reaches standard output completely, or the command fails loudly.

Standard output may be a pipe whose file description another process (or an event loop: uvloop sets the
descriptors it watches to non-blocking, and the flag belongs to the pipe, not to this process) has made
non-blocking. Python's buffered writer then stops at the first ``EAGAIN``: the rest of the output is dropped and the
command still exits 0 - a JSON array cut at 65,536 bytes. Here every write loops on :func:`os.write` until each byte
is taken, waiting with :func:`select.poll` whenever the pipe is full, so a slow reader gets everything.

A reader that goes away (``carehub ... | head``) makes the write fail with ``EPIPE``; that becomes
:class:`OutputClosedError`, which the entry points turn into one line on standard error and exit status 1. Output
after that point is discarded instead of raising again while the interpreter shuts down.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import select
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final, TextIO

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["OutputClosedError", "complete_output", "emit", "write_all"]


class OutputClosedError(Exception):
    """Standard output (or error) stopped taking bytes before the command's output was complete.

    Attributes:
        fd: the file descriptor written to.
        reason: what the operating system said (``Broken pipe``, ``No space left on device``...).
    """

    def __init__(self, fd: int, reason: str) -> None:
        self.fd = fd
        self.reason = reason
        name = {1: "standard output", 2: "standard error"}.get(fd, f"file descriptor {fd}")
        super().__init__(f"{name} closed before the output was complete ({reason})")


def _wait_writable(fd: int) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    poller.poll()  # returns on POLLOUT, or POLLERR/POLLHUP (the next write then reports the error)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd``, blocking or not; short writes and ``EAGAIN`` are waited out.

    Raises:
        OutputClosedError: the reader went away (``EPIPE``) or the device failed; some bytes may have been written.
    """
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            _wait_writable(fd)
            continue
        except OSError as exc:
            raise OutputClosedError(fd, exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))) from None
        view = view[written:]


class _CompleteWriter(io.RawIOBase):
    """Raw writer over a borrowed descriptor (never closed here): each write is complete, or raises once."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._failed = False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def write(self, b: ReadableBuffer, /) -> int:
        data = bytes(b)
        if self._failed:
            return len(data)  # already reported: discard, so shutdown flushes do not raise again
        try:
            write_all(self._fd, data)
        except OutputClosedError:
            self._failed = True
            raise
        return len(data)


_MARK: Final = "_carehub_complete"


def _is_complete(stream: TextIO) -> bool:
    return bool(getattr(stream, _MARK, False))


def _descriptor(stream: TextIO | None) -> int | None:
    if stream is None:
        return None
    try:
        return stream.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation is an OSError; ValueError: closed
        return None


def _flush_blocking(stream: TextIO, fd: int) -> None:
    """Flush what ``stream`` buffered before it was replaced, with ``fd`` blocking for that moment."""
    was_blocking = os.get_blocking(fd)
    try:
        if not was_blocking:
            os.set_blocking(fd, True)
        stream.flush()
    except OSError as exc:  # blocking here, so EPIPE, ENOSPC or EIO: the earlier output did not get out
        raise OutputClosedError(fd, exc.strerror or str(exc)) from None
    finally:
        if not was_blocking:
            os.set_blocking(fd, False)


def _complete_stream(stream: TextIO, fd: int) -> io.TextIOWrapper:
    wrapped = io.TextIOWrapper(
        io.BufferedWriter(_CompleteWriter(fd)),
        encoding=stream.encoding,
        errors=stream.errors,
        line_buffering=bool(stream.line_buffering),
    )
    setattr(wrapped, _MARK, True)
    return wrapped


@contextlib.contextmanager
def complete_output() -> Iterator[None]:
    """Within this block, ``sys.stdout`` and ``sys.stderr`` write every byte or raise :class:`OutputClosedError`.

    Streams that are not backed by a descriptor (a test's capture) are left as they are. On leaving, the
    replacements are flushed (which may raise :class:`OutputClosedError`) and the original streams restored; a
    replacement something still holds (a logging handler) keeps writing completely.
    """
    originals = (sys.stdout, sys.stderr)
    replaced: list[io.TextIOWrapper] = []
    try:
        for name, stream in (("stdout", originals[0]), ("stderr", originals[1])):
            fd = _descriptor(stream)
            if fd is None or _is_complete(stream):
                continue
            _flush_blocking(stream, fd)
            wrapped = _complete_stream(stream, fd)
            setattr(sys, name, wrapped)
            replaced.append(wrapped)
        yield
    finally:
        sys.stdout, sys.stderr = originals
        failure: OutputClosedError | None = None
        for wrapped in replaced:
            try:
                wrapped.flush()
            except OutputClosedError as exc:
                failure = failure or exc
            # Not closed: a logging handler may still hold it, and closing it never closes the borrowed descriptor.
        if failure is not None:
            raise failure


def emit(text: str) -> None:
    """Write ``text`` and a newline to standard output, completely, and flush.

    Raises:
        OutputClosedError: standard output stopped taking bytes (the reader went away).
    """
    stream = sys.stdout
    if _is_complete(stream) or _descriptor(stream) is None:
        stream.write(text + "\n")
        stream.flush()
        return
    with complete_output():
        sys.stdout.write(text + "\n")
