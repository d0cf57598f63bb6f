"""Blood glucose meters (Glucose Service, 0x1808): strip readings, stored and read through the RACP."""

from __future__ import annotations

from protocols import gatt
from protocols.devices import DeviceKind
from protocols.profiles.base import Channel, Delivery, DeviceProfile
from protocols.profiles.values import finite_values
from protocols.vitals import Vital, VitalReading

_BATTERY_LOW = 0x0001  # the one Sensor Status Annunciation bit that does not put the value in doubt


def observe(m: gatt.Measurement) -> VitalReading | None:
    """The glucose in mg/dL; out of the device's range or any sensor status but "battery low" is unreliable."""
    if not isinstance(m, gatt.GlucoseMeasurement):
        return None
    doubtful = bool(m.out_of_device_range) or bool((m.sensor_status or 0) & ~_BATTERY_LOW)
    return VitalReading(finite_values({Vital.GLUCOSE: m.mg_dl}), doubtful)


def record_position(m: gatt.Measurement) -> int | None:
    """The meter's record sequence number (measurement and context carry the same one)."""
    sequence = getattr(m, "sequence_number", None)
    return sequence if isinstance(sequence, int) else None


PROFILE = DeviceProfile(
    kind=DeviceKind.GLUCOSE,
    label="Blood glucose meter",
    service=0x1808,
    service_in_advert=True,
    channels=(
        Channel(gatt.GlucoseMeasurement, Delivery.NOTIFY),
        Channel(gatt.GlucoseMeasurementContext, Delivery.NOTIFY),
    ),
    needs_bond=True,
    racp=True,
    record_position=record_position,
    instructions="Turn the meter on with a strip-less press of its main button and hold it until the "
    "Bluetooth symbol blinks.",
    test_prompt="Take a test reading with a control-solution strip (not the resident's blood).",
    sim_peripheral="sim.devices.glucose:GlucoseMeter",
    observe=observe,
)
