"""The hub's side of the simulated radio: one bumble device per process per link, shared by scanners and clients.

bleak instantiates backend classes itself, so the backends find their central through this registry: an explicit
:func:`open_central` context (what the gateway's wiring and the tests use), or, when none is open, one created on
first use from the process settings (:func:`sim.ble.config.current_settings`) and closed by :func:`close_centrals`.
Centrals are per event loop, like everything bumble schedules.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bumble import hci
from bumble.core import PhysicalTransport
from bumble.device import Advertisement, Connection, Device

from sim.ble.config import LinkSpec, current_settings, normalize_address, parse_link
from sim.ble.errors import SimBleError
from sim.ble.world import open_device

__all__ = ["Central", "close_centrals", "get_central", "open_central"]

AdvertisementListener = Callable[[Advertisement], None]


@dataclass(eq=False)
class _ScanInterest:
    listener: AdvertisementListener
    active: bool


class Central:
    """The hub's bumble device on one link, with scan fan-out and serialized connection set-up."""

    def __init__(self, device: Device, link: LinkSpec) -> None:
        self.device = device
        self.link = link
        self._interests: list[_ScanInterest] = []
        self._scanning_active: bool | None = None  # None: not scanning
        self._scan_lock = asyncio.Lock()
        self._connect_lock = asyncio.Lock()
        self._seen: dict[str, hci.Address] = {}
        device.on(Device.EVENT_ADVERTISEMENT, self._on_advertisement)

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        self._seen[advertisement.address.to_string(False)] = advertisement.address
        for interest in list(self._interests):
            interest.listener(advertisement)

    async def add_scan_listener(self, listener: AdvertisementListener, *, active: bool) -> Callable[[], None]:
        """Receive every advertisement until the returned function is called (then await :meth:`update_scan`)."""
        interest = _ScanInterest(listener, active)
        self._interests.append(interest)
        await self.update_scan()

        def remove() -> None:
            if interest in self._interests:
                self._interests.remove(interest)

        return remove

    async def update_scan(self) -> None:
        """Scan while anyone listens; actively if any listener asked for active scanning."""
        async with self._scan_lock:
            wanted = any(i.active for i in self._interests) if self._interests else None
            if wanted == self._scanning_active:
                return
            if self._scanning_active is not None:
                await self.device.stop_scanning()
                self._scanning_active = None
            if wanted is not None:
                # filter_duplicates off: bleak reports every advertisement (RSSI and data updates).
                await self.device.start_scanning(active=wanted, filter_duplicates=False)
                self._scanning_active = wanted

    def peer_address(self, address: str) -> hci.Address:
        """The typed address for ``address``: as last seen on air, else a static random address."""
        text = normalize_address(address)
        seen = self._seen.get(text)
        return seen if seen is not None else hci.Address(text, hci.Address.RANDOM_DEVICE_ADDRESS)

    async def connect(self, address: hci.Address, give_up_after: float) -> Connection:
        """Create an LE connection (one at a time, as a controller initiates only one).

        bumble's own timeout is used (not ``asyncio.timeout``) because on expiry it also cancels the pending
        ``LE Create Connection`` in the controller.
        """
        async with self._connect_lock:
            connection: Connection = await self.device.connect(
                address, transport=PhysicalTransport.LE, timeout=give_up_after
            )
            return connection


_explicit: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[LinkSpec, Central]] = weakref.WeakKeyDictionary()
_implicit: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[LinkSpec, tuple[Central, AsyncExitStack]]] = (
    weakref.WeakKeyDictionary()
)
_creating: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def open_central(
    link: str | LinkSpec | None = None,
    *,
    address: str | None = None,
    keystore: str | Path | None = None,
) -> AsyncIterator[Central]:
    """Open the hub's device on ``link`` and make it the one this process's backends use.

    Unset arguments come from :func:`sim.ble.config.current_settings`.

    Raises:
        SimBleError: a central for this link is already open on this event loop.
    """
    settings = current_settings()
    spec = parse_link(link) if link is not None else settings.link
    loop = asyncio.get_running_loop()
    registry = _explicit.setdefault(loop, {})
    if spec in registry or spec in _implicit.get(loop, {}):
        raise SimBleError(f"a hub central is already open on {spec}")
    async with open_device(
        spec,
        address or settings.address,
        "carehub",
        keystore=keystore if keystore is not None else settings.keystore,
    ) as device:
        central = Central(device, spec)
        registry[spec] = central
        try:
            yield central
        finally:
            del registry[spec]


async def get_central(link: LinkSpec) -> Central:
    """The central for ``link`` on the running loop, opening one from the process settings if needed."""
    loop = asyncio.get_running_loop()
    if (central := _explicit.get(loop, {}).get(link)) is not None:
        return central
    async with _creating.setdefault(loop, asyncio.Lock()):
        implicit = _implicit.setdefault(loop, {})
        if link in implicit:
            return implicit[link][0]
        stack = AsyncExitStack()
        settings = current_settings()
        device = await stack.enter_async_context(
            open_device(link, settings.address, "carehub", keystore=settings.keystore)
        )
        central = Central(device, link)
        implicit[link] = (central, stack)
        return central


async def close_centrals() -> None:
    """Close the centrals :func:`get_central` opened on the running loop."""
    implicit = _implicit.pop(asyncio.get_running_loop(), {})
    for _, stack in implicit.values():
        with contextlib.suppress(OSError):
            await stack.aclose()
