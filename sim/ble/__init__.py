"""A bleak backend over bumble: the hub's BLE code runs unmodified against simulated meters.

Select the link once per process, then hand the backend classes to bleak::

    import sim.ble
    sim.ble.configure(link="local:home1")          # or CAREHUB_BLE_LINK=tcp:127.0.0.1:7000
    Scanner, Client = sim.ble.backend_for()         # or backend_for("tcp:127.0.0.1:7000")
    device = await BleakScanner.find_device_by_address(addr, backend=Scanner)
    async with BleakClient(device, backend=Client, pair=True) as client: ...

Peripheral authors attach a bumble ``Device`` to a link with :func:`open_peripheral_device`; the cross-process
relay is ``python -m sim.ble.relay --port P``. See ``sim/ble/README.md`` for measurements and limits.
"""

from __future__ import annotations

from functools import cache

from sim.ble.central import Central, close_centrals, get_central, open_central
from sim.ble.client import BumbleClient
from sim.ble.config import HubSettings, LinkKind, LinkSpec, configure, current_settings, parse_link
from sim.ble.errors import LinkConfigError, RelayError, SimBleError
from sim.ble.scanner import BumbleScanner, advertisement_data
from sim.ble.world import advertising_data, open_device, open_peripheral_device

__all__ = [
    "BumbleClient",
    "BumbleScanner",
    "Central",
    "HubSettings",
    "LinkConfigError",
    "LinkKind",
    "LinkSpec",
    "RelayError",
    "SimBleError",
    "advertisement_data",
    "advertising_data",
    "backend_for",
    "close_centrals",
    "configure",
    "current_settings",
    "get_central",
    "open_central",
    "open_device",
    "open_peripheral_device",
    "parse_link",
]


def backend_for(link: str | LinkSpec | None = None) -> tuple[type[BumbleScanner], type[BumbleClient]]:
    """Scanner and client backend classes bound to ``link`` (default: the configured link, read at call time).

    The same link always gives the same classes, so ``backend_id`` is stable.
    """
    spec = parse_link(link) if link is not None else current_settings().link
    return _bound(spec)


@cache
def _bound(spec: LinkSpec) -> tuple[type[BumbleScanner], type[BumbleClient]]:
    suffix = str(spec).replace(":", "_").replace(".", "_").replace("-", "_")
    scanner = type(f"BumbleScanner_{suffix}", (BumbleScanner,), {"link": spec, "__module__": __name__})
    client = type(f"BumbleClient_{suffix}", (BumbleClient,), {"link": spec, "__module__": __name__})
    return scanner, client
