"""A blood pressure cuff (Blood Pressure Service 1.0, 0x1810).

* 0x2A35 Blood Pressure Measurement, indicate: every measurement is stored first and indicated once a hub has
  subscribed; it leaves memory only when the ATT confirmation arrived.
* 0x2A36 Intermediate Cuff Pressure, notify: the falling cuff pressure while a measurement runs, when subscribed.
* 0x2A49 Blood Pressure Feature, read.

Bytes come from :mod:`protocols.gatt.bp`.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType

from bumble import gatt
from bumble.device import Device

from protocols.gatt.bp import (
    BloodPressureFeature,
    BloodPressureFeatureBits,
    BloodPressureMeasurement,
    BpMeasurementStatus,
    IntermediateCuffPressure,
)
from protocols.ieee11073 import MderFloat
from sim.devices.base import P, Produced, SimDevice


class BloodPressureCuff(SimDevice):
    """An upper-arm cuff that keeps readings until a bonded hub collects them."""

    KIND = "blood_pressure"
    SERVICE_UUID = 0x1810
    MEASURE_FIELDS = MappingProxyType(
        {
            "systolic": ("number", True),
            "diastolic": ("number", True),
            "mean_arterial": ("number", False),
            "pulse": ("number", False),
            "irregular_pulse": ("bool", False),
            "body_movement": ("bool", False),
        }
    )

    #: Body movement and irregular pulse detection (BLS 1.0 §3.3); multiple bonds unless limited to one central.
    def features(self) -> int:
        """The 0x2A49 feature bits this cuff reports."""
        bits = BloodPressureFeatureBits.BODY_MOVEMENT_DETECTION | BloodPressureFeatureBits.IRREGULAR_PULSE_DETECTION
        if self.options.max_bonds is None or self.options.max_bonds > 1:
            bits |= BloodPressureFeatureBits.MULTIPLE_BONDS
        return int(bits)

    def profile_services(self, device: Device) -> Iterable[gatt.Service]:
        self.measurement_char = self.characteristic(device, 0x2A35, P.INDICATE)
        self.cuff_char = self.characteristic(device, 0x2A36, P.NOTIFY)
        self.feature_char = self.characteristic(
            device, 0x2A49, P.READ, read=lambda _c: bytes(BloodPressureFeature(self.features()))
        )
        return [
            gatt.Service(gatt.GATT_BLOOD_PRESSURE_SERVICE, [self.measurement_char, self.cuff_char, self.feature_char])
        ]

    async def measure(
        self,
        systolic: float,
        diastolic: float,
        pulse: float | None = None,
        mean_arterial: float | None = None,
        *,
        irregular_pulse: bool = False,
        body_movement: bool = False,
        user_id: int | None = None,
    ) -> Produced:
        """Take a reading: inflate/deflate (cuff pressure notifications), store it, wake up and advertise.

        ``user_id`` is the User ID a multi-user cuff stamps on the reading (0xFF: the unknown user); None sends none.
        """
        if user_id is not None and not 0 <= user_id <= 0xFF:
            raise ValueError(f"user_id {user_id} is not a uint8")
        if not hasattr(self, "measurement_char"):
            raise RuntimeError(f"{self.id} is not attached to a link")
        for pressure in (systolic + 30, (systolic + diastolic) / 2, diastolic):
            await self.notify(self.cuff_char, bytes(IntermediateCuffPressure(MderFloat.from_value(round(pressure)))))
        mean = mean_arterial if mean_arterial is not None else diastolic + (systolic - diastolic) / 3
        status = 0
        if irregular_pulse:
            status |= BpMeasurementStatus.IRREGULAR_PULSE
        if body_movement:
            status |= BpMeasurementStatus.BODY_MOVEMENT
        reading = BloodPressureMeasurement(
            systolic=MderFloat.from_value(systolic),
            diastolic=MderFloat.from_value(diastolic),
            mean_arterial=MderFloat.from_value(round(mean, 1)),
            timestamp=self.device_datetime(),
            pulse_rate=None if pulse is None else MderFloat.from_value(pulse),
            user_id=user_id,
            measurement_status=int(status),
        )
        values: dict[str, float | int | str | bool] = {"systolic": systolic, "diastolic": diastolic}
        if pulse is not None:
            values["pulse"] = pulse
        values["mean_arterial"] = float(MderFloat.from_value(round(mean, 1)))
        values["irregular_pulse"] = irregular_pulse
        values["body_movement"] = body_movement
        if user_id is not None:
            values["user_id"] = user_id
        produced = self.record("2A35", values, bytes(reading))
        self.store_for_indication(self.measurement_char, produced)
        self.wake()
        return produced
