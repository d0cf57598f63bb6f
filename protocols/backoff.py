"""Reconnect delays: a pure, capped, jittered exponential backoff, and a named policy of its parameters."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy", "backoff_delay"]


def backoff_delay(
    attempt: int,
    *,
    base: float = 0.5,
    cap: float = 60.0,
    jitter_fraction: float = 0.2,
    rng: random.Random,
) -> float:
    """The delay before reconnect attempt number ``attempt`` (0 for the first retry).

    The un-jittered delay is ``min(cap, base * 2**attempt)``; jitter then removes up to ``jitter_fraction`` of it,
    so the result lies in ``[d * (1 - jitter_fraction), d]`` and never exceeds ``cap``. Removing rather than adding
    jitter keeps the cap a hard ceiling while still spreading a fleet of hubs that lost the broker at once.

    Args:
        attempt: how many consecutive attempts have failed before this one; must be >= 0.
        base: delay for attempt 0, in seconds; > 0.
        cap: the largest delay ever returned; >= base.
        jitter_fraction: in [0, 1]; 0 gives the deterministic envelope.
        rng: the source of randomness (seed it in tests).

    Returns:
        Seconds to wait.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if base <= 0:
        raise ValueError(f"base must be > 0, got {base}")
    if cap < base:
        raise ValueError(f"cap ({cap}) must be >= base ({base})")
    if not 0.0 <= jitter_fraction <= 1.0:
        raise ValueError(f"jitter_fraction must be in [0, 1], got {jitter_fraction}")
    # 2**attempt overflows float for huge attempts; past the cap the exponent no longer matters.
    exponent = min(attempt, 1023)
    ceiling = min(cap, base * 2.0**exponent)
    return ceiling * (1.0 - jitter_fraction * rng.random())


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The parameters of :func:`backoff_delay` for one kind of failure (e.g. one BLE error class).

    Attributes:
        base: delay after the first failure, in seconds; > 0.
        cap: the longest delay; >= base.
        jitter_fraction: in [0, 1]; how much of each delay jitter may remove.
    """

    base: float
    cap: float
    jitter_fraction: float = 0.2

    def __post_init__(self) -> None:
        # The same checks backoff_delay makes, at construction rather than at the first failure.
        backoff_delay(0, base=self.base, cap=self.cap, jitter_fraction=self.jitter_fraction, rng=random.Random(0))  # noqa: S311

    def delay(self, failures: int, rng: random.Random) -> float:
        """Seconds to wait after ``failures`` consecutive failures (>= 1) of this kind."""
        if failures < 1:
            raise ValueError(f"failures must be >= 1, got {failures}")
        return backoff_delay(failures - 1, base=self.base, cap=self.cap, jitter_fraction=self.jitter_fraction, rng=rng)
