"""What a BLE session reports besides readings -> device-status records (``docs/protocol.md`` §3.4).

:func:`report` turns each :data:`gateway.events.DeviceReport` into a routine-lane ``device_status`` draft whose id
the sealer derives from the record's own sequence number (§3.7), so reports of one device in one session, and
reports after a restart, never share an id. A battery level is also handed to the rules (a low pendant battery is
an alarm). A battery level outside 0..100 is recorded as misbehaviour, not as a battery level. Every variant
becomes a record; mypy checks that the match is exhaustive.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import assert_never

from gateway.core.sealer import Draft
from gateway.events import (
    BatteryLevel,
    ClockCorrected,
    DeviceReport,
    ErrorClass,
    LinkDown,
    LinkFailed,
    LinkUp,
    Misbehaviour,
)
from gateway.observations import Observation, Vital
from gateway.outbox_rows import Lane
from protocols.record import MAX_RAW_BYTES, ClockCorrection, DeviceStatusBody, LinkFailure, LinkState

__all__ = ["Reported", "link_failure", "report"]

_DETAIL_MAX = 256  # protocols.record's text limit for `detail`


@dataclass(frozen=True, slots=True)
class Reported:
    """A report's record draft, and the battery observation for the rules, if it carried a level."""

    draft: Draft
    battery: Observation | None = None
    misbehaviour: bool = False


def link_failure(error_class: ErrorClass) -> LinkFailure:
    """The wire protocol's name for a session failure class."""
    match error_class:
        case ErrorClass.GONE:
            return LinkFailure.GONE
        case ErrorClass.TRANSIENT:
            return LinkFailure.TRANSIENT
        case ErrorClass.AUTH:
            return LinkFailure.AUTH
        case ErrorClass.PROTOCOL:
            return LinkFailure.PROTOCOL
        case _:
            assert_never(error_class)


def _detail(text: str) -> str:
    text = text.strip() or "(no description)"
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 1] + "…"


def _misbehaviour(reason: str, raw: bytes) -> DeviceStatusBody:
    # A value longer than any GATT value is cut to the protocol's limit; the reason says the device misbehaved.
    return DeviceStatusBody(detail=_detail(reason), raw=bytes(raw[:MAX_RAW_BYTES]))


def report(event: DeviceReport, now: datetime) -> Reported:
    """The device-status record (and battery observation) for one report, made at hub time ``now``."""
    device = event.device

    def draft(body: DeviceStatusBody) -> Draft:
        return Draft(body, Lane.ROUTINE, now, None, device.address)

    match event:
        case BatteryLevel(level=level):
            if isinstance(level, bool) or not 0 <= level <= 100:
                return Reported(draft(_misbehaviour(f"battery level {level!r} is outside 0..100", b"")), None, True)
            observation = Observation(
                resident=device.resident,
                device=device.address,
                kind=device.kind,
                record_id=f"battery:{device.address}",
                at=now,
                values={Vital.BATTERY: float(level)},
            )
            return Reported(draft(DeviceStatusBody(battery=level)), observation)
        case LinkUp():
            return Reported(draft(DeviceStatusBody(link=LinkState.CONNECTED)))
        case LinkDown():
            return Reported(draft(DeviceStatusBody(link=LinkState.DISCONNECTED)))
        case LinkFailed(error_class=error_class, detail=text):
            body = DeviceStatusBody(link=LinkState.FAILED, failure=link_failure(error_class), detail=_detail(text))
            return Reported(draft(body))
        case ClockCorrected(device_time=device_time, offset=offset):
            correction = ClockCorrection(
                old_device_time=device_time or "unknown",
                new_time=now,
                offset_seconds=None if offset is None else offset.total_seconds(),
            )
            return Reported(draft(DeviceStatusBody(clock_correction=correction)))
        case Misbehaviour(reason=reason, raw=raw):
            return Reported(draft(_misbehaviour(reason, raw)), None, True)
        case _:
            assert_never(event)
