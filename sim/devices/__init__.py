"""Simulated BLE health meters and the panic pendant, as bumble GATT peripherals that behave like the products."""

from sim.devices.base import Produced, SimDevice
from sim.devices.blood_pressure import BloodPressureCuff
from sim.devices.glucose import GlucoseMeter
from sim.devices.options import DeviceOptions
from sim.devices.pendant import PATTERNS, Pattern, Pendant, Rejection, Shown
from sim.devices.vitals import HeartRateBand, PulseOximeter, Scale, Thermometer

__all__ = [
    "PATTERNS",
    "BloodPressureCuff",
    "DeviceOptions",
    "GlucoseMeter",
    "HeartRateBand",
    "Pattern",
    "Pendant",
    "Produced",
    "PulseOximeter",
    "Rejection",
    "Scale",
    "Shown",
    "SimDevice",
    "Thermometer",
]
