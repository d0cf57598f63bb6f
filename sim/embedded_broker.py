"""An MQTT broker (amqtt) for machines without Mosquitto, with the same start/stop shape as
:class:`sim.broker.MosquittoBroker`. Used by `carehub demo` on a fresh machine; tests use Mosquitto.

amqtt runs in a child process of its own (``python -m sim.embedded_broker PORT``), on real time, as Mosquitto does:

- the broker keeps MQTT keepalive on the clock the clients ping by (paho's real one) even when the caller's loop runs
  on simulated time (:mod:`sim.virtual_time`);
- that loop sees the broker's work the way it sees Mosquitto's: a process running or waiting for a CPU, and its
  answers as readable sockets. In a thread of the caller's process the broker was invisible while it waited for the
  interpreter lock, so simulated time could jump while a message was still inside the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from types import TracebackType
from typing import Self

from sim.broker import BrokerError, free_port

__all__ = ["EmbeddedBroker", "embedded_broker_available", "main"]

_READY = b"carehub-embedded-broker ready"
_START_TIMEOUT_S = 60.0  # simulated seconds on a virtual-time loop; the start is awaited I/O, so no time passes
_STOP_TIMEOUT_S = 10.0
_ROOT = str(Path(__file__).resolve().parents[1])  # where the child imports sim from


def embedded_broker_available() -> bool:
    """Whether amqtt is installed."""
    try:
        import amqtt.broker  # noqa: F401, PLC0415  probing an optional dependency
    except ImportError:
        return False
    return True


class EmbeddedBroker:
    """amqtt on a free loopback port, anonymous, in a child process, restartable on the same port."""

    def __init__(self, *, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port()
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the broker is accepting connections."""
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        """The broker process's id while it runs."""
        return self._proc.pid if self.running and self._proc is not None else None

    async def start(self) -> None:
        """Start the broker process (again, on the same port) and return once it accepts connections.

        Raises:
            BrokerError: amqtt is not installed, or the process exited or stayed silent during startup.
        """
        if self.running:
            return
        if not embedded_broker_available():
            raise BrokerError("amqtt is not installed (pip install 'carehub[sim]')")
        env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, (_ROOT, os.environ.get("PYTHONPATH"))))}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sim.embedded_broker",
            self.host,
            str(self.port),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        stdout = proc.stdout
        if stdout is None:
            raise BrokerError("the embedded broker started without its status pipe")
        try:
            async with asyncio.timeout(_START_TIMEOUT_S):
                line = await stdout.readline()
        except TimeoutError:
            line = b""
        if _READY not in line:
            await _end(proc)
            raise BrokerError(f"the embedded broker did not start on {self.url} (exit {proc.returncode})")
        self._proc = proc

    async def stop(self) -> None:
        """Stop the broker, dropping every connection, and wait for its process to exit."""
        proc, self._proc = self._proc, None
        if proc is not None:
            await _end(proc)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


async def _end(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if the process is still there after a while; wait for it either way."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            async with asyncio.timeout(_STOP_TIMEOUT_S):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if proc.stdout is not None:
        with contextlib.suppress(OSError):
            await proc.stdout.read()


async def _serve(host: str, port: int) -> None:
    from amqtt.broker import Broker  # noqa: PLC0415  optional dependency, imported only when used

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.buffer.write(_READY + b"\n")
    sys.stdout.buffer.flush()
    try:
        await stop.wait()
    finally:
        await broker.shutdown()


def main(argv: list[str] | None = None) -> None:
    """``python -m sim.embedded_broker HOST PORT``: serve until SIGTERM; one status line on stdout once listening."""
    host, port = argv if argv is not None else sys.argv[1:]
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.ERROR)
    asyncio.run(_serve(host, int(port)))


if __name__ == "__main__":
    main()
