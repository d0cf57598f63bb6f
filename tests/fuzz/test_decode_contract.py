"""The decode contract (issue 19 item 2): for ANY input, only documented errors leave :mod:`protocols`.

Every public decoding entry point a radio or the network reaches (the targets of ``scripts/fuzz``) is fed arbitrary
bytes and structured hostile CBOR: huge bignums, uint64 values at 2**63 and 2**64 - 1, negative integers at -2**64,
nesting far past the limit, declared lengths of 2**64 - 1, indefinite lengths, every tag, NaN and infinities,
duplicate keys, and valid messages with one field made hostile. The fuzzer runs the same targets far longer.
"""

from __future__ import annotations

import random

import fuzz_engine
import fuzz_inputs
import fuzz_targets
import pytest
from fuzz_targets import TARGETS, Target
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TEMPLATES = fuzz_inputs.cbor_templates(fuzz_targets.seeds())
CBOR_TARGETS = [t for t in TARGETS if t.cbor_body]
CONTRACT = settings(
    max_examples=40,
    deadline=None,  # slowness is the fuzzer's per-input CPU limit, not a wall-clock deadline on a shared machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def check(target: Target, data: bytes) -> None:
    _, failure, _ = fuzz_engine.run_one(target, data, fuzz_engine.DEFAULT_TIME_LIMIT)
    if failure is not None:
        pytest.fail(f"{target.name}: {failure.problem} {failure.where} {failure.detail}; input {data.hex()[:2000]}")


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
@CONTRACT
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes(target: Target, data: bytes) -> None:
    check(target, data)


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
@CONTRACT
@given(seed=st.sampled_from(fuzz_targets.seeds()), edits=st.integers(0, 2**32))
def test_mutated_vectors(target: Target, seed: bytes, edits: int) -> None:
    check(
        target,
        fuzz_inputs.mutate(
            random.Random(edits),  # noqa: S311 - reproducible, not secret
            seed,
            fuzz_targets.seeds(),
        ),
    )


@pytest.mark.parametrize("target", CBOR_TARGETS, ids=lambda t: t.name)
@CONTRACT
@given(data=fuzz_inputs.cbor_items())
def test_hostile_cbor_items(target: Target, data: bytes) -> None:
    check(target, data)


@pytest.mark.parametrize("target", CBOR_TARGETS, ids=lambda t: t.name)
@CONTRACT
@given(data=fuzz_inputs.templated(TEMPLATES))
def test_valid_messages_with_one_hostile_field(target: Target, data: bytes) -> None:
    check(target, data)
