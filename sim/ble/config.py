"""Link selection: which simulated radio a process's bumble devices attach to.

A link is named by a URL-like string, parsed once into a :class:`LinkSpec`:

- ``local`` or ``local:<name>`` — a bumble ``LocalLink`` shared by every device in this process (one per name, per
  event loop, so tests running on separate loops never see each other's devices);
- ``tcp:<host>:<port>`` — a carehub relay (:mod:`sim.ble.relay`) reached over loopback TCP; every process that
  connects gets its own virtual controller in the relay, so separate OS processes share one radio.

The process-wide hub settings (link, the hub's own address, the bond key store path) come from
:func:`configure` or, when never configured, from ``CAREHUB_BLE_LINK``, ``CAREHUB_BLE_ADDRESS`` and
``CAREHUB_BLE_KEYSTORE``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

from sim.ble.errors import LinkConfigError

__all__ = [
    "DEFAULT_HUB_ADDRESS",
    "HubSettings",
    "LinkKind",
    "LinkSpec",
    "configure",
    "current_settings",
    "parse_link",
]

DEFAULT_HUB_ADDRESS = "C0:CA:4E:00:00:01"
_ADDRESS = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class LinkKind(Enum):
    """How controllers reach each other."""

    LOCAL = "local"
    TCP = "tcp"


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """A parsed link setting; ``str(spec)`` gives back the canonical URL."""

    kind: LinkKind
    name: str = "default"
    host: str = "127.0.0.1"
    port: int = 0

    def __post_init__(self) -> None:
        if self.kind is LinkKind.TCP and not 0 < self.port < 65536:
            raise LinkConfigError(f"tcp link needs a port in 1..65535, got {self.port}")
        if self.kind is LinkKind.LOCAL and not _NAME.match(self.name):
            raise LinkConfigError(f"local link name {self.name!r} must match {_NAME.pattern}")

    def __str__(self) -> str:
        if self.kind is LinkKind.LOCAL:
            return "local" if self.name == "default" else f"local:{self.name}"
        return f"tcp:{self.host}:{self.port}"


def parse_link(text: str | LinkSpec) -> LinkSpec:
    """Parse ``local``, ``local:<name>`` or ``tcp:<host>:<port>``.

    Raises:
        LinkConfigError: the text is none of those forms.
    """
    if isinstance(text, LinkSpec):
        return text
    scheme, _, rest = text.strip().partition(":")
    if scheme == "local":
        return LinkSpec(LinkKind.LOCAL, rest or "default")
    if scheme == "tcp":
        host, sep, port = rest.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise LinkConfigError(f"link {text!r}: expected tcp:<host>:<port>")
        return LinkSpec(LinkKind.TCP, host=host, port=int(port))
    raise LinkConfigError(f"link {text!r}: expected local, local:<name> or tcp:<host>:<port>")


def normalize_address(address: str) -> str:
    """Upper-case ``AA:BB:CC:DD:EE:FF``; anything else is a configuration error."""
    upper = address.strip().upper()
    if not _ADDRESS.match(upper):
        raise LinkConfigError(f"{address!r} is not a Bluetooth address (AA:BB:CC:DD:EE:FF)")
    return upper


@dataclass(frozen=True, slots=True)
class HubSettings:
    """What the hub's (central's) bumble device looks like in this process."""

    link: LinkSpec
    address: str = DEFAULT_HUB_ADDRESS
    keystore: Path | None = None


_configured: HubSettings | None = None


def configure(
    link: str | LinkSpec | None = None,
    *,
    address: str | None = None,
    keystore: str | Path | None = None,
) -> HubSettings:
    """Set the process-wide hub settings used by the default backend classes.

    Unset arguments keep their current value (from an earlier call or the environment).

    Args:
        link: ``local``, ``local:<name>`` or ``tcp:<host>:<port>``.
        address: the hub's static random address; stable so peripherals recognise their bond.
        keystore: JSON file holding bond keys, so bonds survive a restart (``None``: in memory only).

    Returns:
        The settings now in force.
    """
    global _configured  # noqa: PLW0603 - one process-wide setting, by design (bleak instantiates backends itself)
    base = current_settings()
    updated = replace(
        base,
        link=parse_link(link) if link is not None else base.link,
        address=normalize_address(address) if address is not None else base.address,
        keystore=Path(keystore) if keystore is not None else base.keystore,
    )
    _configured = updated
    return updated


def current_settings() -> HubSettings:
    """The settings from :func:`configure`, else from the ``CAREHUB_BLE_*`` environment variables."""
    if _configured is not None:
        return _configured
    keystore = os.environ.get("CAREHUB_BLE_KEYSTORE")
    return HubSettings(
        link=parse_link(os.environ.get("CAREHUB_BLE_LINK", "local")),
        address=normalize_address(os.environ.get("CAREHUB_BLE_ADDRESS", DEFAULT_HUB_ADDRESS)),
        keystore=Path(keystore) if keystore else None,
    )


def reset_configuration() -> None:
    """Forget :func:`configure` calls (tests); the environment applies again."""
    global _configured  # noqa: PLW0603 - see configure()
    _configured = None
