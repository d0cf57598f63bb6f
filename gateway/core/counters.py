"""What the hub has done, counted: for the demo summary, `carehub doctor` and `carehub bench`.

Every device event that does not become a record (a rejected pendant frame, a refused down-message, a failed
commit) is counted here, so nothing the hub is told disappears without a trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["HubCounters"]


@dataclass(slots=True)
class HubCounters:
    """Counts since the hub started, and latency samples in seconds (``time.monotonic()`` differences).

    Attributes:
        readings: measurement records made.
        duplicates_dropped: readings dropped as duplicates (kept for the demo summary's layout).
        alarms: alarms by the highest tier each reached.
        panic_events: authenticated new pendant events acted on.
        pendant_rejected: pendant frames that did not authenticate or replayed an old counter.
        pendant_unconfirmed: pendant events acted on locally whose commit failed (no confirm was sent).
        fallback_notifications: fallback notifier runs.
        threshold_updates: accepted threshold down-messages.
        snoozes_refused: refused snooze requests (critical alarm, unknown alarm, invalid duration).
        down_refused: refused down-messages of any kind (each also reported to the platform as a record).
        evictions_reported: eviction records made.
        status_records: device-status records made (battery, link, clock, failure, misbehaviour).
        misbehaviour: device misbehaviour reports (refused steps, impossible battery levels).
        tolerated_readings: measurement records of values decoded only tolerantly (padding, reserved flag bits).
        raw_readings: raw-reading records of values that do not decode at all.
        link_failures: failed BLE sessions reported.
        commit_failures: outbox commits that failed (e.g. a full disk); their priority records are retried.
        unstored_dropped: priority records of failed commits dropped because too many were waiting for a retry.
        alarm_detect_s: reading or pendant frame received -> the alarm's cue shown.
        alarm_delivery_s: alarm input received -> the platform's ack of its record.
        panic_local_s: pendant press received -> its cue shown.
        panic_platform_s: pendant press received -> the platform's ack of its alarm record.
    """

    readings: int = 0
    duplicates_dropped: int = 0
    alarms: dict[str, int] = field(default_factory=lambda: {"notice": 0, "warning": 0, "critical": 0})
    panic_events: int = 0
    pendant_rejected: int = 0
    pendant_unconfirmed: int = 0
    fallback_notifications: int = 0
    threshold_updates: int = 0
    snoozes_refused: int = 0
    down_refused: int = 0
    evictions_reported: int = 0
    status_records: int = 0
    misbehaviour: int = 0
    tolerated_readings: int = 0
    raw_readings: int = 0
    link_failures: int = 0
    commit_failures: int = 0
    unstored_dropped: int = 0
    alarm_detect_s: list[float] = field(default_factory=list)
    alarm_delivery_s: list[float] = field(default_factory=list)
    panic_local_s: list[float] = field(default_factory=list)
    panic_platform_s: list[float] = field(default_factory=list)
