"""Start a server process and return once its own log says it is ready: no polling, no sleeps.

Mosquitto (:mod:`sim.broker`) and nats-server (``tests/nats_server.py``) are started the same way: the command
runs with its standard output and error on one pipe; :func:`start_ready` reads that pipe line by line until a line
holds the server's readiness marker (Mosquitto's ``running``, nats-server's ``Server is ready``), bounded by a
limit that is an upper bound on an awaited event, not a wait. What the server printed goes to its log file, and a
task keeps draining the pipe into it (a chatty server must never block on a full pipe). A server that exits, stays
silent past the limit, or is cancelled while starting is killed and reaped before the error is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

__all__ = ["NotReadyError", "ReadyProcess", "start_ready"]


class NotReadyError(RuntimeError):
    """The server exited at startup or did not say it was ready in time; the message is one line."""


class ReadyProcess:
    """A server process that said it was ready, its output drained into ``log_path``."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path, drain: asyncio.Task[None]) -> None:
        self.proc = proc
        self.log_path = log_path
        self._drain = drain

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    @property
    def running(self) -> bool:
        """Whether the process is still up."""
        return self.proc.returncode is None

    async def stop(self, *, kill: bool = False, grace_s: float = 10.0) -> None:
        """SIGTERM (SIGKILL if ``kill``, or if it is still up after ``grace_s``), reap it, end the log drain."""
        proc = self.proc
        if proc.returncode is None:
            if kill:
                proc.kill()
            else:
                proc.terminate()
            try:
                async with asyncio.timeout(grace_s):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self._drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._drain


async def start_ready(argv: Sequence[str], ready: bytes, log_path: Path, *, limit_s: float, name: str) -> ReadyProcess:
    """Run ``argv`` and return once a line of its output holds ``ready``.

    Args:
        argv: the command.
        ready: the readiness marker, a part of one log line.
        log_path: where its output goes (appended).
        limit_s: the bound on startup.
        name: the server's name in errors and in the drain task's name.

    Raises:
        NotReadyError: it exited, or said nothing ready within ``limit_s``.
        OSError: the command could not be run.
    """
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    stdout = proc.stdout
    if stdout is None:  # pragma: no cover - piped above
        proc.kill()
        await proc.wait()
        raise NotReadyError(f"{name} started without an output pipe")
    try:
        async with asyncio.timeout(limit_s):
            seen = await _until_ready(proc, stdout, ready, name)
    except BaseException as exc:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if isinstance(exc, TimeoutError):
            raise NotReadyError(f"{name} did not report ready within {limit_s:g} s") from None
        raise
    with log_path.open("ab") as log:
        log.writelines(seen)
    drain = asyncio.create_task(_drain(stdout, log_path), name=f"{name}-log")
    return ReadyProcess(proc, log_path, drain)


async def _until_ready(
    proc: asyncio.subprocess.Process, stdout: asyncio.StreamReader, ready: bytes, name: str
) -> list[bytes]:
    """The lines up to and including the first holding ``ready``."""
    seen: list[bytes] = []
    while True:
        line = await stdout.readline()
        if not line:
            await proc.wait()
            text = " ".join(b"".join(seen).decode(errors="replace").split())
            raise NotReadyError(f"{name} exited with {proc.returncode} at startup: {text}")
        seen.append(line)
        if ready in line:
            return seen


async def _drain(stream: asyncio.StreamReader, log_path: Path) -> None:
    with log_path.open("ab") as log:
        async for line in stream:
            log.write(line)
            log.flush()
