"""Device profiles: one module per kind of device, registered in :mod:`protocols.profiles.registry`."""

from protocols.profiles.base import Channel, Delivery, DeviceProfile, SessionClock
from protocols.profiles.registry import (
    PROFILES,
    UnknownKindError,
    kind_of_service,
    profile_of,
    profile_of_characteristic,
)

__all__ = [
    "PROFILES",
    "Channel",
    "Delivery",
    "DeviceProfile",
    "SessionClock",
    "UnknownKindError",
    "kind_of_service",
    "profile_of",
    "profile_of_characteristic",
]
