"""Meters that behave like shop meters the hub must cope with (issue 14, "a quirk zoo"), each by name.

Each quirk is a small subclass of a simulated product (:mod:`sim.devices.blood_pressure`, :mod:`sim.devices.glucose`)
that changes one behaviour, listed in :data:`QUIRKS` with what it imitates:

* ``clock-refusing-cuff``: a cuff that answers every Current Time write with ATT error 0x80 (an application error),
  as Omron cuffs do; its clock stays as it was;
* ``two-user-cuff``: a cuff with two user memories, each reading stamped with its User ID (0xFF when the user did not
  pick one); the sim's cuff already takes ``user_id`` per reading, this names the product;
* ``racp-not-completed``: a glucose meter that sends only the first ``records_per_report`` records a report selects
  and then answers "procedure not completed" (RACP 0x08);
* ``racp-silent``: a glucose meter that sends the first ``records_per_report`` records and then never answers;
* ``padding-cuff``: a cuff that pads every Blood Pressure Measurement indication with two zero bytes after its last
  field (the strict decoder refuses it; the hub's tolerant decoder accepts and flags it, issue 14 item 5);
* ``rfu-flags-cuff``: a cuff that sets the reserved flag bits 5-7 of every Blood Pressure Measurement;
* ``truncating-cuff``: a cuff whose measurement indications lose their last two bytes (the last field its flags
  promise): no decoder can read them, and the hub keeps them as raw readings;
* ``passkey-cuff``: a cuff with a display and no keyboard that bonds only by passkey entry with MITM protection
  (as the Accu-Chek Guide and many cuffs do): it shows a 6-digit PIN (:attr:`PasskeyCuff.passkey`) and refuses Just
  Works, so a hub that cannot type the PIN never bonds, and its encrypted attributes stay closed;
* ``uds-scale``: a family scale (Weight Scale plus User Data Service) that sends a registered user's weights only
  after the client wrote that user's consent code to the User Control Point, and answers a wrong code "user not
  authorized" (:mod:`sim.devices.uds_scale`);
* ``control-solution`` and ``clock-reset`` need no product of their own: any glucose meter takes
  ``measure(..., control_solution=True)``, and any meter's clock resets with ``change_battery()``; they are listed
  so a scenario can name them.

bumble ships profile classes for Battery, Device Information and Heart Rate only (``bumble.profiles``); none exists
for the Blood Pressure, Glucose or Current Time services, so these build on the simulator's own GATT servers.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping

from bumble import att
from bumble.device import Connection, Device
from bumble.pairing import PairingConfig, PairingDelegate

from protocols.gatt.racp import RacpOpCode, RacpResponseCode
from sim.clock import Clock
from sim.devices.base import ATT_PROCEDURE_ALREADY_IN_PROGRESS, Produced, SimDevice
from sim.devices.blood_pressure import BloodPressureCuff
from sim.devices.glucose import GlucoseMeter
from sim.devices.options import DeviceOptions
from sim.devices.uds_scale import UdsScale

__all__ = [
    "ATT_APPLICATION_ERROR",
    "QUIRKS",
    "ClockRefusingCuff",
    "PaddingCuff",
    "PasskeyCuff",
    "Quirk",
    "RacpNotCompletedMeter",
    "RacpSilentMeter",
    "RfuFlagsCuff",
    "TruncatingCuff",
    "TwoUserCuff",
]

#: The first application error code (Core Spec Vol 3 Part F 3.4.1.1), what Omron cuffs send on a clock write. The
#: Glucose Service uses the same number for "procedure already in progress".
ATT_APPLICATION_ERROR = ATT_PROCEDURE_ALREADY_IN_PROGRESS


class ClockRefusingCuff(BloodPressureCuff):
    """A cuff whose Current Time accepts reads but refuses every write with ATT 0x80."""

    refused_writes: int = 0

    def _write_current_time(self, _connection: Connection, value: bytes) -> None:
        del value
        self.refused_writes += 1
        raise att.ATT_Error(ATT_APPLICATION_ERROR)


class TwoUserCuff(BloodPressureCuff):
    """A cuff with two user memories: every reading names its user (1 or 2; 0xFF when nobody was picked)."""

    async def measure_as(self, user_id: int, systolic: float, diastolic: float, pulse: float | None = None) -> Produced:
        """A reading of user `user_id`."""
        return await self.measure(systolic, diastolic, pulse, user_id=user_id)


_BP_MEASUREMENT = "2A35"


class _MangledCuff(BloodPressureCuff):
    """A cuff whose Blood Pressure Measurement bytes are changed (by :meth:`mangle`) before they are logged and sent:
    the ground-truth log's ``raw`` is what the cuff sends."""

    def mangle(self, raw: bytes) -> bytes:
        """The bytes the cuff sends for a measurement whose correct encoding is ``raw``."""
        raise NotImplementedError

    def record(self, uuid: str, values: Mapping[str, float | int | str | bool], raw: bytes, **extra: bytes) -> Produced:
        """Log (and then send) the mangled bytes of a measurement."""
        return super().record(uuid, values, self.mangle(raw) if uuid == _BP_MEASUREMENT else raw, **extra)


class PaddingCuff(_MangledCuff):
    """A cuff that appends `padding` (two zero bytes) to every measurement indication."""

    padding: bytes = b"\x00\x00"

    def mangle(self, raw: bytes) -> bytes:
        """The measurement with the padding after its last field."""
        return raw + self.padding


class RfuFlagsCuff(_MangledCuff):
    """A cuff that sets reserved flag bits (`rfu_bits`, bits 5-7 of the Flags byte) on every measurement."""

    rfu_bits: int = 0xE0

    def mangle(self, raw: bytes) -> bytes:
        """The measurement with the reserved flag bits set."""
        return bytes([raw[0] | self.rfu_bits]) + raw[1:]


class TruncatingCuff(_MangledCuff):
    """A cuff whose measurement indications lose their last `cut` bytes, so that the fields its flags promise are
    missing: such a value cannot be decoded at all."""

    cut: int = 2

    def mangle(self, raw: bytes) -> bytes:
        """The measurement without its last bytes."""
        return raw[: -self.cut]


class RacpNotCompletedMeter(GlucoseMeter):
    """A meter that sends the first `records_per_report` selected records, then answers 0x08."""

    def __init__(self, options: DeviceOptions, clock: Clock, *, records_per_report: int = 2) -> None:
        super().__init__(options, clock)
        if records_per_report < 0:
            raise ValueError("records_per_report must not be negative")
        self.records_per_report = records_per_report

    async def _report(self, sequences: tuple[int, ...]) -> None:
        wanted = set(sequences[: self.records_per_report])
        for record in [r for r in self.records if r.sequence in wanted]:
            await self._send_record(record)
        await self._respond(RacpOpCode.REPORT_STORED_RECORDS, RacpResponseCode.PROCEDURE_NOT_COMPLETED)


class RacpSilentMeter(GlucoseMeter):
    """A meter that sends the first `records_per_report` selected records and then never answers the report."""

    def __init__(self, options: DeviceOptions, clock: Clock, *, records_per_report: int = 2) -> None:
        super().__init__(options, clock)
        if records_per_report < 0:
            raise ValueError("records_per_report must not be negative")
        self.records_per_report = records_per_report
        self.reports = 0

    async def _report(self, sequences: tuple[int, ...]) -> None:
        self.reports += 1
        wanted = set(sequences[: self.records_per_report])
        for record in [r for r in self.records if r.sequence in wanted]:
            await self._send_record(record)
        self._procedure = None  # ready for the next request, but this one is never answered


class _ShowsPasskey(PairingDelegate):
    """A display-only meter's side of SMP: it shows its passkey and refuses Just Works (no MITM protection)."""

    def __init__(self, cuff: PasskeyCuff, connection: Connection) -> None:
        super().__init__(io_capability=PairingDelegate.IoCapability.DISPLAY_OUTPUT_ONLY)
        self._cuff = cuff
        self._connection = connection

    async def accept(self) -> bool:
        return self._cuff.may_bond(str(self._connection.peer_address))

    async def generate_passkey(self) -> int:
        return self._cuff.passkey

    async def display_number(self, number: int, digits: int) -> None:
        del digits
        self._cuff.shown.append(number)

    async def confirm(self, auto: bool = False) -> bool:
        del auto
        return False  # Just Works: keys without MITM protection, which this meter will not bond with


class PasskeyCuff(BloodPressureCuff):
    """A cuff that bonds only by passkey entry: it shows `passkey` (six digits; by default the last three bytes of
    its address, modulo 10^6) on its display, listed in `shown` each time, and needs a bond for every attribute."""

    def __init__(self, options: DeviceOptions, clock: Clock, *, passkey: int | None = None) -> None:
        super().__init__(dataclasses.replace(options, bonding_required=True), clock)
        default = int(options.address.replace(":", "")[-6:], 16) % 1_000_000
        self.passkey = default if passkey is None else passkey
        if not 0 <= self.passkey < 1_000_000:
            raise ValueError("a passkey has six digits")
        self.shown: list[int] = []

    @contextlib.asynccontextmanager
    async def attach(self, device: Device) -> AsyncIterator[SimDevice]:
        """Attach as any cuff, then pair only by passkey entry."""
        async with super().attach(device) as attached:
            device.pairing_config_factory = lambda connection: PairingConfig(
                sc=True, mitm=True, bonding=True, delegate=_ShowsPasskey(self, connection)
            )
            yield attached


@dataclasses.dataclass(frozen=True, slots=True)
class Quirk:
    """A named quirk: what it imitates and how to build a meter that has it."""

    name: str
    imitates: str
    build: Callable[[DeviceOptions, Clock], SimDevice]


QUIRKS: dict[str, Quirk] = {
    q.name: q
    for q in (
        Quirk("clock-refusing-cuff", "Omron cuffs: ATT 0x80 on a Current Time write", ClockRefusingCuff),
        Quirk("two-user-cuff", "two-user cuffs: a User ID on every reading, 0xFF for nobody picked", TwoUserCuff),
        Quirk("racp-not-completed", "a RACP report cut short with 0x08", RacpNotCompletedMeter),
        Quirk("racp-silent", "a RACP report that is never answered", RacpSilentMeter),
        Quirk(
            "padding-cuff", "cuffs padding their indication with 2 bytes (Nordic's libraries accept it)", PaddingCuff
        ),
        Quirk("rfu-flags-cuff", "cuffs setting reserved flag bits on their measurements", RfuFlagsCuff),
        Quirk("truncating-cuff", "a measurement cut short: undecodable, kept as a raw reading", TruncatingCuff),
        Quirk("passkey-cuff", "meters that show a 6-digit PIN and bond only by passkey entry", PasskeyCuff),
        Quirk("uds-scale", "family scales that send a user's weights only after that user's consent (UDS)", UdsScale),
        Quirk("control-solution", "a control-solution test (type 10, location 4)", GlucoseMeter),
        Quirk("clock-reset", "a clock back at its factory default after a battery change", GlucoseMeter),
    )
}
