"""An in-process MQTT broker (amqtt) for machines without Mosquitto, with the same start/stop shape as
:class:`sim.broker.MosquittoBroker`. Used by `carehub demo` on a fresh machine; tests use Mosquitto.
"""

from __future__ import annotations

import logging
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
        """Start listening (again) on the same port."""
        from amqtt.broker import Broker  # noqa: PLC0415  optional dependency, imported only when used

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        broker = Broker(config)
        await broker.start()
        self._broker = broker

    async def stop(self) -> None:
        """Stop the broker, dropping every connection."""
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
