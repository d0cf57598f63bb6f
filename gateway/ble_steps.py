"""The best-effort steps of a meter's session: UDS consent, the clock, the battery, what the meter says it is.

A session (`gateway.ble_session`) subscribes first, so nothing here can keep a meter's readings from the hub. Each
step is independent (issue 14 item 4): a meter that refuses the Current Time write (ATT 0x80, seen on Omron cuffs)
or has no Battery Service still delivers its readings; a failed step is classified, counted in
:class:`gateway.ble_types.BleStats` and logged, reported as misbehaviour when the device refused it, and only a lost
link ends the session.

UDS consent (issue 14 item 6): a multi-user scale (Weight Scale Service with the User Data Service, 0x181C) sends a
registered user's weights only over a connection on which the client wrote that user's consent code to the User
Control Point (0x2A9F, :mod:`protocols.gatt.uds`). For a device provisioned with ``user_id`` (the scale's user index)
and ``consent_code``, :meth:`BestEffortSteps.give_consent` writes Consent before the session subscribes to the
weights and awaits the indicated answer. A refusal (0x05 "user not authorized": a wrong code; 0x03 "invalid
parameter": no such user on the scale) is the installer's to fix, not a passing fault: it is reported as the device's
misbehaviour (one record, one log line naming the fix), counted in the durable outbox cursor ``consent:<address>``
(refusals in a row, back to 0 after a consent the scale accepts) that ``carehub doctor`` reports, and the device is
not connected again before the AUTH class's slow delay. The session goes on all the same: the scale's guest
weights (User ID 0xFF) still arrive and are filed by the user-index mapping (`gateway.core.measurements`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from bleak import BleakClient
from bleak.exc import BleakError

from gateway.ble_errors import RETRY, classify_error
from gateway.ble_types import BleStats, DeviceInformation, DeviceState, ReadingSink, SessionStep, uuid16
from gateway.clock import Clock
from gateway.config import DeviceConfig, GatewayConfig
from gateway.core.measurements import ClockFinding
from gateway.events import BatteryLevel, ClockCorrected, ErrorClass, Misbehaviour
from protocols import gatt
from protocols.errors import DecodeError
from protocols.gatt import uds
from protocols.profiles import profile_of

__all__ = ["BestEffortSteps", "ask_user_control_point", "consent_cursor_key"]

_log = logging.getLogger("gateway.ble")
_T = TypeVar("_T")

_BATTERY_LEVEL = 0x2A19
# Device Information Service strings (DIS 1.1): manufacturer, model, serial number, firmware revision.
_DEVICE_INFORMATION = (0x2A29, 0x2A24, 0x2A25, 0x2A26)
_CURRENT_TIME = 0x2A2B
# How far a reading's stamp may run past the device clock the hub read, on that same clock, beyond the time elapsed
# since the read: the Date Time stamps' whole seconds and the meter's own rounding.
_STAMP_SLACK = timedelta(seconds=2)
# The consent refusals that are the installer's to fix: a wrong consent code, a user index the scale does not have.
_CONSENT_REFUSALS = frozenset({uds.UcpResult.USER_NOT_AUTHORIZED, uds.UcpResult.INVALID_PARAMETER})


def consent_cursor_key(address: str) -> str:
    """The outbox cursor counting a scale's consent refusals in a row (0 once it accepts the consent again): stored
    in the clear so that ``carehub doctor`` can tell the installer which scale has a wrong consent code."""
    return f"consent:{address.upper()}"


async def ask_user_control_point(
    client: BleakClient, request: uds.UcpRequest, unrequested: Callable[[bytes], None] | None = None
) -> bytes:
    """Write `request` to a scale's UDS User Control Point and return the answer it indicates (not decoded). The
    indications are turned on first, as UDS requires, and off again while the link is up; a second answer goes to
    `unrequested` (one answer per request: more is the scale misbehaving).

    Raises:
        BleakError: the scale refused the subscription or the write, or the link failed.
    """
    answers: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)

    def on_answer(_char: object, data: bytearray) -> None:
        if answers.full():
            if unrequested is not None:
                unrequested(bytes(data))
            return
        answers.put_nowait(bytes(data))

    ucp = uuid16(uds.USER_CONTROL_POINT)
    await client.start_notify(ucp, on_answer)
    try:
        await client.write_gatt_char(ucp, bytes(request), response=True)
        return await answers.get()
    finally:
        if client.is_connected:
            with contextlib.suppress(BleakError, TimeoutError):
                await client.stop_notify(ucp)


class BestEffortSteps:
    """The steps of a session whose failure does not end it, for one runner's sessions."""

    def __init__(self, config: GatewayConfig, sink: ReadingSink, stats: BleStats, clock: Clock, timeout: float) -> None:
        self._config = config
        self._sink = sink
        self.stats = stats
        self._now = clock.now
        self._monotonic = clock.monotonic
        self._timeout = timeout
        self._rng = random.Random()  # noqa: S311  backoff jitter, not cryptography

    async def best_effort(self, cfg: DeviceConfig, step: SessionStep, call: Awaitable[_T]) -> _T | None:
        """Run one best-effort step of a session: its failure is classified, counted and logged (and reported when
        the device refused it), and the session goes on; only a lost link ends the session."""
        try:
            async with asyncio.timeout(self._timeout):
                return await call
        except (BleakError, TimeoutError) as exc:
            kind = classify_error(exc)
            if kind is ErrorClass.GONE:
                raise
            self.stats.step_failures[(step, kind)] += 1
            _log.warning("%s of %s failed (%s: %s); the session goes on", step.value, cfg.address, kind, exc)
            if kind is ErrorClass.PROTOCOL:
                await self._sink.report(Misbehaviour(cfg, f"{step.value} refused ({kind}): {exc}"))
            return None

    async def read_battery(self, client: BleakClient, cfg: DeviceConfig, chars: set[str]) -> None:
        if uuid16(_BATTERY_LEVEL) not in chars:
            return
        raw = await self.best_effort(cfg, SessionStep.BATTERY, client.read_gatt_char(uuid16(_BATTERY_LEVEL)))
        if raw is None:
            return
        try:
            level = gatt.decode(_BATTERY_LEVEL, bytes(raw)).as_dict()["battery_level"]
        except DecodeError as exc:
            self.stats.malformed += 1
            await self._sink.report(Misbehaviour(cfg, f"battery level: {exc}", bytes(raw)))
            return
        await self._sink.report(
            BatteryLevel(cfg, level) if isinstance(level, int) else Misbehaviour(cfg, f"battery level {level!r}")
        )

    async def read_device_information(self, client: BleakClient, cfg: DeviceConfig, chars: set[str]) -> None:
        """Read what the meter says it is, once per run (each string is a best-effort step of its own)."""
        if cfg.address in self.stats.device_information or not any(uuid16(u) in chars for u in _DEVICE_INFORMATION):
            return
        values: list[str | None] = []
        for uuid in _DEVICE_INFORMATION:
            raw = None
            if uuid16(uuid) in chars:
                raw = await self.best_effort(cfg, SessionStep.DEVICE_INFORMATION, client.read_gatt_char(uuid16(uuid)))
            # UTF-8 strings (GATT "utf8s"); some meters pad them with NULs.
            text = None if raw is None else bytes(raw).decode("utf-8", errors="replace").rstrip("\x00").strip()
            values.append(text or None)
        info = DeviceInformation(*values)
        self.stats.device_information[cfg.address] = info
        _log.info("%s is %s", cfg.address, info)

    async def sync_clock(self, client: BleakClient, cfg: DeviceConfig, chars: set[str]) -> ClockFinding | None:
        """Compare the device clock with the hub's; set it when off by more than the tolerance. Returns what the
        session's readings are corrected with, or None when the clock was right or could not be read."""
        if uuid16(_CURRENT_TIME) not in chars:
            return None
        raw = await self.best_effort(cfg, SessionStep.CLOCK_READ, client.read_gatt_char(uuid16(_CURRENT_TIME)))
        if raw is None:
            return None
        hub_now = self._now()
        try:
            current = gatt.decode(_CURRENT_TIME, bytes(raw))
        except DecodeError as exc:
            self.stats.malformed += 1
            await self._sink.report(Misbehaviour(cfg, f"current time: {exc}", bytes(raw)))
            return None
        device_now = getattr(current, "datetime", None)
        device_dt = device_now() if callable(device_now) else device_now
        # A GATT clock keeps local time with no zone (the resident reads it on the meter's display): it is compared
        # with, and set to, the hub's time in the home's zone, and its stamps are mapped to UTC by `to_utc`.
        hub_local = hub_now.astimezone(self._config.timezone).replace(tzinfo=None)
        drift = None if not isinstance(device_dt, datetime) else device_dt - hub_local
        if drift is not None and abs(drift.total_seconds()) <= self._config.clock_tolerance_s:
            return None
        payload = bytes(gatt.CurrentTime.from_datetime(hub_local, adjust_reason=0x01))

        async def write() -> bool:
            await client.write_gatt_char(uuid16(_CURRENT_TIME), payload, response=True)
            return True

        # A meter refusing the write keeps its clock: the offset still corrects its readings, nothing is reported
        # as corrected.
        if await self.best_effort(cfg, SessionStep.CLOCK_WRITE, write()):
            device_time = current.as_dict().get("timestamp")
            await self._sink.report(ClockCorrected(cfg, device_time if isinstance(device_time, str) else None, drift))
        if not isinstance(device_dt, datetime):
            return None
        to_utc = device_dt - hub_now.astimezone(UTC).replace(tzinfo=None)
        return ClockFinding(to_utc, device_dt, hub_now, _STAMP_SLACK)

    async def read_session_clock(
        self, client: BleakClient, cfg: DeviceConfig, chars: set[str], clock: ClockFinding | None
    ) -> ClockFinding | None:
        """For a device that stamps readings relative to its session (its profile's ``session_clock``: a CGM's
        Status), read how long the session has run and note when it started on the hub's clock. Best-effort: a
        failed or undecodable read leaves `clock` as it was (the readings then keep their receive time)."""
        session = profile_of(cfg.kind).session_clock
        if session is None or uuid16(session.uuid) not in chars:
            return clock
        raw = await self.best_effort(cfg, SessionStep.CLOCK_READ, client.read_gatt_char(uuid16(session.uuid)))
        if raw is None:
            return clock
        hub_now = self._now()
        try:
            minutes = session.minutes_now(bytes(raw))
        except DecodeError as exc:
            self.stats.malformed += 1
            await self._sink.report(Misbehaviour(cfg, f"session clock {session.uuid:04X}: {exc}", bytes(raw)))
            return clock
        start = hub_now.astimezone(UTC) - timedelta(minutes=minutes)
        if clock is not None:
            return replace(clock, session_start=start)
        # No wall clock to correct: an offset of zero changes no stamp (a CGM's records carry none).
        return ClockFinding(timedelta(0), hub_now.astimezone(UTC).replace(tzinfo=None), hub_now, _STAMP_SLACK, start)

    async def give_consent(self, client: BleakClient, cfg: DeviceConfig, chars: set[str], state: DeviceState) -> None:
        """Write the UDS Consent for the device's user index and consent code and check the scale's answer (see the
        module docstring); nothing to do for a device provisioned without a consent code."""
        if cfg.consent_code is None or cfg.user_id is None:
            return
        if uuid16(uds.USER_CONTROL_POINT) not in chars:
            self.stats.step_failures[(SessionStep.CONSENT, ErrorClass.PROTOCOL)] += 1
            _log.warning("%s has a consent code but no User Data Service; nothing to consent to", cfg.address)
            await self._sink.report(Misbehaviour(cfg, "consent code provisioned, but no User Data Service"))
            return
        request = uds.Consent(cfg.user_id, cfg.consent_code)
        raw = await self.best_effort(
            cfg, SessionStep.CONSENT, ask_user_control_point(client, request, self._unrequested)
        )
        if raw is None:
            return
        try:
            answer = uds.decode_response(raw)
        except DecodeError as exc:
            self.stats.malformed += 1
            self.stats.step_failures[(SessionStep.CONSENT, ErrorClass.PROTOCOL)] += 1
            await self._sink.report(Misbehaviour(cfg, f"UDS consent answer: {exc}", raw))
            return
        if answer.request_op_code != uds.UcpOpCode.CONSENT:
            self.stats.step_failures[(SessionStep.CONSENT, ErrorClass.PROTOCOL)] += 1
            await self._sink.report(Misbehaviour(cfg, f"UDS consent answered as op code {answer.request_op_code}", raw))
            return
        if answer.result is uds.UcpResult.SUCCESS:
            await self._note_consent(cfg, refused=False)
            return
        what = answer.result.name.lower().replace("_", " ")
        if answer.result not in _CONSENT_REFUSALS:
            self.stats.step_failures[(SessionStep.CONSENT, ErrorClass.PROTOCOL)] += 1
            _log.warning("%s could not take the consent for user %d (%s)", cfg.address, cfg.user_id, what)
            await self._sink.report(Misbehaviour(cfg, f"UDS consent for user {cfg.user_id}: {what}", raw))
            return
        self.stats.step_failures[(SessionStep.CONSENT, ErrorClass.AUTH)] += 1
        refusals = await self._note_consent(cfg, refused=True)
        delay = RETRY[ErrorClass.AUTH].delay(refusals, self._rng)
        state.not_before = max(state.not_before, self._monotonic() + delay)
        _log.error(
            "%s refused the consent for user %d (%s): set the consent code registered on the scale for that user "
            "with `carehub provision pair`; next try in %.0f s",
            cfg.address,
            cfg.user_id,
            what,
            delay,
        )
        await self._sink.report(Misbehaviour(cfg, f"UDS consent for user {cfg.user_id} refused: {what}", raw))

    def _unrequested(self, data: bytes) -> None:
        self.stats.malformed += 1
        _log.warning("unrequested UDS answer ignored: %s", data.hex())

    async def _note_consent(self, cfg: DeviceConfig, *, refused: bool) -> int:
        """Count a refusal in the scale's ``consent:`` cursor, or set it back to 0 (written only when it changes);
        returns the refusals in a row."""
        key = consent_cursor_key(cfg.address)
        before = await self._sink.get_cursor(key) or 0
        after = before + 1 if refused else 0
        if after != before:
            await self._sink.store_readings([], cursor=(key, after))
        return after
