"""The one way carehub replaces a file outside SQLite: whole or not at all, and durable before it returns.

:func:`write_atomic` writes a temp file in the target's directory (created with the requested mode, the mode set
again with ``fchmod`` since the umask may have removed bits), writes every byte (a short write is retried, a write
that makes no progress is an error), fsyncs it, renames it over the target and fsyncs the directory. A directory it
has to create (``parents=True``) is made durable in its parent the same way. A power cut at any point therefore
leaves either the previous complete file or the new complete one (plus, at worst, a dot-named temp file nobody
reads), and once the call returns the new file survives a power cut. ``tests/powerloss`` checks this at every system
call of a traced run.

It lives in :mod:`protocols` (standard library only) so that :mod:`protocols.keys` and the gateway's provisioning
files share it. Errors are the operating system's own :class:`OSError`, with the file named; each caller turns them
into its own error type at its boundary (:class:`protocols.errors.KeyFileError`,
``gateway.provision.errors.ConfigWriteError``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Callable
from pathlib import Path

__all__ = ["Writer", "fsync_directory", "make_directories", "write_all", "write_atomic"]

Writer = Callable[[int, bytes], int]
"""Writes bytes to a file descriptor and returns how many were written (the signature of :func:`os.write`)."""

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def fsync_directory(directory: Path) -> None:
    """Make the entries of ``directory`` (names created, renamed or removed in it) durable."""
    fd = os.open(directory, os.O_RDONLY | _DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_directories(directory: Path) -> None:
    """Create ``directory`` and missing parents, each made durable in its parent (mode 0777 less the umask).

    ``Path.mkdir(parents=True)`` alone leaves a new directory's own name unsynced: a power cut can take it, and
    everything fsynced inside it, away (POSIX promises a name only once its directory is synced).
    """
    missing: list[Path] = []
    current = directory
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            if not path.is_dir():
                raise
            continue  # made meanwhile by someone else, who syncs its parent
        fsync_directory(path.parent)


def write_all(fd: int, data: bytes, *, writer: Writer = os.write, name: str = "") -> None:
    """Write every byte of ``data`` to ``fd``: :func:`os.write` may take only part of it (a full disk, a signal).

    Raises:
        OSError: the file refused more bytes; some of ``data`` may have been written.
    """
    view = memoryview(data)
    while view:
        written = writer(fd, bytes(view))
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress", name)
        view = view[written:]


def write_atomic(
    path: Path, data: bytes, *, mode: int = 0o644, parents: bool = False, writer: Writer = os.write
) -> None:
    """Replace ``path`` with ``data``: temp file with ``mode``, every byte written, fsync, rename, directory fsync.

    Args:
        path: the file to replace. A symbolic link at ``path`` is replaced by the file, never followed.
        data: the complete new contents.
        mode: permission bits of the new file.
        parents: create the directory and missing parents (each made durable in its parent) instead of failing.
        writer: what writes bytes to the temp file (:func:`os.write`; tests pass one that fails like a full disk).

    Raises:
        OSError: nothing was replaced; ``path`` holds what it held before (the temp file is removed).
    """
    directory = path.parent
    if parents:
        make_directories(directory)
    tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode)
    try:
        try:
            os.fchmod(fd, mode)
            write_all(fd, data, writer=writer, name=str(tmp))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_directory(directory)
