"""Continuous glucose monitors (CGM Service, 0x181F; issue 14 item 7): a sensor worn on the body that measures
interstitial glucose every few minutes (commonly 5), notifies each record while a hub listens and keeps the rest for
the Record Access Control Point, where CGMS filter type 0x01 is the time offset (minutes since the session start).

Its readings are their own vital, :attr:`Vital.CGM_GLUCOSE`, judged with the ``cgm.*`` thresholds (level 1 and 2
hypoglycaemia, ``protocols.thresholds``) rather than the strip meter's, and never by the strip meter's swing rule.
"""

from __future__ import annotations

from datetime import timedelta

from protocols import gatt
from protocols.devices import DeviceKind
from protocols.gatt.cgm import CgmMeasurement, CgmStatus
from protocols.profiles.base import Channel, Delivery, DeviceProfile, SessionClock
from protocols.profiles.values import finite_values
from protocols.vitals import Vital, VitalReading


def observe(m: gatt.Measurement) -> VitalReading | None:
    """The latest record's interstitial glucose in mg/dL; the sensor's doubt bits (session stopped, malfunction,
    calibration required, temperature, outside the device's range...) make it unreliable."""
    if not isinstance(m, CgmMeasurement):
        return None
    return VitalReading(finite_values({Vital.CGM_GLUCOSE: m.mg_dl}), m.doubtful)


def record_position(m: gatt.Measurement) -> int | None:
    """The latest record's time offset: the RACP filter value and the record's stable-id anchor."""
    return m.time_offset if isinstance(m, CgmMeasurement) else None


def minutes_now(value: bytes) -> int:
    """The CGM Status's time offset: how long the session has run, in minutes (raises DecodeError)."""
    return CgmStatus.from_bytes(value).time_offset


PROFILE = DeviceProfile(
    kind=DeviceKind.CGM,
    label="Continuous glucose monitor",
    service=0x181F,
    service_in_advert=True,
    channels=(Channel(CgmMeasurement, Delivery.NOTIFY),),
    needs_bond=True,  # sensors keep the session's data encrypted
    racp=True,
    record_position=record_position,
    instructions="Start the sensor's session in its app or reader first; the sensor then advertises every few "
    "minutes. Keep the phone's app closed while pairing.",
    test_prompt="Wait for the sensor's next reading (every 5 minutes).",
    silent_after=timedelta(
        hours=1
    ),  # a reading every 5 minutes: an hour without one is a sensor that fell off, ended its session or lost the link
    sim_peripheral="sim.devices.cgm:CgmSensor",
    observe=observe,
    # Records carry minutes since the session start, not a date: the hub reads CGM Status at each connection, so
    # the session started that many minutes before the read, and a record was taken its own offset after that.
    session_clock=SessionClock(CgmStatus.UUID, minutes_now, record_position),
)
