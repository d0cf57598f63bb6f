"""A continuous glucose monitor (CGM Service, 0x181F; issue 14 item 7), on the glucose meter's record store.

* 0x2AA7 CGM Measurement, notify: one record per measurement (glucose in mg/dL, the time offset in minutes since
  the session started, the warning octet when the value is below the sensor's hypo level), sent live when a hub
  listens and kept for the RACP.
* 0x2AA8 CGM Feature, 0x2AA9 CGM Status, 0x2AAA Session Start Time, 0x2AAB Session Run Time: read.
* 0x2A52 Record Access Control Point: the glucose meter's (:mod:`sim.devices.glucose`), with CGMS filter type 0x01
  meaning the time offset, which is each record's key here.
* 0x2AAC Specific Ops Control Point: answers every op code with "op code not supported" (the sensor's session is
  started by its own app), a response the hub never asks for.

Bytes come from :mod:`protocols.gatt.cgm`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from types import MappingProxyType

from bumble import gatt
from bumble.device import Connection, Device

from protocols.gatt.cgm import (
    CgmAnnunciation,
    CgmFeature,
    CgmFeatureBits,
    CgmMeasurement,
    CgmOpCode,
    CgmResponseCode,
    CgmSessionRunTime,
    CgmSessionStartTime,
    CgmSpecificOpsControlPoint,
    CgmStatus,
)
from sim.clock import Clock
from sim.devices.base import P, Produced, uuid16
from sim.devices.glucose import GlucoseMeter, GlucoseRecord
from sim.devices.options import DeviceOptions

#: The sensor's own hypo alert level (mg/dL): below it the record carries the "below hypo level" warning octet.
HYPO_LEVEL = 70
_FEATURES = CgmFeatureBits.HYPO_ALERTS | CgmFeatureBits.LOW_BATTERY_DETECTION | CgmFeatureBits.E2E_CRC
_SESSION_HOURS = 14 * 24


class CgmSensor(GlucoseMeter):
    """A sensor whose session starts when it is attached; each :meth:`measure` is one record (every 5 minutes on a
    real sensor). Records carry the E2E-CRC, as the CGM Feature says."""

    KIND = "cgm"
    SERVICE_UUID = 0x181F
    MEASURE_FIELDS = MappingProxyType({"mg_dl": ("number", True)})

    def __init__(
        self,
        options: DeviceOptions,
        clock: Clock,
        *,
        on_produced: Callable[[Produced], None] | None = None,
        **racp: float,
    ) -> None:
        super().__init__(options, clock, on_produced=on_produced, **racp)
        self._session_start = self.device_datetime()
        self._session_mono = clock.monotonic()

    def profile_services(self, device: Device) -> Iterable[gatt.Service]:
        self._session_start = self.device_datetime()
        self._session_mono = self.clock.monotonic()
        self.measurement_char = self.characteristic(device, 0x2AA7, P.NOTIFY)
        self.context_char = self.measurement_char  # no context: GlucoseRecord.context stays None
        feature = CgmFeature(int(_FEATURES), 9, 0)  # interstitial fluid
        chars = [
            self.measurement_char,
            self.characteristic(device, 0x2AA8, P.READ, read=lambda _c: bytes(feature)),
            self.characteristic(device, 0x2AA9, P.READ, read=lambda _c: bytes(self._status())),
            self.characteristic(
                device, 0x2AAA, P.READ, read=lambda _c: bytes(CgmSessionStartTime(self._session_start, e2e_crc=True))
            ),
            self.characteristic(
                device, 0x2AAB, P.READ, read=lambda _c: bytes(CgmSessionRunTime(_SESSION_HOURS, e2e_crc=True))
            ),
        ]
        self.racp_char = self.characteristic(device, 0x2A52, P.WRITE | P.INDICATE, write=self._on_racp_write)
        self.socp_char = self.characteristic(device, 0x2AAC, P.WRITE | P.INDICATE, write=self._on_socp_write)
        return [gatt.Service(uuid16(0x181F), [*chars, self.racp_char, self.socp_char])]

    def _minutes(self) -> int:
        elapsed = timedelta(seconds=self.clock.monotonic() - self._session_mono)
        return max(0, int(elapsed.total_seconds() // 60)) & 0xFFFF

    def _status(self) -> CgmStatus:
        low = CgmAnnunciation.DEVICE_BATTERY_LOW if self.battery.level <= 10 else 0
        return CgmStatus(self._minutes(), int(low), e2e_crc=True)

    def _on_socp_write(self, _connection: Connection, value: bytes) -> None:
        op = value[0] if value and value[0] in {int(o) for o in CgmOpCode} else 0
        answer = CgmSpecificOpsControlPoint.response(
            CgmOpCode(op) if op else CgmOpCode.RESPONSE_CODE, CgmResponseCode.OP_CODE_NOT_SUPPORTED, e2e_crc=True
        )
        self.spawn(self._answer_socp(bytes(answer)), name=f"{self.id}-socp")

    async def _answer_socp(self, answer: bytes) -> None:
        await self.indicate(self.socp_char, answer)

    async def measure(self, mg_dl: float, *, time_offset: int | None = None) -> Produced:  # type: ignore[override]
        """One sensor reading (mg/dL), stamped with its minutes since the session started (or `time_offset`)."""
        if not hasattr(self, "measurement_char"):
            raise RuntimeError(f"{self.id} is not attached to a link")
        offset = self._minutes() if time_offset is None else time_offset
        if any(r.sequence == offset for r in self.records):
            raise ValueError(f"{self.id}: a record at time offset {offset} exists (one reading per minute at most)")
        warning = int(CgmAnnunciation.BELOW_HYPO) >> 16 if mg_dl < HYPO_LEVEL else None
        raw = bytes(CgmMeasurement.of(mg_dl, offset, warning=warning, e2e_crc=True))
        produced = self.record_with_sequence(offset, "2AA7", {"mg_dl": mg_dl, "time_offset": offset}, raw)
        self.records.append(GlucoseRecord(offset, raw, None, produced))
        await self._send_record(self.records[-1])
        self.wake()
        return produced
