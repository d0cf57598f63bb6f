"""Shared fixtures: a real Mosquitto on a free loopback port (skipped cleanly where mosquitto is not installed)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway import aio
from sim.broker import MosquittoBroker, mosquitto_available

requires_mosquitto = pytest.mark.skipif(
    not mosquitto_available(), reason="mosquitto is not installed (scripts/test installs it)"
)


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """Async tests run on the event loop carehub's processes run on (uvloop), not asyncio's default."""
    del config, item
    return {"uvloop": aio.new_event_loop}


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    """An anonymous Mosquitto on 127.0.0.1; ``stop()``/``start()`` bring it down and back on the same port."""
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed (scripts/test installs it)")
    async with MosquittoBroker(tmp_path / "mosquitto") as broker:
        yield broker
