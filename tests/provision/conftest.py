"""Fixtures for provisioning: the reference platform on a real Mosquitto, and a simulated home (blood-pressure cuff
and pendant) on the carehub radio relay (``relay_link``, tests/conftest.py), so CLI commands running on their own
event loop reach them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from provision_kit import BOUND, Home, Platform, make_home

from community.ingest import IngestWorker, WorkerSettings
from community.storage import SqliteStorage
from community.wire import PlatformCodec
from protocols.keys import PlatformIdentity, save_platform_identity, save_platform_public_keys
from sim.broker import MosquittoBroker


@pytest.fixture
async def platform(tmp_path: Path, mosquitto: MosquittoBroker) -> AsyncIterator[Platform]:
    root = tmp_path / "platform"
    root.mkdir()
    identity = PlatformIdentity.generate()
    save_platform_identity(root / "platform.key", identity)
    save_platform_public_keys(root / "platform.pub", identity.public)
    config = root / "platform.toml"
    config.write_text(
        f'[broker]\nurl = "mqtt://{mosquitto.host}:{mosquitto.port}"\n\n'
        '[storage]\ndatabase = "platform.db"\n\n[keys]\nidentity = "platform.key"\n',
        encoding="utf-8",
    )
    async with SqliteStorage(root / "platform.db") as storage:
        settings = WorkerSettings(mosquitto.host, mosquitto.port, share_group="ingest")
        async with IngestWorker(settings, storage, PlatformCodec(identity)) as worker:
            async with asyncio.timeout(BOUND):
                await worker.connected.wait()
            yield Platform(root, config, root / "platform.pub", identity, storage, worker, mosquitto)


@pytest.fixture
async def home(relay_link: str) -> AsyncIterator[Home]:
    h = make_home(relay_link)
    async with h.stack:
        await h.attach(h.cuff)
        await h.attach(h.pendant)
        yield h
