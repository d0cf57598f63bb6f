"""A real Mosquitto broker on a free loopback port, for tests and the demo.

``async with MosquittoBroker(workdir) as broker:`` writes a config into ``workdir``, starts ``mosquitto -c`` on
127.0.0.1 and returns once the broker has logged that it is running (no polling, no sleeps). :meth:`stop` and
:meth:`start` take it down and bring it back on the same port, which is how tests simulate an outage.

Mosquitto refuses to run as root unless told to; the generated config says ``user root`` when we are root, so the
broker can read password and ACL files in private temporary directories.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from runtime.ready import NotReadyError, ReadyProcess, start_ready

__all__ = ["BrokerError", "BrokerSecurity", "MosquittoBroker", "free_port", "mosquitto_available", "mosquitto_path"]

_log = logging.getLogger(__name__)

_SBIN_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
_READY_MARKER = b" running"  # "mosquitto version 2.0.11 running"


class BrokerError(RuntimeError):
    """Mosquitto is missing, or it would not start."""


def mosquitto_path() -> str | None:
    """The mosquitto executable, or ``None`` when it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in _SBIN_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def mosquitto_available() -> bool:
    """Whether a mosquitto executable is installed."""
    return mosquitto_path() is not None


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux default 32768)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_HANDED_OUT: set[int] = set()
"""Every port :func:`free_port` has returned in this process."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, below the kernel's ephemeral range.

    A broker stopped and restarted on the same port (an outage) must find it free again. A port from the ephemeral
    range can meanwhile be taken by a client's own connection attempt: a client reconnecting to 127.0.0.1:P that
    happens to be given P as its source port connects to itself (TCP simultaneous open) and holds the port; with a
    client retrying every second for hours that happened in about one demo day in three.

    A port is never handed out twice by one process: ports chosen together (a NATS node's client, MQTT and route
    ports) are all still unbound when the next is chosen, so "free a moment ago" alone once gave one node the same
    port for its MQTT listener and its cluster route, and the node exited.
    """
    high = _ephemeral_low() - 1
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randint(min(10_000, high - 1), high)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    for _ in range(200):  # a crowded range: any free port the kernel offers
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            chosen: int = sock.getsockname()[1]
        if chosen not in _HANDED_OUT:
            _HANDED_OUT.add(chosen)
            return chosen
    raise OSError("no free TCP port on 127.0.0.1 that this process has not already handed out")


@dataclass(frozen=True, slots=True)
class BrokerSecurity:
    """Authentication and authorisation files for the broker (see ``carehub platform broker-config``).

    Attributes:
        password_file: Mosquitto password file (``user:$7$...`` lines).
        acl_file: Mosquitto ACL file; ``None`` authenticates but lets every user use every topic.
    """

    password_file: Path
    acl_file: Path | None = None


class MosquittoBroker:
    """One Mosquitto process, restartable on the same port.

    Args:
        workdir: where the config and the log go.
        port: the port to listen on; a free one by default.
        security: password (and ACL) files; ``None`` allows anonymous clients.
        extra_lines: more config lines, appended verbatim.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        security: BrokerSecurity | None = None,
        extra_lines: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port()
        self.security = security
        self.extra_lines = tuple(extra_lines)
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self._proc: ReadyProcess | None = None

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the broker process is up."""
        return self._proc is not None and self._proc.running

    def config_text(self) -> str:
        """The Mosquitto config this broker runs with."""
        lines = [
            "# written by carehub sim.broker",
            f"listener {self.port} {self.host}",
            "persistence false",
            "set_tcp_nodelay true",  # acks are small; without it Nagle adds tens of ms to each round trip
            "log_dest stderr",  # stdout is block-buffered when piped; stderr is not
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            # Large backlogs are delivered through QoS 1 without the broker dropping queued messages.
            "max_queued_messages 100000",
            "max_inflight_messages 0",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        if self.security is None:
            lines.append("allow_anonymous true")
        else:
            lines.append("allow_anonymous false")
            lines.append(f"password_file {self.security.password_file}")
            if self.security.acl_file is not None:
                lines.append(f"acl_file {self.security.acl_file}")
        lines.extend(self.extra_lines)
        return "\n".join(lines) + "\n"

    async def start(self) -> None:
        """Start mosquitto and return once it has logged that it is running.

        Raises:
            BrokerError: mosquitto is not installed, or exited or stayed silent during startup.
        """
        if self.running:
            return
        exe = mosquitto_path()
        if exe is None:
            raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text(), encoding="utf-8")
        try:
            self._proc = await start_ready(
                [exe, "-c", str(self.config_path)], _READY_MARKER, self.log_path, limit_s=20.0, name="mosquitto"
            )
        except NotReadyError as exc:
            raise BrokerError(str(exc)) from None
        _log.info("mosquitto running on %s:%d (pid %d)", self.host, self.port, self._proc.pid)

    async def stop(self) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after 10 s) and wait for it to exit."""
        proc, self._proc = self._proc, None
        if proc is not None:
            await proc.stop()

    def log_text(self) -> str:
        """Everything the broker has logged so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
