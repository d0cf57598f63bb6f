"""The delivery core's policy and resend timing (``docs/protocol.md`` §7), sans I/O.

:class:`DeliveryPolicy` holds the window sizes and timings; :class:`ResendTimer` decides how long a frame waits for
its ack before it is resent:

* The wait is ``backoff_delay(level, base=max(ack_timeout, 2 x smoothed ack latency), cap=ack_timeout_cap)`` with
  jitter (removed, never added, so the cap stays a ceiling).
* Every ROUND that ends unacknowledged raises ``level`` (doubling the wait) once, however many of its frames time
  out: a round is the frames sent since the level last changed (:attr:`ResendTimer.round`), so frames sent at an
  older round that expire afterwards do not raise it again. An ack for a frame sent once lowers it to 0, starts a
  new round and feeds the smoothed latency. A resent frame's latency is ambiguous (Karn's rule) and is not sampled. A
  slow platform thus sees fewer and fewer duplicates instead of a fixed-period resend storm.

Nothing here awaits, sleeps or reads a clock: times are plain floats passed in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from gateway.backoff import backoff_delay

__all__ = ["DeliveryPolicy", "ResendTimer"]

_MAX_LEVEL: Final = 30  # the wait is capped long before 2**30; the bound only keeps the counter small
_SRTT_GAIN: Final = 0.125  # RFC 6298's alpha for the smoothed ack latency


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """Window sizes and resend timing.

    Attributes:
        max_inflight_frames: routine frames awaiting the platform's ack at once.
        max_inflight_bytes: routine envelope bytes awaiting the platform's ack; a new routine frame is sent only
            while fewer are in flight.
        max_inflight_priority_frames: priority frames awaiting the platform's ack at once (their own window).
        frame_max_envelopes: envelopes per frame.
        frame_max_bytes: envelope bytes per frame (one envelope is always allowed, however large).
        ack_timeout: the shortest wait for an ack before a frame is resent, in seconds.
        ack_timeout_cap: the longest wait, however many rounds went unacknowledged.
        resend_jitter: fraction of each wait removed at random, in [0, 1], so hubs that lost the same platform do
            not resend in step.
    """

    max_inflight_frames: int = 8
    max_inflight_bytes: int = 512 * 1024
    max_inflight_priority_frames: int = 16
    frame_max_envelopes: int = 64
    frame_max_bytes: int = 64 * 1024
    ack_timeout: float = 20.0
    ack_timeout_cap: float = 300.0
    resend_jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.max_inflight_frames < 1 or self.max_inflight_priority_frames < 1:
            raise ValueError("the in-flight windows need room for at least one frame")
        if self.frame_max_envelopes < 1 or self.frame_max_bytes < 1 or self.max_inflight_bytes < 1:
            raise ValueError("frame and window sizes must be positive")
        if not self.ack_timeout > 0:
            raise ValueError("ack_timeout must be positive")
        if not self.ack_timeout_cap >= self.ack_timeout:
            raise ValueError("ack_timeout_cap must be at least ack_timeout")
        if not 0.0 <= self.resend_jitter <= 1.0:
            raise ValueError("resend_jitter must be in [0, 1]")


class ResendTimer:
    """How long the next frame waits for its ack: the backoff level and the smoothed ack latency.

    Args:
        policy: the ack timeouts and jitter.
        rng: randomness for the jitter (seed it in tests).
    """

    __slots__ = ("_level", "_policy", "_rng", "_round", "_srtt")

    def __init__(self, policy: DeliveryPolicy, *, rng: random.Random) -> None:
        self._policy = policy
        self._rng = rng
        self._level = 0
        self._round = 0
        self._srtt: float | None = None

    @property
    def level(self) -> int:
        """How many ack rounds in a row ended unacknowledged (the backoff's exponent)."""
        return self._level

    @property
    def round(self) -> int:
        """The current round's number: note it when a frame is sent, pass it to :meth:`unacked_round` on expiry."""
        return self._round

    @property
    def smoothed_ack_latency(self) -> float | None:
        """Smoothed seconds from sending a frame (sent once) to its ack, or ``None`` before the first sample."""
        return self._srtt

    def ack_wait(self) -> float:
        """How long the next frame sent will wait for its ack (jittered; advances the random generator)."""
        p = self._policy
        return backoff_delay(
            self._level, base=self._base_wait(), cap=p.ack_timeout_cap, jitter_fraction=p.resend_jitter, rng=self._rng
        )

    def ack_wait_ceiling(self) -> float:
        """The longest :meth:`ack_wait` can return at the current level (no jitter removed)."""
        return min(self._policy.ack_timeout_cap, self._base_wait() * 2.0 ** min(self._level, 1023))

    def _base_wait(self) -> float:
        p = self._policy
        base = p.ack_timeout if self._srtt is None else max(p.ack_timeout, 2.0 * self._srtt)
        return min(base, p.ack_timeout_cap)

    def acked(self, sent_at: float, now: float, *, resent: bool) -> None:
        """A frame sent at ``sent_at`` was acked at ``now``: feed the latency and end the backoff (unless resent)."""
        if resent:
            return
        sample = max(0.0, now - sent_at)
        self._srtt = sample if self._srtt is None else self._srtt + _SRTT_GAIN * (sample - self._srtt)
        self._level = 0
        self._round += 1

    def unacked_round(self, sent_round: int) -> None:
        """Frames sent at ``sent_round`` (the latest of those expired) reached their deadline unacknowledged.

        The next wait doubles (up to the cap) once per round: frames of a round already backed off (or answered
        since) change nothing.
        """
        if sent_round != self._round:
            return
        self._level = min(self._level + 1, _MAX_LEVEL)
        self._round += 1
