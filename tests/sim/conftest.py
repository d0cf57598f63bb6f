"""Fixtures for the bumble-backed bleak backend: a simulated home on either link mode.

``home`` is parametrized: ``local`` runs the test peripheral in this process on a private ``LocalLink``; ``tcp``
starts the carehub relay and the test peripheral as separate OS processes, and the hub's central joins the relay
over loopback TCP. Either way the test talks to the peripheral only through bleak.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sim.ble import BumbleClient, BumbleScanner, backend_for, open_central
from sim.ble.testbench import open_test_peripheral

PERIPHERAL_ADDRESS = "F0:00:00:00:00:01"
STARTUP_TIMEOUT = 15.0
_local_names = itertools.count()


class Process:
    """A child Python process whose stdout lines can be awaited."""

    def __init__(self, process: asyncio.subprocess.Process, what: str) -> None:
        self.process = process
        self.what = what

    @classmethod
    async def start(cls, what: str, *args: str) -> Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        return cls(process, what)

    async def expect(self, prefix: str, within: float = STARTUP_TIMEOUT) -> str:
        """The next stdout line starting with ``prefix`` (other lines are skipped)."""
        assert self.process.stdout is not None
        async with asyncio.timeout(within):
            while True:
                raw = await self.process.stdout.readline()
                if not raw:
                    stderr = await self._stderr()
                    raise AssertionError(f"{self.what} exited before printing {prefix!r}:\n{stderr}")
                line = raw.decode().strip()
                if line.startswith(prefix):
                    return line

    async def _stderr(self) -> str:
        assert self.process.stderr is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                return (await self.process.stderr.read()).decode(errors="replace")[-4000:]
        return ""

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


@contextlib.asynccontextmanager
async def relay_process() -> AsyncIterator[tuple[Process, str]]:
    """``python -m sim.ble.relay --port 0`` on a free loopback port; yields it and its ``tcp:`` link."""
    relay = await Process.start("relay", "-m", "sim.ble.relay", "--port", "0")
    try:
        port = (await relay.expect("READY")).split()[1]
        yield relay, f"tcp:127.0.0.1:{port}"
    finally:
        await relay.kill()


@contextlib.asynccontextmanager
async def peripheral_process(link: str, address: str = PERIPHERAL_ADDRESS) -> AsyncIterator[Process]:
    """The test peripheral as its own OS process on ``link``."""
    peripheral = await Process.start("peripheral", "-m", "sim.ble.testbench", "--link", link, "--address", address)
    try:
        await peripheral.expect("READY")
        yield peripheral
    finally:
        await peripheral.kill()


@pytest.fixture
async def spawn() -> AsyncIterator[Callable[..., Awaitable[Process]]]:
    """Start child Python processes (``await spawn(what, *args)``); all are killed at teardown."""
    started: list[Process] = []

    async def start(what: str, *args: str) -> Process:
        process = await Process.start(what, *args)
        started.append(process)
        return process

    yield start
    for process in started:
        await process.kill()


@dataclass
class Home:
    """A simulated home with one test peripheral, and the hub's central open on the same link."""

    mode: str
    link: str
    address: str
    keystore: Path
    scanner: type[BumbleScanner]
    client: type[BumbleClient]


@pytest.fixture(params=["local", "tcp"])
async def home(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Home]:
    keystore = tmp_path / "hub-keys.json"
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "local":
            link = f"local:test{next(_local_names)}"
            await stack.enter_async_context(open_test_peripheral(link, PERIPHERAL_ADDRESS))
        else:
            _, link = await stack.enter_async_context(relay_process())
            await stack.enter_async_context(peripheral_process(link))
        await stack.enter_async_context(open_central(link, keystore=keystore))
        scanner, client = backend_for(link)
        yield Home(request.param, link, PERIPHERAL_ADDRESS, keystore, scanner, client)
