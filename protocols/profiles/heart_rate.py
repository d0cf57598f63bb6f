"""Heart-rate bands (Heart Rate Service, 0x180D): live notifications."""

from __future__ import annotations

from datetime import timedelta

from protocols import gatt
from protocols.devices import DeviceKind
from protocols.profiles.base import Channel, Delivery, DeviceProfile
from protocols.profiles.values import finite_values
from protocols.vitals import Vital, VitalReading


def observe(m: gatt.Measurement) -> VitalReading | None:
    """The pulse; lost skin contact makes it unreliable."""
    if not isinstance(m, gatt.HeartRateMeasurement):
        return None
    return VitalReading(finite_values({Vital.PULSE: m.bpm}), bool(m.skin_contact_lost))


PROFILE = DeviceProfile(
    kind=DeviceKind.HEART_RATE,
    label="Heart-rate band",
    service=0x180D,
    service_in_advert=True,
    channels=(Channel(gatt.HeartRateMeasurement, Delivery.NOTIFY),),
    needs_bond=False,
    instructions="Put the band on (the contacts must be moist); it advertises while it sees a pulse.",
    test_prompt="Put the band on and wait for a pulse.",
    silent_after=timedelta(days=2),  # worn on some days only
    sim_peripheral="sim.devices.vitals:HeartRateBand",
    observe=observe,
)
