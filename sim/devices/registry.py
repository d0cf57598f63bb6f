"""The simulator's side of the device-profile registry: each kind's peripheral class, named by its profile
(``protocols.profiles``: ``sim_peripheral = "module:Class"``) and resolved here, so ``protocols`` never imports
``sim``."""

from __future__ import annotations

import functools
import importlib

from protocols.devices import DeviceKind
from protocols.profiles import profile_of
from sim.devices.base import SimDevice

__all__ = ["peripheral_class"]


@functools.cache
def peripheral_class(kind: DeviceKind) -> type[SimDevice]:
    """The simulated peripheral of `kind`.

    Raises:
        TypeError: the profile names something that is not a :class:`SimDevice` of that kind.
    """
    module, _, name = profile_of(kind).sim_peripheral.partition(":")
    found = getattr(importlib.import_module(module), name, None)
    if not (isinstance(found, type) and issubclass(found, SimDevice)) or kind.value != found.KIND:
        raise TypeError(f"{kind}: {profile_of(kind).sim_peripheral} is not a {kind.value} SimDevice")
    return found
