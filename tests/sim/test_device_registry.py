"""The simulator's side of the device-profile registry: each profile's peripheral resolves to a device of its kind."""

from __future__ import annotations

import pytest

from protocols.devices import DeviceKind
from protocols.profiles import profile_of
from sim.devices.base import SimDevice
from sim.devices.cgm import CgmSensor
from sim.devices.registry import peripheral_class


@pytest.mark.parametrize("kind", list(DeviceKind), ids=str)
def test_every_kind_has_its_peripheral(kind: DeviceKind) -> None:
    cls = peripheral_class(kind)
    assert issubclass(cls, SimDevice)
    assert kind.value == cls.KIND
    service = profile_of(kind).service
    if isinstance(service, int):
        assert service == cls.SERVICE_UUID  # what it advertises is what its profile says identifies it


def test_the_cgm_is_registered_through_its_profile() -> None:
    assert peripheral_class(DeviceKind.CGM) is CgmSensor
