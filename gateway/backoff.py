"""Reconnect delays: a pure, capped, jittered exponential backoff."""

from __future__ import annotations

import random


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
