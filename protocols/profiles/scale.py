"""Bathroom scales (Weight Scale Service, 0x181D)."""

from __future__ import annotations

from protocols import gatt
from protocols.devices import DeviceKind
from protocols.profiles.base import Channel, Delivery, DeviceProfile
from protocols.profiles.values import finite_values
from protocols.vitals import Vital, VitalReading


def observe(m: gatt.Measurement) -> VitalReading | None:
    """The weight in kg (lb converted)."""
    if not isinstance(m, gatt.WeightMeasurement):
        return None
    return VitalReading(finite_values({Vital.WEIGHT: m.kg}))


PROFILE = DeviceProfile(
    kind=DeviceKind.SCALE,
    label="Scale",
    service=0x181D,
    service_in_advert=True,
    channels=(Channel(gatt.WeightMeasurement, Delivery.INDICATE),),
    needs_bond=False,
    instructions="Step on the scale and off again; it advertises while the weight is shown.",
    test_prompt="Ask the resident to step on the scale.",
    sim_peripheral="sim.devices.vitals:Scale",
    observe=observe,
)
