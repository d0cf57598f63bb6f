"""The simulator's side of the device-profile registry: each profile's peripheral resolves to a device of its kind."""

from __future__ import annotations

import pytest

from protocols.devices import DeviceKind
from protocols.profiles import profile_of
from sim.devices.base import SimDevice
from sim.devices.cgm import CgmSensor
from sim.devices.registry import peripheral_class
from sim.scenario import ScenarioError, parse_scenario


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


SCENARIO = """
[home]
name = "CGM wearer"
date = 2026-11-24
timezone = "UTC"
start = "06:00"
end = "08:00"

[[residents]]
id = "r1"
name = "Resident"

[[devices]]
id = "cgm-1"
kind = "cgm"
address = "C0:47:00:00:00:01"
name = "CGM"
resident = "r1"

[[timeline]]
at = "06:05"
device = "cgm-1"
kind = "measure"
mg_dl = 52
"""


def test_a_scenario_takes_a_cgm_with_the_fields_its_peripheral_declares() -> None:
    scenario = parse_scenario(SCENARIO)
    (device,) = scenario.devices
    assert device.kind is DeviceKind.CGM
    assert device.options.bonding_required  # its profile bonds
    (event,) = [s.event for s in scenario.schedule(None)]
    assert dict(event.values) == {"mg_dl": 52}
    with pytest.raises(ScenarioError, match="meal"):
        parse_scenario(SCENARIO + 'meal = "fasting"\n')  # a strip meter's field, not a CGM's
