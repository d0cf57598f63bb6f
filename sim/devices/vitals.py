"""The other meters: pulse oximeter (0x1822), thermometer (0x1809), scale (0x181D), heart-rate band (0x180D).

Spot-check SpO2, temperature and weight are stored and indicated once a hub subscribes (dropped only after the ATT
confirmation); continuous SpO2 and heart rate are live notifications only. Bytes come from :mod:`protocols.gatt`.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType

from bumble import gatt
from bumble.device import Device

from protocols.gatt.heart_rate import HeartRateMeasurement
from protocols.gatt.plx import PlxContinuousMeasurement, PlxFeatures, PlxSpotCheckMeasurement, PlxSupportedFeatures
from protocols.gatt.thermometer import TemperatureMeasurement, TemperatureType
from protocols.gatt.weight import WeightMeasurement, WeightScaleFeature
from protocols.ieee11073 import MderFloat
from sim.devices.base import P, Produced, SimDevice, uuid16

_SITES = {
    "armpit": TemperatureType.ARMPIT,
    "body": TemperatureType.BODY,
    "ear": TemperatureType.EAR,
    "finger": TemperatureType.FINGER,
    "gi_tract": TemperatureType.GASTROINTESTINAL_TRACT,
    "mouth": TemperatureType.MOUTH,
    "rectum": TemperatureType.RECTUM,
    "toe": TemperatureType.TOE,
    "tympanum": TemperatureType.TYMPANUM,
}

PLX_MODES = ("spot", "continuous")
#: Weight resolution of the 0x2A9D field in SI units (WSS 1.0 §3.1): 0.005 kg.
_KG_STEP = 0.005
#: 0x2A9E: time stamp supported (b0); weight resolution 0.05 kg (value 4 in b3-6).
_SCALE_FEATURES = 0x01 | (4 << 3)


class _Attached(SimDevice):
    def _require(self, name: str) -> None:
        if not hasattr(self, name):
            raise RuntimeError(f"{self.id} is not attached to a link")


class PulseOximeter(_Attached):
    """A fingertip oximeter: spot-check readings stored and indicated; a live continuous stream while worn."""

    KIND = "oximeter"
    SERVICE_UUID = 0x1822
    MEASURE_FIELDS = MappingProxyType({"spo2": ("number", True), "pulse": ("number", True), "mode": (PLX_MODES, False)})

    def profile_services(self, device: Device) -> Iterable[gatt.Service]:
        self.spot_char = self.characteristic(device, 0x2A5E, P.INDICATE)
        self.continuous_char = self.characteristic(device, 0x2A5F, P.NOTIFY)
        features = PlxFeatures(
            int(PlxSupportedFeatures.SPOT_CHECK_MEASUREMENT_STORAGE | PlxSupportedFeatures.SPOT_CHECK_TIMESTAMP)
        )
        self.feature_char = self.characteristic(device, 0x2A60, P.READ, read=lambda _c: bytes(features))
        self.register_indicated(self.spot_char)
        chars = [self.spot_char, self.continuous_char, self.feature_char]
        return [gatt.Service(uuid16(0x1822), chars)]

    async def measure(self, spo2: float, pulse: float, *, mode: str = "spot") -> Produced:
        """A spot check (stored, indicated, advertised) or one continuous sample (notified if someone listens)."""
        self._require("spot_char")
        if mode == "continuous":
            raw = bytes(PlxContinuousMeasurement(MderFloat.from_value(spo2), MderFloat.from_value(pulse)))
            produced = self.record("2A5F", {"spo2": spo2, "pulse": pulse, "mode": mode}, raw)
            await self.notify(self.continuous_char, raw)
            return produced
        reading = PlxSpotCheckMeasurement(
            MderFloat.from_value(spo2), MderFloat.from_value(pulse), timestamp=self.device_datetime()
        )
        produced = self.record("2A5E", {"spo2": spo2, "pulse": pulse, "mode": mode}, bytes(reading))
        self.store_for_indication(self.spot_char, produced)
        self.wake()
        return produced


class Thermometer(_Attached):
    """A health thermometer: readings stored and indicated (Temperature Measurement 0x2A1C, FLOAT °C)."""

    KIND = "thermometer"
    SERVICE_UUID = 0x1809
    MEASURE_FIELDS = MappingProxyType({"celsius": ("number", True), "site": (tuple(_SITES), False)})

    def profile_services(self, device: Device) -> Iterable[gatt.Service]:
        self.measurement_char = self.characteristic(device, 0x2A1C, P.INDICATE)
        self.register_indicated(self.measurement_char)
        return [gatt.Service(gatt.GATT_HEALTH_THERMOMETER_SERVICE, [self.measurement_char])]

    async def measure(self, celsius: float, *, site: str | None = None) -> Produced:
        """Take a temperature, store it, advertise."""
        self._require("measurement_char")
        reading = TemperatureMeasurement(
            MderFloat.from_value(celsius, sfloat=False),
            timestamp=self.device_datetime(),
            temperature_type=None if site is None else _SITES[site],
        )
        values: dict[str, float | int | str | bool] = {"celsius": celsius}
        if site is not None:
            values["site"] = site
        produced = self.record("2A1C", values, bytes(reading))
        self.store_for_indication(self.measurement_char, produced)
        self.wake()
        return produced


class Scale(_Attached):
    """A bathroom scale: weights stored and indicated (Weight Measurement 0x2A9D, 0.005 kg steps)."""

    KIND = "scale"
    SERVICE_UUID = 0x181D
    MEASURE_FIELDS = MappingProxyType({"kg": ("number", True)})

    def profile_services(self, device: Device) -> Iterable[gatt.Service]:
        self.measurement_char = self.characteristic(device, 0x2A9D, P.INDICATE)
        self.feature_char = self.characteristic(
            device, 0x2A9E, P.READ, read=lambda _c: bytes(WeightScaleFeature(_SCALE_FEATURES))
        )
        self.register_indicated(self.measurement_char)
        return [gatt.Service(gatt.GATT_WEIGHT_SCALE_SERVICE, [self.measurement_char, self.feature_char])]

    async def measure(self, kg: float) -> Produced:
        """Weigh, store, advertise."""
        self._require("measurement_char")
        reading = WeightMeasurement(round(kg / _KG_STEP), timestamp=self.device_datetime())
        produced = self.record("2A9D", {"kg": kg}, bytes(reading))
        self.store_for_indication(self.measurement_char, produced)
        self.wake()
        return produced


class HeartRateBand(_Attached):
    """A heart-rate band in spot-check use: live notifications; a sample taken while no hub listens is held (the
    latest few, oldest dropped) and notified as soon as a hub subscribes, as spot-check bands do."""

    KIND = "heart_rate"
    SERVICE_UUID = 0x180D
    MEASURE_FIELDS = MappingProxyType({"bpm": ("number", True)})
    _HELD = 8

    def profile_services(self, device: Device) -> Iterable[gatt.Service]:
        self.measurement_char = self.characteristic(device, 0x2A37, P.NOTIFY)
        self._held: list[bytes] = []
        return [gatt.Service(gatt.GATT_HEART_RATE_SERVICE, [self.measurement_char])]

    async def measure(self, bpm: float) -> Produced:
        """One heart-rate sample, notified when a hub listens, otherwise held for the next subscriber."""
        self._require("measurement_char")
        raw = bytes(HeartRateMeasurement(round(bpm), sensor_contact=True))
        produced = self.record("2A37", {"bpm": bpm}, raw)
        if not await self.notify(self.measurement_char, raw):
            self._held = [*self._held, raw][-self._HELD :]
        self.wake()
        return produced

    def on_subscribed(self, characteristic: gatt.Characteristic[bytes], *, notify: bool, indicate: bool) -> None:
        """A hub subscribed: send what was held."""
        del indicate
        if notify and characteristic is getattr(self, "measurement_char", None) and self._held:
            held, self._held = self._held, []
            self.spawn(self._send_held(held), name=f"{self.id}-held")

    async def _send_held(self, held: list[bytes]) -> None:
        for raw in held:
            if not await self.notify(self.measurement_char, raw):
                self._held.append(raw)
