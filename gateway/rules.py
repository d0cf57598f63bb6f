"""The alarm rules: observations (and the passing of time) in, findings out. Pure and synchronous.

The gateway's intake turns each decoded measurement into a neutral :class:`Observation` in canonical units (the
unit helpers live in `gateway.thresholds`) and hands it to :meth:`RuleEngine.evaluate`; a timer calls
:meth:`RuleEngine.tick` with the injected clock's time. Both return an :class:`Evaluation`: the findings (what is
out of range now, at which tier) and the conditions that this input showed to be back in range. The
`gateway.alarms.AlarmBook` turns evaluations into alarm transitions. Nothing here does I/O or sleeps.

Time comes from the injected `gateway.clock.Clock` (issue 17 item 4): timeouts -- a device silent for too long, the
deadline for re-measuring a blood-pressure crisis -- run on its monotonic clock, so a wall clock stepped by hours
neither fires nor delays them; schedules are wall time, read in the home's zone (``[hub] timezone``), and readings
are compared by the times they were taken.

Conditions and their message keys (the voice catalogue's keys, see `gateway.cues.MESSAGE_KEYS`):

- ``bp.high`` (systolic or diastolic) notice ``bp_high``, warning ``bp_very_high``. A *crisis* reading (above
  ``bp.systolic.critical_high`` or ``bp.diastolic.critical_high``) is not believed at once: see
  :class:`BpConfirmation`. While it waits it is a warning ``bp_crisis_remeasure``; confirmed it is critical
  ``bp_crisis_confirmed``; a re-measurement below the crisis line downgrades it to that reading's own tier.
- ``bp.low`` (systolic) warning / critical ``bp_low``.
- ``glucose.low`` notice / warning ``glucose_low``, critical ``glucose_hypo_critical`` -- at once, with no
  re-measurement: a level 2 hypoglycaemia can leave the resident unable to act (see `gateway.thresholds`).
- ``glucose.high`` notice ``glucose_high``, warning / critical ``glucose_very_high``.
- ``glucose.swing``: warning ``glucose_swing`` when a reading differs from the previous one by more than
  ``glucose.swing.percent`` of the previous value, both taken within ``glucose.swing.window_s``.
- ``spo2.low`` notice / warning ``spo2_low``, critical ``spo2_critical``.
- ``pulse.low`` / ``pulse.high`` notice / warning ``pulse_abnormal``, critical ``pulse_critical``.
- ``temperature.low`` notice ``temperature_low``, critical ``temperature_critical``; ``temperature.high`` notice /
  warning ``temperature_fever``.
- ``weight.gain_1d`` notice and ``weight.gain_3d`` warning ``weight_gain`` (only when ``weight.trend.enabled``):
  the new weight minus the lowest weight of the last 1 / 3 days (window ends included) exceeds the threshold.
- ``battery.low`` (subject: the device) meter notice / warning ``battery_low_meter``; pendant warning / critical
  ``battery_low_pendant``.
- ``device.silent`` (subject: the device): warning ``device_silent`` when a watched device has not been heard from
  for longer than its ``silent_after``.
- ``schedule.missed`` (subject: ``"<vital>@HH:MM"``): notice ``measure_reminder`` when no reading of the vital was
  taken between ``window`` before the due time and ``grace`` after it; warning after a further ``escalate_after``.
  Before that, at the due time itself (local, in the home's zone), a slot not yet measured for is in the tick's
  ``Evaluation.reminders``: the hub tells the resident (``measure_due``), once per slot, and records nothing.
- ``reading.unreliable`` (subject: the device): tier INFO ``reading_unreliable``. Reported, never alarmed on: a
  reading the device flagged (sensor status bits) is not compared with any threshold and enters no history.

Readings are compared as given: a value that is NaN or infinite is "no reading" (thresholds.md §1 BLE note),
never zero. Battery levels and the device being heard are taken from every observation, flagged or not.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from gateway.bp_crisis import BpConfirmation, BpCrisisState, BpStep
from gateway.clock import Clock, SystemClock
from gateway.config import DeviceKind
from gateway.findings import ConditionRef, Evaluation, Finding, Reminder, Transition
from gateway.observations import Observation, Vital
from gateway.rule_levels import (
    BATTERY_METER,
    BATTERY_PENDANT,
    BP_HIGH_DIA,
    BP_HIGH_SYS,
    LEVEL_RULES,
    Level,
    LevelRule,
    judge,
)
from gateway.rule_types import DeviceWatch, ResidentRules, ScheduleEntry
from gateway.thresholds import SPECS, Key, Thresholds, Tier
from gateway.trend_rules import glucose_swing, weight_gain

__all__ = [
    "DeviceWatch",
    "ResidentRules",
    "RuleEngine",
    "ScheduleEntry",
    "UnknownResidentError",
]


class UnknownResidentError(KeyError):
    """An observation or update for a resident the engine was not configured with."""


@dataclass(slots=True)
class _ResidentState:
    rules: ResidentRules
    bp: BpConfirmation = field(default_factory=BpConfirmation)
    bp_crossing: tuple[float, float] = (math.nan, math.nan)  # the last crisis value and the line it crossed
    glucose: deque[tuple[datetime, float]] = field(default_factory=deque)
    weight: deque[tuple[datetime, float]] = field(default_factory=deque)
    last_reading: dict[Vital, datetime] = field(default_factory=dict)


class RuleEngine:
    """Judges residents' observations and the passing of time. Keeps a bounded in-memory history per resident.

    Args:
        residents: each resident's thresholds, measurement schedule and watched devices.
        started_at: when the engine started (wall time); schedule slots whose grace ended before it are not judged
            (the engine holds no history from before it started).
        local_zone: the home's time zone (``[hub] timezone``), for schedule due times. There is no default: a
            schedule judged in the wrong zone reminds the resident hours off.
        clock: the hub's clock: monotonic time for silent devices and the BP re-measurement deadline; its wall time
            is the default `now` of :meth:`tick`. Devices count as heard when the engine is built.
        history_limit: readings kept per resident and vital for the trend rules (weight, glucose swing).
    """

    def __init__(
        self,
        residents: Mapping[str, ResidentRules],
        *,
        started_at: datetime,
        local_zone: tzinfo,
        clock: Clock | None = None,
        history_limit: int = 256,
    ) -> None:
        if history_limit < 2:
            raise ValueError("history_limit must keep at least two readings")
        if started_at.tzinfo is None or started_at.utcoffset() is None:
            raise ValueError(f"started_at must be timezone-aware, got {started_at!r}")
        self._residents = {rid: _ResidentState(rules) for rid, rules in residents.items()}
        self._clock: Clock = clock or SystemClock()
        self._started_at = started_at
        self._started_mono = self._clock.monotonic()
        self._now = started_at
        self._zone = local_zone
        self._limit = history_limit
        self._last_seen: dict[str, float] = {}  # device -> monotonic time it was last heard
        self._reminded: dict[tuple[str, str], datetime] = {}  # (resident, slot subject) -> the slot last reminded of

    @property
    def clock(self) -> Clock:
        """The clock the engine measures timeouts on."""
        return self._clock

    @property
    def local_zone(self) -> tzinfo:
        """The home's zone the schedules are read in."""
        return self._zone

    # -- configuration -------------------------------------------------------------------------------------------

    def thresholds(self, resident: str) -> Thresholds:
        """The resident's current thresholds."""
        return self._state(resident).rules.thresholds

    def set_thresholds(self, resident: str, thresholds: Thresholds) -> None:
        """Replace the resident's thresholds (already validated, e.g. by :meth:`Thresholds.updated`)."""
        state = self._state(resident)
        state.rules = ResidentRules(thresholds, state.rules.schedule, state.rules.devices)

    def bp_state(self, resident: str) -> BpCrisisState:
        """Where the resident's BP crisis confirmation stands."""
        return self._state(resident).bp.state

    def _state(self, resident: str) -> _ResidentState:
        try:
            return self._residents[resident]
        except KeyError:
            raise UnknownResidentError(resident) from None

    # -- inputs --------------------------------------------------------------------------------------------------

    def evaluate(self, obs: Observation) -> Evaluation:
        """Judge one observation against the resident's thresholds and recent history."""
        state = self._state(obs.resident)
        findings: list[Finding] = []
        normal: list[ConditionRef] = []
        # Heard now, whenever the reading was taken (a stored reading transferred late is news from the device).
        self._last_seen[obs.device] = self._clock.monotonic()
        normal.append(ConditionRef(obs.resident, "device.silent", obs.device))
        self._battery(obs, state, findings, normal)
        if obs.unreliable:
            findings.append(
                Finding(
                    obs.resident,
                    "reading.unreliable",
                    Tier.INFO,
                    "reading_unreliable",
                    obs.at,
                    subject=obs.device,
                    device=obs.device,
                    record_id=obs.record_id,
                )
            )
            return Evaluation(obs.at, tuple(findings), tuple(normal))
        t = state.rules.thresholds
        self._blood_pressure(obs, state, findings, normal)
        for rule in LEVEL_RULES:
            value = obs.value(rule.vital)
            if value is None:
                continue
            self._level(obs, rule, value, t, findings=findings, normal=normal)
        glucose_swing(obs, state.glucose, state.rules.thresholds, self._limit, findings=findings, normal=normal)
        weight_gain(obs, state.weight, state.rules.thresholds, self._limit, findings=findings, normal=normal)
        self._schedule_seen(obs, state, normal)
        return Evaluation(obs.at, tuple(findings), tuple(normal))

    def tick(self, now: datetime | None = None) -> Evaluation:
        """Time-driven rules: BP re-measurement deadlines and silent devices on the clock's monotonic time, missed
        measurements at the wall time `now` (default: the clock's), in the home's zone."""
        if now is None:
            now = self._clock.now()
        elif now.tzinfo is None or now.utcoffset() is None:
            raise ValueError(f"tick: `now` must be timezone-aware, got {now!r}")
        now = now.astimezone(UTC)  # findings, and the records made of them, carry UTC
        mono = self._clock.monotonic()
        self._now = max(self._now, now)
        findings: list[Finding] = []
        reminders: list[Reminder] = []
        for rid, state in self._residents.items():
            reminders.extend(self._due(rid, state, now))
            if state.bp.on_tick(mono) is BpStep.CONFIRM:
                findings.append(
                    Finding(
                        rid,
                        "bp.high",
                        Tier.CRITICAL,
                        "bp_crisis_confirmed",
                        now,
                        value=state.bp_crossing[0],
                        threshold=state.bp_crossing[1],
                        transition=Transition.CONFIRMED,
                    )
                )
            for watch in state.rules.devices:
                silent = timedelta(seconds=mono - self._last_seen.get(watch.device, self._started_mono))
                if silent > watch.silent_after:
                    findings.append(
                        Finding(
                            rid,
                            "device.silent",
                            Tier.WARNING,
                            "device_silent",
                            now,
                            subject=watch.device,
                            value=silent.total_seconds(),
                            threshold=watch.silent_after.total_seconds(),
                            device=watch.device,
                        )
                    )
            for entry in state.rules.schedule:
                tier = self._missed(state, entry, now)
                if tier is not None:
                    findings.append(
                        Finding(rid, "schedule.missed", tier, "measure_reminder", now, subject=entry.subject)
                    )
        return Evaluation(now, tuple(findings), reminders=tuple(reminders))

    # -- rules ---------------------------------------------------------------------------------------------------

    @staticmethod
    def _finding(obs: Observation, condition: str, level: Level, value: float, threshold: float) -> Finding:
        return Finding(
            obs.resident,
            condition,
            level.tier,
            level.message,
            obs.at,
            value=value,
            threshold=threshold,
            device=obs.device,
            record_id=obs.record_id,
        )

    def _level(
        self,
        obs: Observation,
        rule: LevelRule,
        value: float,
        t: Thresholds,
        *,
        findings: list[Finding],
        normal: list[ConditionRef],
        subject: str = "",
    ) -> None:
        judged = judge(rule, value, t)
        if judged is None:
            normal.append(ConditionRef(obs.resident, rule.condition, subject))
            return
        level, threshold = judged
        findings.append(replace(self._finding(obs, rule.condition, level, value, threshold), subject=subject))

    def _battery(
        self, obs: Observation, state: _ResidentState, findings: list[Finding], normal: list[ConditionRef]
    ) -> None:
        value = obs.value(Vital.BATTERY)
        if value is None:
            return
        rule = BATTERY_PENDANT if obs.kind is DeviceKind.PENDANT else BATTERY_METER
        self._level(obs, rule, value, state.rules.thresholds, findings=findings, normal=normal, subject=obs.device)

    def _blood_pressure(
        self, obs: Observation, state: _ResidentState, findings: list[Finding], normal: list[ConditionRef]
    ) -> None:
        t = state.rules.thresholds
        sys_v, dia_v = obs.value(Vital.SYSTOLIC), obs.value(Vital.DIASTOLIC)
        if sys_v is None and dia_v is None:
            return
        # The crisis line, and which value crossed it (systolic first).
        crossing: tuple[float, float] | None = None
        if sys_v is not None and SPECS[Key.BP_SYS_CRITICAL_HIGH].cmp.fires(sys_v, t[Key.BP_SYS_CRITICAL_HIGH]):
            crossing = (sys_v, t[Key.BP_SYS_CRITICAL_HIGH])
        elif dia_v is not None and SPECS[Key.BP_DIA_CRITICAL_HIGH].cmp.fires(dia_v, t[Key.BP_DIA_CRITICAL_HIGH]):
            crossing = (dia_v, t[Key.BP_DIA_CRITICAL_HIGH])
        step = state.bp.on_reading(
            obs.at,
            crossing is not None,
            timedelta(seconds=t[Key.BP_CONFIRM_DELAY_S]),
            timedelta(seconds=t[Key.BP_CONFIRM_DEADLINE_S]),
            mono=self._clock.monotonic(),
            age=self._clock.now() - obs.at,
        )
        if step in (BpStep.ASK_REMEASURE, BpStep.WAIT, BpStep.CONFIRM, BpStep.STILL_CRITICAL):
            tier, message = (
                (Tier.WARNING, "bp_crisis_remeasure")
                if step in (BpStep.ASK_REMEASURE, BpStep.WAIT)
                else (Tier.CRITICAL, "bp_crisis_confirmed")
            )
            if crossing is not None:
                state.bp_crossing = crossing
            # A too-early re-measurement below the crisis line is reported against the crisis reading it follows.
            value, threshold = crossing if crossing is not None else state.bp_crossing
            findings.append(
                Finding(
                    obs.resident,
                    "bp.high",
                    tier,
                    message,
                    obs.at,
                    value=value,
                    threshold=threshold,
                    device=obs.device,
                    record_id=obs.record_id,
                    transition=Transition.CONFIRMED if step is BpStep.CONFIRM else Transition.NONE,
                )
            )
            return
        # Not a crisis: the reading's own tier, the higher of systolic and diastolic (systolic on a tie).
        best: tuple[Level, float, float] | None = None
        for rule, reading in ((BP_HIGH_SYS, sys_v), (BP_HIGH_DIA, dia_v)):
            if reading is None:
                continue
            judged = judge(rule, reading, t)
            if judged is not None and (best is None or judged[0].tier > best[0].tier):
                best = (judged[0], reading, judged[1])
        if best is None:
            normal.append(ConditionRef(obs.resident, "bp.high"))
            return
        finding = self._finding(obs, "bp.high", best[0], best[1], best[2])
        if step is BpStep.DOWNGRADE:
            finding = replace(finding, transition=Transition.DOWNGRADED)
        findings.append(finding)

    def _schedule_seen(self, obs: Observation, state: _ResidentState, normal: list[ConditionRef]) -> None:
        for vital in obs.values:
            if obs.value(vital) is None:
                continue
            previous = state.last_reading.get(vital)
            state.last_reading[vital] = obs.at if previous is None else max(previous, obs.at)
        now = max(self._now, obs.at)
        normal.extend(
            ConditionRef(obs.resident, "schedule.missed", entry.subject)
            for entry in state.rules.schedule
            if obs.value(entry.vital) is not None and self._missed(state, entry, now) is None
        )

    def _due(self, resident: str, state: _ResidentState, now: datetime) -> list[Reminder]:
        """Slots that fell due since the last tick (and before their grace ends) with no reading taken yet in their
        window: each is reminded of once, at its due time in the home's zone."""
        local = now.astimezone(self._zone)
        due: list[Reminder] = []
        for entry in state.rules.schedule:
            slot = self._slot(local.date(), entry.due)
            if now < slot:
                slot = self._slot(local.date() - timedelta(days=1), entry.due)
            if not slot <= now < slot + entry.grace:
                continue
            key = (resident, entry.subject)
            if self._reminded.get(key) == slot:
                continue
            last = state.last_reading.get(entry.vital)
            if last is not None and last >= slot - entry.window:
                continue  # already measured for this slot
            self._reminded[key] = slot
            due.append(Reminder(resident, entry.subject, slot))
        return due

    def _slot(self, day: date, due: time) -> datetime:
        """The instant (UTC) of `due` local time on `day`; see :class:`ScheduleEntry` for DST days."""
        return datetime.combine(day, due, tzinfo=self._zone).astimezone(UTC)

    def _missed(self, state: _ResidentState, entry: ScheduleEntry, now: datetime) -> Tier | None:
        """The tier of a missed slot at `now` (the latest slot whose grace has ended), or None when not missed."""
        local = now.astimezone(self._zone)
        slot = self._slot(local.date(), entry.due)
        if now < slot + entry.grace:
            slot = self._slot(local.date() - timedelta(days=1), entry.due)
        if slot + entry.grace <= self._started_at:
            return None
        last = state.last_reading.get(entry.vital)
        if last is not None and last >= slot - entry.window:
            return None
        return Tier.WARNING if now >= slot + entry.grace + entry.escalate_after else Tier.NOTICE
