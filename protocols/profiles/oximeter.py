"""Pulse oximeters (Pulse Oximeter Service, 0x1822): spot checks indicated, continuous samples notified."""

from __future__ import annotations

from protocols import gatt
from protocols.devices import DeviceKind
from protocols.profiles.base import Channel, Delivery, DeviceProfile
from protocols.profiles.values import finite_values
from protocols.vitals import Vital, VitalReading


def observe(m: gatt.Measurement) -> VitalReading | None:
    """SpO2 and pulse; the oximeter's own status bits say when it is unreliable."""
    if not isinstance(m, gatt.PlxSpotCheckMeasurement | gatt.PlxContinuousMeasurement):
        return None
    return VitalReading(finite_values({Vital.SPO2: m.spo2_percent, Vital.PULSE: m.pulse_bpm}), m.is_unreliable)


PROFILE = DeviceProfile(
    kind=DeviceKind.OXIMETER,
    label="Pulse oximeter",
    service=0x1822,
    service_in_advert=False,  # BerryMed and its clones advertise a vendor service, or none
    channels=(
        Channel(gatt.PlxSpotCheckMeasurement, Delivery.INDICATE),
        Channel(gatt.PlxContinuousMeasurement, Delivery.NOTIFY),
    ),
    needs_bond=False,
    instructions="Put the oximeter on a finger; it advertises while it measures.",
    test_prompt="Put the oximeter on a finger and wait for the reading.",
    sim_peripheral="sim.devices.vitals:PulseOximeter",
    observe=observe,
)
