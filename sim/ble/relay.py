"""Cross-process radio: one virtual controller per connected process, all on one ``LocalLink``.

Each process (the hub's gateway, the simulated home) runs only a bumble *host*; it speaks HCI (H4 framing) over
TCP to this relay, which gives every accepted connection a fresh bumble ``Controller`` on a shared link. Any number
of processes may connect, and come and go: when a process dies (even by SIGKILL) its TCP connection closes, the
relay takes its controller off the air and every peer sees the link drop (reason *connection timeout*), exactly as
when a real device loses power. A process that reconnects gets a clean controller.

bumble's own ``python -m bumble.apps.controllers`` takes exactly two transports, and its ``tcp-server`` transport
keeps one controller (and one packet parser) across client reconnections, so a killed client would leave stale
connections and possibly a half-parsed packet behind; hence this relay.

Run it with ``python -m sim.ble.relay --port 0``; it prints ``READY <port>`` on stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from bumble.link import LocalLink
from bumble.transport.common import PacketParser

from gateway import aio
from sim.ble.world import SimController, drop_controller

__all__ = ["Relay", "main", "open_relay"]

logger = logging.getLogger(__name__)

_READ_SIZE = 65536


class _StreamSink:
    """Controller → host: H4 packets written to the process's TCP stream."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    def on_packet(self, packet: bytes) -> None:
        if not self._writer.is_closing():
            self._writer.write(packet)


@dataclass
class Relay:
    """A running relay; ``port`` is where processes connect (``tcp:<host>:<port>``)."""

    host: str
    port: int
    link: LocalLink = field(default_factory=LocalLink)
    sessions: int = 0
    _names: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def url(self) -> str:
        """The link setting processes use to join this relay."""
        return f"tcp:{self.host}:{self.port}"

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Own one process's controller for as long as its connection lasts."""
        peer = writer.get_extra_info("peername")
        controller = SimController(f"relay-{next(self._names)}", host_sink=_StreamSink(writer), link=self.link)
        parser = PacketParser(controller)
        self.sessions += 1
        logger.info("process %s joined as %s", peer, controller.name)
        try:
            while data := await reader.read(_READ_SIZE):
                parser.feed_data(data)
        except ConnectionError as error:
            logger.info("process %s: connection error %s", peer, error)
        finally:
            self.sessions -= 1
            drop_controller(controller)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            logger.info("process %s left; %s is off the air", peer, controller.name)


@asynccontextmanager
async def open_relay(host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[Relay]:
    """Serve a relay on ``host:port`` (``port=0``: a free port, see ``Relay.port``) until the block exits."""
    relay = Relay(host, port)
    server = await asyncio.start_server(relay.serve_client, host, port)
    relay.port = server.sockets[0].getsockname()[1]
    try:
        async with server:
            yield relay
    finally:
        server.close()


async def _serve(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with open_relay(host, port) as relay:
        sys.stdout.write(f"READY {relay.port}\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Command line entry point: ``python -m sim.ble.relay [--host H] [--port P]``."""
    parser = argparse.ArgumentParser(prog="python -m sim.ble.relay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one (default)")
    parser.add_argument("--verbose", action="store_true", help="log process joins and departures")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    aio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
