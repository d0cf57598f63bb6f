"""The blood-pressure crisis confirmation: a crisis reading is believed only once re-measured after rest (or not
re-measured in time). A pure state machine on the monotonic clock; :class:`gateway.rules.RuleEngine` keeps one per
resident."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["BpConfirmation", "BpCrisisState", "BpStep"]


class BpCrisisState(enum.StrEnum):
    """Where a resident's blood-pressure crisis confirmation stands."""

    IDLE = "idle"  # no crisis reading waiting
    AWAITING_REMEASURE = "awaiting_remeasure"  # a crisis reading was asked to be repeated after rest
    CONFIRMED = "confirmed"  # the crisis was confirmed; stays until a reading below the crisis line


class BpStep(enum.StrEnum):
    """What one input did to the confirmation machine; the engine turns each into a finding."""

    NONE = "none"  # idle, no crisis: judge the reading by its own tier
    ASK_REMEASURE = "ask_remeasure"  # first crisis reading: warning, "rest, then measure again"
    WAIT = "wait"  # a reading before the rest period was over: still waiting, instruction repeated
    CONFIRM = "confirm"  # crisis confirmed: critical
    STILL_CRITICAL = "still_critical"  # another crisis reading while confirmed
    DOWNGRADE = "downgrade"  # re-measured below the crisis line: the reading's own tier


@dataclass(slots=True)
class BpConfirmation:
    """The blood-pressure crisis state machine for one resident::

        IDLE ──crisis──► AWAITING_REMEASURE ──crisis reading >= delay after──► CONFIRMED ──below crisis──► IDLE
                              │  │  └──(tick) deadline passed (monotonic), no re-measurement──► CONFIRMED
                              │  └──reading < delay after (too early, not rested): stays, asks again
                              └──reading >= delay after, below crisis──► IDLE (downgrade)

    A reading only counts as the re-measurement once `delay` has passed since the first: an earlier one was taken
    without the rest that the instruction asked for, and a reading older than the first (a meter's stored backlog)
    is never a re-measurement. A reading taken after the deadline (by the readings' times) with no tick in between
    is handled as if the tick had come first.

    The deadline itself is kept on the monotonic clock: when the crisis reading arrives, what is left of its
    deadline (less the reading's age, for a stored reading transferred late) is counted from the monotonic time of
    its arrival, so a wall clock step afterwards does not move it.
    """

    state: BpCrisisState = BpCrisisState.IDLE
    since: datetime | None = None  # when the crisis reading was taken
    due: float | None = None  # the monotonic time at which an unanswered request to re-measure confirms

    def on_tick(self, mono: float) -> BpStep:
        """Time passed: an unanswered request to re-measure confirms the crisis at its deadline."""
        if self.state is BpCrisisState.AWAITING_REMEASURE and self.due is not None and mono >= self.due:
            self.state = BpCrisisState.CONFIRMED
            self.due = None
            return BpStep.CONFIRM
        return BpStep.NONE

    def on_reading(
        self, at: datetime, crisis: bool, delay: timedelta, deadline: timedelta, *, mono: float, age: timedelta
    ) -> BpStep:
        """A reliable blood-pressure reading taken at `at`; `crisis` says whether it is above the crisis line.

        `mono` is the monotonic time of its arrival and `age` how long before its arrival it was taken.
        """
        late = self.state is BpCrisisState.AWAITING_REMEASURE and self.since is not None and at - self.since >= deadline
        if late or self.on_tick(mono) is BpStep.CONFIRM:
            # The deadline passed before this reading: the crisis stands confirmed, then this reading is judged.
            self.state = BpCrisisState.CONFIRMED
            self.due = None
            return BpStep.CONFIRM if crisis else self._leave()
        if self.state is BpCrisisState.IDLE:
            if not crisis:
                return BpStep.NONE
            self.state = BpCrisisState.AWAITING_REMEASURE
            self.since = at
            self.due = mono + (deadline - max(age, timedelta(0))).total_seconds()
            return BpStep.ASK_REMEASURE
        if self.state is BpCrisisState.AWAITING_REMEASURE:
            since = self.since if self.since is not None else at
            if at - since < delay:
                return BpStep.WAIT
            if crisis:
                self.state = BpCrisisState.CONFIRMED
                return BpStep.CONFIRM
            return self._leave()
        return BpStep.STILL_CRITICAL if crisis else self._leave()

    def _leave(self) -> BpStep:
        self.state = BpCrisisState.IDLE
        self.since = None
        self.due = None
        return BpStep.DOWNGRADE
