"""A blood glucose meter (Glucose Service 1.0, 0x1808) with a record store behind the RACP.

* 0x2A18 Glucose Measurement and 0x2A34 Glucose Measurement Context, notify: sent live when the hub listens, and
  again for each record a RACP report selects.
* 0x2A51 Glucose Feature, read.
* 0x2A52 Record Access Control Point, write + indicate: report / delete / count stored records with the operators
  all, ≤, ≥, range (by sequence number), first, last; abort. The hub must have enabled RACP indications first
  (ATT error 0x81 otherwise) and may not start a second procedure while one runs (ATT error 0x80); only Abort may
  interrupt. Decisions come from :mod:`sim.devices.racp`, bytes from :mod:`protocols.gatt`.

Records are kept (bounded by ``memory_size``, oldest overwritten) whether or not a hub collected them, as real
meters do; only a RACP delete removes them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections import deque
from collections.abc import Callable, Iterable
from decimal import Decimal
from types import MappingProxyType

from bumble import att, gatt
from bumble.device import Connection, Device

from protocols.gatt.glucose import (
    CarbohydrateId,
    GlucoseFeature,
    GlucoseMeasurement,
    GlucoseMeasurementContext,
    GlucoseType,
    Meal,
    SampleLocation,
)
from protocols.gatt.racp import RacpOpCode, RacpResponse, RacpResponseCode
from protocols.ieee11073 import MderFloat
from sim.clock import Clock
from sim.devices import racp
from sim.devices.base import ATT_CCCD_IMPROPERLY_CONFIGURED, ATT_PROCEDURE_ALREADY_IN_PROGRESS, P, Produced, SimDevice
from sim.devices.options import DeviceOptions

#: GLS 1.0 §3.108 Glucose Feature bits used here: low battery detection (b0), multiple bond support (b10).
_FEATURE_LOW_BATTERY = 0x0001
_FEATURE_MULTIPLE_BOND = 0x0400
#: The meal contexts and carbohydrate sources a scenario may name (Glucose Measurement Context, GLS 1.0).
MEAL_CONTEXTS = ("preprandial", "postprandial", "fasting", "casual", "bedtime")
CARBOHYDRATES = ("breakfast", "lunch", "dinner", "snack", "drink", "supper", "brunch")
#: Battery level at or below which the sensor status annunciation reports "battery low".
_LOW_BATTERY = 10


@dataclasses.dataclass(frozen=True, slots=True)
class GlucoseRecord:
    """One stored reading: the measurement bytes and, when a meal context was given, the context bytes."""

    sequence: int
    measurement: bytes
    context: bytes | None
    produced: Produced


class _Procedure(enum.Enum):
    REPORT = "report"
    DELETE = "delete"


class GlucoseMeter(SimDevice):
    """A meter with strips; every reading gets a sequence number and stays in memory for RACP transfer.

    Args:
        options: product options (``memory_size`` bounds the record store).
        clock: the home clock.
        transfer_gap: seconds of the home clock between two records of a report (0: as fast as the link allows).
        erase_seconds: how long deleting records takes; an Abort during it is answered "abort unsuccessful".
    """

    KIND = "glucose"
    SERVICE_UUID = 0x1808
    MEASURE_FIELDS = MappingProxyType(
        {
            "mg_dl": ("number", True),
            "meal": (MEAL_CONTEXTS, False),
            "carbohydrate": (CARBOHYDRATES, False),
            "carbohydrate_g": ("number", False),
        }
    )

    def __init__(
        self,
        options: DeviceOptions,
        clock: Clock,
        *,
        transfer_gap: float = 0.0,
        erase_seconds: float = 0.0,
        on_produced: Callable[[Produced], None] | None = None,
    ) -> None:
        super().__init__(options, clock, on_produced=on_produced)
        self.records: deque[GlucoseRecord] = deque(maxlen=options.memory_size)
        self.transfer_gap = transfer_gap
        self.erase_seconds = erase_seconds
        self._next_sequence = 0
        self._procedure: _Procedure | None = None
        self._procedure_task: asyncio.Task[None] | None = None

    @property
    def sequences(self) -> list[int]:
        """Sequence numbers of the stored records, oldest first."""
        return [r.sequence for r in self.records]

    @property
    def procedure_running(self) -> bool:
        """Whether a RACP procedure is in progress."""
        return self._procedure is not None

    def profile_services(self, device: Device) -> Iterable[gatt.Service]:
        self.measurement_char = self.characteristic(device, 0x2A18, P.NOTIFY)
        self.context_char = self.characteristic(device, 0x2A34, P.NOTIFY)
        self.feature_char = self.characteristic(
            device, 0x2A51, P.READ, read=lambda _c: bytes(GlucoseFeature(self.features()))
        )
        self.racp_char = self.characteristic(device, 0x2A52, P.WRITE | P.INDICATE, write=self._on_racp_write)
        chars = [self.measurement_char, self.context_char, self.feature_char, self.racp_char]
        return [gatt.Service(gatt.GATT_GLUCOSE_SERVICE, chars)]

    def features(self) -> int:
        """The 0x2A51 feature bits."""
        bits = _FEATURE_LOW_BATTERY
        if self.options.max_bonds is None or self.options.max_bonds > 1:
            bits |= _FEATURE_MULTIPLE_BOND
        return bits

    async def measure(
        self,
        mg_dl: float,
        *,
        meal: str | None = None,
        carbohydrate: str | None = None,
        carbohydrate_g: float | None = None,
        control_solution: bool = False,
    ) -> Produced:
        """Take a capillary-plasma reading from the finger, store it, send it live if a hub listens, advertise.

        With ``control_solution`` it is a test of the meter and strips with control solution instead: sent as Type 10
        and Sample Location 4 ("control solution", GLS 1.0), as meters that recognise the solution do.
        """
        if not hasattr(self, "measurement_char"):
            raise RuntimeError(f"{self.id} is not attached to a link")
        sequence = self._next_sequence
        self._next_sequence = (self._next_sequence + 1) & 0xFFFF
        has_context = meal is not None or carbohydrate is not None
        status = 0x0001 if self.battery.level <= _LOW_BATTERY else None
        measurement = GlucoseMeasurement(
            sequence_number=sequence,
            base_time=self.device_datetime(),
            time_offset=0,
            concentration=_kg_per_l(mg_dl),
            type=GlucoseType.CONTROL_SOLUTION if control_solution else GlucoseType.CAPILLARY_PLASMA,
            sample_location=SampleLocation.CONTROL_SOLUTION if control_solution else SampleLocation.FINGER,
            sensor_status=status,
            context_follows=has_context,
        )
        context: bytes | None = None
        if has_context:
            context = bytes(
                GlucoseMeasurementContext(
                    sequence_number=sequence,
                    carbohydrate_id=None if carbohydrate is None else CarbohydrateId[carbohydrate.upper()],
                    # GLS carries carbohydrate in kg.
                    carbohydrate=(
                        None if carbohydrate is None else MderFloat.from_value(Decimal(str(carbohydrate_g or 0)) / 1000)
                    ),
                    meal=None if meal is None else Meal[meal.upper()],
                )
            )
        values: dict[str, float | int | str | bool] = {"mg_dl": mg_dl}
        if control_solution:
            values["control_solution"] = True
        if meal is not None:
            values["meal"] = meal
        if carbohydrate is not None:
            values["carbohydrate"] = carbohydrate
            values["carbohydrate_g"] = carbohydrate_g or 0
        raw = bytes(measurement)
        extra = {"2A34": context} if context is not None else {}
        produced = self.record_with_sequence(sequence, "2A18", values, raw, **extra)
        self.records.append(GlucoseRecord(sequence, raw, context, produced))
        await self._send_record(self.records[-1])
        self.wake()
        return produced

    async def _send_record(self, record: GlucoseRecord) -> bool:
        if not await self.notify(self.measurement_char, record.measurement):
            return False
        if record.context is not None:
            await self.notify(self.context_char, record.context)
        return True

    # ------------------------------------------------------------------ RACP

    def _on_racp_write(self, connection: Connection, value: bytes) -> None:
        if connection is not self._connection or not self.is_subscribed(self.racp_char, indicate=True):
            raise att.ATT_Error(ATT_CCCD_IMPROPERLY_CONFIGURED)
        decision = racp.evaluate(bytes(value), self.sequences)
        if self._procedure is not None and not isinstance(decision, racp.Abort):
            raise att.ATT_Error(ATT_PROCEDURE_ALREADY_IN_PROGRESS)
        if isinstance(decision, racp.Abort):
            self.spawn(self._abort(), name=f"{self.id}-racp-abort")
            return
        if isinstance(decision, racp.Selected) and decision.op_code in (
            racp.OpCode.REPORT_STORED_RECORDS,
            racp.OpCode.DELETE_STORED_RECORDS,
        ):
            self._procedure = (
                _Procedure.REPORT if decision.op_code == racp.OpCode.REPORT_STORED_RECORDS else _Procedure.DELETE
            )
        self._procedure_task = self.spawn(self._run(decision), name=f"{self.id}-racp")

    async def _respond(self, op_code: int, code: RacpResponseCode) -> None:
        # The procedure ends before its response leaves: the hub may write the next request at once.
        if op_code != RacpOpCode.ABORT_OPERATION:
            self._procedure = None
        await self.indicate(self.racp_char, bytes(RacpResponse.response(op_code, code)))

    async def _run(self, decision: racp.Decision) -> None:
        try:
            if isinstance(decision, racp.Rejected):
                await self._respond(decision.op_code, RacpResponseCode(decision.code))
            elif isinstance(decision, racp.Selected):
                if decision.op_code == racp.OpCode.REPORT_NUMBER_OF_STORED_RECORDS:
                    await self.indicate(self.racp_char, bytes(RacpResponse.count(len(decision.sequences))))
                elif not decision.sequences:
                    await self._respond(decision.op_code, RacpResponseCode.NO_RECORDS_FOUND)
                elif decision.op_code == racp.OpCode.REPORT_STORED_RECORDS:
                    await self._report(decision.sequences)
                else:
                    await self._delete(decision.sequences)
        finally:
            self._procedure = None
            self._procedure_task = None
            self._notify_changed()

    async def _report(self, sequences: tuple[int, ...]) -> None:
        wanted = set(sequences)
        for record in [r for r in self.records if r.sequence in wanted]:
            if not await self._send_record(record):
                await self._respond(RacpOpCode.REPORT_STORED_RECORDS, RacpResponseCode.PROCEDURE_NOT_COMPLETED)
                return
            await self.clock.sleep(self.transfer_gap)
        await self._respond(RacpOpCode.REPORT_STORED_RECORDS, RacpResponseCode.SUCCESS)

    async def _delete(self, sequences: tuple[int, ...]) -> None:
        await self.clock.sleep(self.erase_seconds)
        doomed = set(sequences)
        kept = [r for r in self.records if r.sequence not in doomed]
        self.records.clear()
        self.records.extend(kept)
        await self._respond(RacpOpCode.DELETE_STORED_RECORDS, RacpResponseCode.SUCCESS)

    async def _abort(self) -> None:
        if self._procedure is _Procedure.DELETE:
            await self._respond(RacpOpCode.ABORT_OPERATION, RacpResponseCode.ABORT_UNSUCCESSFUL)
            return
        task = self._procedure_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})
        await self._respond(RacpOpCode.ABORT_OPERATION, RacpResponseCode.SUCCESS)


def _kg_per_l(mg_dl: float) -> MderFloat:
    # mg/dL = kg/L x 10^5 (GLS 1.0 §3.106, gatt-formats.md): 142 mg/dL is sent as 142e-5 kg/L.
    return MderFloat.from_value(Decimal(str(mg_dl)) / Decimal(100_000))
