"""The device-profile registry: every kind of device carehub knows, registered in one place.

A new kind is one profile module (a :class:`~protocols.profiles.base.DeviceProfile` named ``PROFILE``) listed in
:data:`_MODULES`, plus its :class:`~protocols.devices.DeviceKind` word, its codec in ``protocols.gatt`` and its
simulated peripheral in ``sim.devices``. The hub (BLE sessions, discovery, observations, provisioning, the
installation test) and the simulator (``sim.devices.registry``) look kinds up here instead of switching on them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from protocols.devices import DeviceKind
from protocols.gatt.common import Measurement
from protocols.profiles.base import DeviceProfile

__all__ = ["PROFILES", "UnknownKindError", "kind_of_service", "profile_of", "profile_of_characteristic"]

_MODULES: Final = (
    "blood_pressure",
    "glucose",
    "oximeter",
    "thermometer",
    "scale",
    "heart_rate",
    "pendant",
    "cgm",
)


class UnknownKindError(LookupError):
    """A kind with no registered profile."""


def _load() -> dict[DeviceKind, DeviceProfile]:
    profiles: dict[DeviceKind, DeviceProfile] = {}
    for name in _MODULES:
        profile = importlib.import_module(f"protocols.profiles.{name}").PROFILE
        if not isinstance(profile, DeviceProfile):
            raise TypeError(f"protocols.profiles.{name}.PROFILE is not a DeviceProfile")
        if profile.kind in profiles:
            raise ValueError(f"two profiles for {profile.kind}")
        profiles[profile.kind] = profile
    missing = set(DeviceKind) - set(profiles)
    if missing:
        raise ValueError(f"no profile for {sorted(missing)}")
    return profiles


PROFILES: Final[Mapping[DeviceKind, DeviceProfile]] = MappingProxyType(_load())
"""Every registered profile, by kind."""

_BY_SERVICE: Final = {p.service_uuid: p.kind for p in PROFILES.values()}
_BY_CHARACTERISTIC: Final = {c.uuid: p for p in PROFILES.values() for c in p.channels}


def profile_of(kind: DeviceKind) -> DeviceProfile:
    """The profile of `kind`.

    Raises:
        UnknownKindError: no profile is registered for it.
    """
    try:
        return PROFILES[kind]
    except KeyError:
        raise UnknownKindError(str(kind)) from None


def kind_of_service(service_uuid: str) -> DeviceKind | None:
    """The kind whose identifying service is `service_uuid` (a 128-bit UUID string, any case), if any."""
    return _BY_SERVICE.get(service_uuid.lower())


def profile_of_characteristic(measurement: Measurement | type[Measurement]) -> DeviceProfile | None:
    """The profile that subscribes to the characteristic of `measurement` (None for a shared one, e.g. battery)."""
    return _BY_CHARACTERISTIC.get(measurement.UUID)
