"""An in-process MQTT broker (amqtt) for machines without Mosquitto, with the same start/stop shape as
:class:`sim.broker.MosquittoBroker`. Used by `carehub demo` on a fresh machine; tests use Mosquitto.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from types import TracebackType
from typing import Any, Self

from sim.broker import free_port

__all__ = ["EmbeddedBroker", "embedded_broker_available"]


def embedded_broker_available() -> bool:
    """Whether amqtt is installed."""
    try:
        import amqtt.broker  # noqa: F401, PLC0415  probing an optional dependency
    except ImportError:
        return False
    return True


async def _halt(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    await asyncio.to_thread(thread.join)
    loop.close()


class EmbeddedBroker:
    """amqtt on a free loopback port, anonymous, restartable on the same port."""

    def __init__(self, *, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_port()
        self._broker: Any = None
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.ERROR)

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the broker is accepting connections."""
        return self._broker is not None

    async def start(self) -> None:
        """Start listening (again) on the same port.

        amqtt runs on its own event loop in its own thread, on real time: the broker keeps MQTT keepalive on the
        clock the clients ping by (paho's real one) even when the caller's loop runs on simulated time
        (``sim.virtual_time``, which waits for this thread while it works, as for Mosquitto's process).
        """
        from amqtt.broker import Broker  # noqa: PLC0415  optional dependency, imported only when used

        if self._broker is not None:
            return
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"amqtt:{self.port}", daemon=True)
        thread.start()

        async def serve() -> Any:
            broker = Broker(config)
            await broker.start()
            return broker

        try:
            broker = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(serve(), loop))
        except BaseException:
            await _halt(loop, thread)
            raise
        self._broker = (broker, loop, thread)

    async def stop(self) -> None:
        """Stop the broker, dropping every connection."""
        running, self._broker = self._broker, None
        if running is None:
            return
        broker, loop, thread = running
        try:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(broker.shutdown(), loop))
        finally:
            await _halt(loop, thread)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
