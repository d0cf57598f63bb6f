"""``carehub platform run`` for a JetStream worker: the worker, its storage, and the console lines it prints."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from community.ingest import PlatformWire
from community.nats_config import NatsSettings
from community.nats_ingest import NatsIngestWorker
from community.storage import Storage
from protocols.record import Record

__all__ = ["run_nats_worker"]


async def run_nats_worker(
    settings: NatsSettings,
    storage: AbstractAsyncContextManager[Storage],
    wire: PlatformWire,
    *,
    on_ready: Callable[[], None],
    on_alarm: Callable[[Record], None],
) -> BaseException | None:
    """Run one JetStream ingest worker until it gives up; return its last failure.

    ``on_ready`` is called once it is connected with its consumers bound, ``on_alarm`` for each newly stored alarm or
    panic record.

    Raises:
        StorageError: the storage cannot be opened.
    """
    async with storage as opened, NatsIngestWorker(settings, opened, wire) as worker:

        async def console() -> None:
            await worker.connected.wait()
            on_ready()
            while True:
                on_alarm(await worker.alarms.get())

        printer = asyncio.create_task(console(), name="platform-console")
        try:
            await worker.failed.wait()
        finally:
            printer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await printer
        return worker.failure
