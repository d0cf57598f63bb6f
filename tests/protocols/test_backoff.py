"""The reconnect backoff: capped, jittered, monotone envelope, deterministic with a seeded rng."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.backoff import RetryPolicy, backoff_delay


def seeded(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 - reproducible jitter, not cryptography


def test_no_jitter_doubles_until_the_cap():
    rng = seeded(1)
    delays = [backoff_delay(n, base=0.5, cap=10.0, jitter_fraction=0.0, rng=rng) for n in range(8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_seeded_rng_is_deterministic():
    a = [backoff_delay(n, base=1.0, cap=60.0, jitter_fraction=0.3, rng=seeded(42)) for n in range(10)]
    b = [backoff_delay(n, base=1.0, cap=60.0, jitter_fraction=0.3, rng=seeded(42)) for n in range(10)]
    assert a == b
    assert len(set(a)) > 1


def test_huge_attempt_stays_at_cap():
    assert backoff_delay(10**9, base=2.0, cap=30.0, jitter_fraction=0.0, rng=seeded(0)) == 30.0


@given(
    attempt=st.integers(min_value=0, max_value=5000),
    base=st.floats(min_value=0.01, max_value=10.0),
    extra=st.floats(min_value=0.0, max_value=500.0),
    jitter=st.floats(min_value=0.0, max_value=1.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_within_jittered_envelope_and_cap(attempt, base, extra, jitter, seed):
    cap = base + extra
    delay = backoff_delay(attempt, base=base, cap=cap, jitter_fraction=jitter, rng=seeded(seed))
    ceiling = min(cap, base * 2.0 ** min(attempt, 1023))
    assert delay <= cap
    assert ceiling * (1.0 - jitter) - 1e-9 <= delay <= ceiling + 1e-9


@given(base=st.floats(min_value=0.01, max_value=5.0), cap_factor=st.floats(min_value=1.0, max_value=1000.0))
def test_envelope_is_monotone(base, cap_factor):
    cap = base * cap_factor
    envelope = [backoff_delay(n, base=base, cap=cap, jitter_fraction=0.0, rng=seeded(0)) for n in range(40)]
    assert envelope == sorted(envelope)
    assert envelope[-1] == cap


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "jitter"),
    [(-1, 1.0, 2.0, 0.1), (0, 0.0, 2.0, 0.1), (0, 3.0, 2.0, 0.1), (0, 1.0, 2.0, 1.5), (0, 1.0, 2.0, -0.1)],
)
def test_rejects_bad_arguments(attempt, base, cap, jitter):
    with pytest.raises(ValueError, match="must be"):
        backoff_delay(attempt, base=base, cap=cap, jitter_fraction=jitter, rng=seeded(0))


def test_a_policy_is_the_backoff_with_its_parameters():
    policy = RetryPolicy(base=60.0, cap=3600.0, jitter_fraction=0.0)
    assert [policy.delay(n, seeded(0)) for n in (1, 2, 3, 7, 8, 100)] == [60.0, 120.0, 240.0, 3600.0, 3600.0, 3600.0]
    jittered = RetryPolicy(base=1.0, cap=30.0)
    assert jittered.delay(3, seeded(5)) == backoff_delay(2, base=1.0, cap=30.0, jitter_fraction=0.2, rng=seeded(5))


@pytest.mark.parametrize(
    ("base", "cap", "jitter"), [(0.0, 1.0, 0.2), (2.0, 1.0, 0.2), (1.0, 2.0, 1.5), (1.0, 2.0, -0.1)]
)
def test_a_policy_with_impossible_parameters_is_refused_when_made(base: float, cap: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        RetryPolicy(base=base, cap=cap, jitter_fraction=jitter)


def test_a_policy_counts_failures_from_one():
    with pytest.raises(ValueError, match="failures must be >= 1"):
        RetryPolicy(base=1.0, cap=2.0).delay(0, seeded(0))
