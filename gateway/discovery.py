"""How the hub scans for its provisioned devices: passively with BlueZ or_patterns where an advert can be recognised
by its own bytes, actively where it cannot.

BlueZ scans passively only through an advertisement monitor (``org.bluez.AdvertisementMonitor1``), and bleak's BlueZ
scanner refuses ``scanning_mode="passive"`` without ``bluez={"or_patterns": ...}``. An or_pattern is ``(start
position, AD type, content)`` and matches an advert that has an AD structure of that type holding `content` at
`start` (bluez ``doc/org.bluez.AdvertisementMonitor.rst``); bluetoothd's kernel takes at most 16 per monitor
(``HCI_MAX_ADV_MONITOR_NUM_PATTERNS``). A passive scan sends no scan request, so it hears the advertising PDU only,
never a scan response.

So the plan is passive only when every provisioned device is known to put its service UUID in the advertising PDU
itself; a device that does not (a pulse oximeter without any service UUID, a cuff that lists it in its scan response
only, Core Spec Supplement Part A 1.1) is matched by its address, and that needs an active scan with no UUID filter.
The plan is a pure function of the provisioned devices: the manager logs it at start and the bumble backend follows
the same rules (no scan response in passive mode), so the contract tests hold on both.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from bleak.args.bluez import BlueZScannerArgs, OrPattern
from bleak.assigned_numbers import AdvertisementDataType

from gateway.config import DeviceConfig, DeviceKind
from protocols.profiles import profile_of

__all__ = ["MAX_OR_PATTERNS", "ScanMode", "ScanPlan", "plan_scan"]

MAX_OR_PATTERNS = 16  # the kernel's HCI_MAX_ADV_MONITOR_NUM_PATTERNS: more and bluetoothd releases the monitor

# The service each kind advertises and whether devices of that kind sold today put it in the advertising PDU, where a
# passive scan can see it, are the kind's profile (``protocols.profiles``: ``service``, ``service_in_advert``).
# Oximeters often advertise no service UUID at all (BerryMed and its clones use a vendor service), and many cuffs list
# 0x1810 in the scan response only: both need an active scan.


class ScanMode(enum.StrEnum):
    PASSIVE = "passive"
    ACTIVE = "active"


@dataclass(frozen=True, slots=True)
class ScanPlan:
    """One scan for all provisioned devices: its mode, the or_patterns of a passive scan, and why it is active."""

    mode: ScanMode
    or_patterns: tuple[OrPattern, ...] = ()
    reason: str = ""

    def __post_init__(self) -> None:
        if self.mode is ScanMode.PASSIVE and not 0 < len(self.or_patterns) <= MAX_OR_PATTERNS:
            raise ValueError(f"a passive scan needs 1..{MAX_OR_PATTERNS} or_patterns, not {len(self.or_patterns)}")
        if self.mode is ScanMode.ACTIVE and self.or_patterns:
            raise ValueError("an active scan has no or_patterns")

    def bluez_args(self) -> BlueZScannerArgs:
        """The ``bluez=`` argument of ``BleakScanner`` (other backends ignore it)."""
        return {"or_patterns": list(self.or_patterns)} if self.mode is ScanMode.PASSIVE else {}

    def describe(self) -> str:
        if self.mode is ScanMode.ACTIVE:
            return f"active scan ({self.reason})"
        return f"passive scan with {len(self.or_patterns)} or_patterns"


def _le(service: uuid.UUID | int) -> bytes:
    """A service UUID as it is carried in AD structures: little-endian, 16-bit where it is a SIG one."""
    return service.to_bytes(2, "little") if isinstance(service, int) else service.bytes[::-1]


def _patterns(kind: DeviceKind) -> list[OrPattern]:
    """The or_patterns that recognise `kind`'s service in an advertising PDU.

    A service list holds several UUIDs; an or_pattern tests one position, so a 16-bit SIG service is matched first
    or second in the complete list (meters often list Device Information or Battery beside it) and first in an
    incomplete one. The pendant (carehub's own firmware) advertises its 128-bit UUID alone, in a complete list.
    """
    service = profile_of(kind).service
    if isinstance(service, uuid.UUID):
        return [OrPattern(0, AdvertisementDataType.COMPLETE_LIST_SERVICE_UUID128, _le(service))]
    short = _le(service)
    return [
        OrPattern(0, AdvertisementDataType.COMPLETE_LIST_SERVICE_UUID16, short),
        OrPattern(2, AdvertisementDataType.COMPLETE_LIST_SERVICE_UUID16, short),
        OrPattern(0, AdvertisementDataType.INCOMPLETE_LIST_SERVICE_UUID16, short),
    ]


def plan_scan(devices: Iterable[DeviceConfig]) -> ScanPlan:
    """The scan that finds every device in `devices`: passive with or_patterns when each kind can be recognised by
    its advertising PDU (and the patterns fit one monitor), else active."""
    kinds = sorted({d.kind for d in devices})
    if not kinds:
        return ScanPlan(ScanMode.ACTIVE, reason="nothing provisioned: strangers are only counted")
    unseen = [k for k in kinds if not profile_of(k).service_in_advert]
    if unseen:
        names = ", ".join(k.value for k in unseen)
        return ScanPlan(ScanMode.ACTIVE, reason=f"{names} may carry no service UUID in the advertising PDU")
    patterns = tuple(p for k in kinds for p in _patterns(k))
    if len(patterns) > MAX_OR_PATTERNS:
        return ScanPlan(ScanMode.ACTIVE, reason=f"{len(patterns)} or_patterns exceed one monitor's {MAX_OR_PATTERNS}")
    return ScanPlan(ScanMode.PASSIVE, patterns)
