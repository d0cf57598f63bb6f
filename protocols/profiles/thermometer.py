"""Thermometers (Health Thermometer Service, 0x1809)."""

from __future__ import annotations

from protocols import gatt
from protocols.devices import DeviceKind
from protocols.profiles.base import Channel, Delivery, DeviceProfile
from protocols.profiles.values import finite_values
from protocols.vitals import Vital, VitalReading


def observe(m: gatt.Measurement) -> VitalReading | None:
    """The temperature in °C."""
    if not isinstance(m, gatt.TemperatureMeasurement):
        return None
    return VitalReading(finite_values({Vital.TEMPERATURE: m.celsius}))


PROFILE = DeviceProfile(
    kind=DeviceKind.THERMOMETER,
    label="Thermometer",
    service=0x1809,
    service_in_advert=True,
    channels=(Channel(gatt.TemperatureMeasurement, Delivery.INDICATE),),
    needs_bond=False,
    instructions="Press the thermometer's button once; it advertises for a minute.",
    test_prompt="Take a temperature reading.",
    sim_peripheral="sim.devices.vitals:Thermometer",
    observe=observe,
)
