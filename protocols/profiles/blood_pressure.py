"""Blood pressure cuffs (Blood Pressure Service, 0x1810)."""

from __future__ import annotations

from protocols import gatt
from protocols.devices import DeviceKind
from protocols.profiles.base import Channel, Delivery, DeviceProfile
from protocols.profiles.values import finite_values
from protocols.vitals import Vital, VitalReading

# Body movement (bit 0), cuff fit (bit 1) and improper measurement position (bit 5) make a cuff reading doubtful.
_DOUBTFUL_STATUS = 0x01 | 0x02 | 0x20


def observe(m: gatt.Measurement) -> VitalReading | None:
    """Systolic, diastolic, mean arterial pressure and pulse; the cuff's doubt bits make it unreliable."""
    if not isinstance(m, gatt.BloodPressureMeasurement):
        return None
    values = finite_values(
        {
            Vital.SYSTOLIC: m.systolic_mmhg,
            Vital.DIASTOLIC: m.diastolic_mmhg,
            Vital.MEAN_ARTERIAL: m.mean_arterial_mmhg,
            Vital.PULSE: m.pulse_rate_bpm,
        }
    )
    return VitalReading(values, bool((m.measurement_status or 0) & _DOUBTFUL_STATUS))


PROFILE = DeviceProfile(
    kind=DeviceKind.BLOOD_PRESSURE,
    label="Blood pressure cuff",
    service=0x1810,
    service_in_advert=False,  # many cuffs list 0x1810 in the scan response only
    channels=(Channel(gatt.BloodPressureMeasurement, Delivery.INDICATE),),
    needs_bond=True,
    instructions="Hold the cuff's Bluetooth (or START) button until 'P' blinks on the display.",
    test_prompt="Put the cuff on the resident's arm and press START; wait for the result.",
    sim_peripheral="sim.devices.blood_pressure:BloodPressureCuff",
    observe=observe,
)
