"""One simulated home for the end-to-end tests whose hub daemon runs as its service runs it (``python -m gateway``):
the carehub BLE relay and the hub daemon in processes of their own; in the test's process the reference platform
(SQLite storage and an ingest worker on the test's Mosquitto) and one simulated device on the relayed radio.

What the tests wait for at the platform is awaited as an event: the in-process ingest worker sets
:attr:`community.ingest.IngestWorker.stored` after every commit that stored an envelope, and
:meth:`RunningHome.until_stored` looks again at the database only then (no polling, no sleep).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from relay_process import running_relay

from community.ingest import IngestWorker, WorkerSettings
from community.storage import SqliteStorage
from community.wire import PlatformCodec
from protocols.keys import HubIdentity, PlatformIdentity, save_hub_identity, save_platform_public_keys
from sim import ble as sim_ble
from sim.broker import MosquittoBroker
from sim.devices.base import SimDevice


def hub_config(
    *,
    hub_id: str,
    broker: MosquittoBroker,
    outbox: Path,
    link: str,
    device: SimDevice,
    kind: str,
    sections: Sequence[str] = (),
    device_lines: Sequence[str] = (),
) -> str:
    """The hub's TOML: keys in ``hub.key`` / ``platform.pub`` beside it, resident ``r1`` and the one device of
    ``kind``; ``sections`` are more lines before the residents, ``device_lines`` more keys of the device's table."""
    return "\n".join(
        [
            "[hub]",
            f'id = "{hub_id}"',
            'key_file = "hub.key"',
            'timezone = "UTC"',
            "[platform]",
            'public_key_file = "platform.pub"',
            "[broker]",
            f'url = "{broker.url}"',
            "[storage]",
            f'path = "{outbox}"',
            "[ble]",
            f'link = "{link}"',
            *sections,
            "[[residents]]",
            'id = "r1"',
            'name = "Resident"',
            "[[devices]]",
            f'address = "{device.options.address}"',
            f'kind = "{kind}"',
            'resident = "r1"',
            *device_lines,
        ]
    )


@dataclass
class RunningHome:
    """The platform's storage and worker, the relay's link, and (once :meth:`start_hub` ran) the hub daemon."""

    root: Path
    link: str
    storage: SqliteStorage
    worker: IngestWorker
    bound: float
    stack: contextlib.AsyncExitStack

    @property
    def config(self) -> Path:
        return self.root / "hub.toml"

    @property
    def log(self) -> Path:
        """The hub daemon's standard error."""
        return self.root / "hub.log"

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else "(no hub log)"

    async def start_hub(self) -> asyncio.subprocess.Process:
        """``python -m gateway --config hub.toml``, its standard error in :attr:`log`; killed and reaped on exit."""
        daemon = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "--config",
            str(self.config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=self.stack.enter_context(self.log.open("wb")),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.stack.push_async_callback(daemon.wait)
        self.stack.callback(daemon.kill)
        return daemon

    async def until_stored(self, predicate: Callable[[], Awaitable[object]], what: str) -> None:
        """Return once ``predicate`` (a look at the platform's database) holds; it is tried now and again after each
        commit the ingest worker makes (its ``stored`` event), within :attr:`bound` seconds."""
        stored = self.worker.stored
        try:
            async with asyncio.timeout(self.bound):
                while True:
                    stored.clear()  # before the look: a commit during it sets the event again
                    if await predicate():
                        return
                    await stored.wait()
        except TimeoutError:
            pytest.fail(f"waited {self.bound} s for {what}; hub log:\n{self.tail()}")


@contextlib.asynccontextmanager
async def running_home(
    root: Path,
    broker: MosquittoBroker,
    device: SimDevice,
    *,
    hub_id: str,
    kind: str,
    bound: float,
    outbox: Path | None = None,
    sections: Sequence[str] = (),
    device_lines: Sequence[str] = (),
) -> AsyncIterator[RunningHome]:
    """A hub's keys and config in ``root`` (the outbox there unless ``outbox`` is given), the relay, the platform
    with the hub enrolled, and ``device`` on the relayed radio; the hub daemon is started by
    :meth:`RunningHome.start_hub`. Everything is stopped on exit, the daemon first."""
    hub = HubIdentity.generate(hub_id)
    platform = PlatformIdentity.generate()
    save_hub_identity(root / "hub.key", hub)
    save_platform_public_keys(root / "platform.pub", platform.public)
    async with contextlib.AsyncExitStack() as stack:
        link = await stack.enter_async_context(running_relay(bound))
        text = hub_config(
            hub_id=hub_id,
            broker=broker,
            outbox=outbox or root / "outbox.sqlite",
            link=link,
            device=device,
            kind=kind,
            sections=sections,
            device_lines=device_lines,
        )
        (root / "hub.toml").write_text(text, encoding="utf-8")
        storage = await stack.enter_async_context(SqliteStorage(root / "platform.sqlite"))
        await storage.enroll_hub(hub.public)
        settings = WorkerSettings(broker.host, broker.port, client_id=f"{hub_id}-test-platform")
        worker = await stack.enter_async_context(IngestWorker(settings, storage, PlatformCodec(platform)))
        options = device.options
        radio = await stack.enter_async_context(sim_ble.open_peripheral_device(link, options.address, options.name))
        await stack.enter_async_context(device.attach(radio))
        yield RunningHome(root, link, storage, worker, bound, stack)
