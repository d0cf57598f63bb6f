"""Down-message decisions never raise, refuse what cannot apply, and survive as cursors (issue 13.6); no event loop."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.downlink import (
    REFUSED_CURSOR,
    SEQ_CURSOR,
    Acknowledge,
    ApplyThresholds,
    Downlink,
    Refuse,
    Snooze,
    Stale,
    describe_refusals,
    parse_seq,
    thresholds_cursor,
)
from gateway.thresholds import Key, resolve_thresholds
from protocols.messages import AlarmAcknowledgement, AlarmSnooze, DownMessage, ThresholdUpdate
from protocols.record import DownRefusal

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
BASE = {"r1": resolve_thresholds(["hypertension"]), "r2": resolve_thresholds()}
KNOWN_ALARMS = frozenset({"a1", "panic-1"})

keys = st.sampled_from([k.value for k in Key]) | st.sampled_from(["bp.sys", "nope", "glucose.low"])
values = st.none() | st.integers(-10, 400) | st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
updates = st.builds(ThresholdUpdate, st.sampled_from(["r1", "r2", "nobody"]), st.dictionaries(keys, values, max_size=6))
acks = st.builds(AlarmAcknowledgement, st.sampled_from(["a1", "panic-1", "zz"]), st.just("Mei Lin"), st.just(NOW))
snoozes = st.builds(AlarmSnooze, st.sampled_from(["a1", "zz"]), st.just("Mei Lin"), st.integers(1, 86400), st.just(NOW))
bodies = st.one_of(updates, acks, snoozes)
seqs = st.integers(0, 2**63 - 1)


def message(seq: int, body: ThresholdUpdate | AlarmAcknowledgement | AlarmSnooze) -> DownMessage:
    return DownMessage("hub-1", seq, NOW, body)


@given(st.lists(st.tuples(seqs, bodies), max_size=30))
def test_every_message_gets_a_decision_and_the_state_follows_what_was_committed(
    messages: list[tuple[int, ThresholdUpdate | AlarmAcknowledgement | AlarmSnooze]],
) -> None:
    link = Downlink(BASE)
    refused = 0
    for seq, body in messages:
        before = link.last_seq
        decision = link.decide(message(seq, body), KNOWN_ALARMS.__contains__)
        match decision:
            case Stale():
                assert seq <= before
            case Refuse():
                refused += 1
                assert 1 <= len(decision.detail) <= 256
            case ApplyThresholds():
                assert decision.thresholds == BASE[decision.resident].updated(decision.overrides)
            case Acknowledge() | Snooze():
                assert decision.request.alarm_id in KNOWN_ALARMS
        cursors = link.cursors(decision)
        assert (SEQ_CURSOR in cursors) == (not isinstance(decision, Stale))
        link.committed(decision)
        assert link.last_seq == max(before, seq)
        # What was committed restores the same state.
        again = Downlink(BASE, parse_seq(cursors.get(SEQ_CURSOR, str(link.last_seq))), cursors.get(REFUSED_CURSOR))
        assert again.last_seq == link.last_seq
        if REFUSED_CURSOR in cursors:
            assert again.refused == link.refused == refused
        if isinstance(decision, ApplyThresholds):
            restored = again.restore(decision.resident, cursors[thresholds_cursor(decision.resident)])
            assert restored == decision.thresholds


def test_inapplicable_messages_are_refused_with_their_reason() -> None:
    link = Downlink(BASE)
    cases: list[tuple[ThresholdUpdate | AlarmAcknowledgement | AlarmSnooze, DownRefusal, str]] = [
        (
            ThresholdUpdate("r1", {"bp.systolic.critical_high": 50}),
            DownRefusal.INVALID_THRESHOLD,
            "bp.systolic.critical_high",
        ),
        (ThresholdUpdate("r1", {"bp.sys": 150}), DownRefusal.INVALID_THRESHOLD, "bp.sys"),
        (ThresholdUpdate("nobody", {}), DownRefusal.UNKNOWN_RESIDENT, "nobody"),
        (AlarmAcknowledgement("zz", "Mei Lin", NOW), DownRefusal.UNKNOWN_ALARM, "zz"),
        (AlarmSnooze("zz", "Mei Lin", 60, NOW), DownRefusal.UNKNOWN_ALARM, "zz"),
    ]
    for n, (body, reason, key) in enumerate(cases, start=1):
        decision = link.decide(message(n, body), KNOWN_ALARMS.__contains__)
        assert isinstance(decision, Refuse)
        assert (decision.reason, decision.key, decision.seq) == (reason, key, n)
        link.committed(decision)
    assert link.refused == len(cases)
    line = describe_refusals(
        link.cursors(Refuse(9, "thresholds", DownRefusal.UNKNOWN_RESIDENT, "no such resident")).get(REFUSED_CURSOR)
    )
    assert line is not None
    assert "6 platform message(s) refused" in line


def test_a_null_value_restores_the_configured_threshold() -> None:
    link = Downlink(BASE)
    first = link.decide(message(1, ThresholdUpdate("r2", {"spo2.low.warning": 91})), KNOWN_ALARMS.__contains__)
    assert isinstance(first, ApplyThresholds)
    link.committed(first)
    assert link.overrides("r2") == {"spo2.low.warning": 91.0}
    second = link.decide(message(2, ThresholdUpdate("r2", {"spo2.low.warning": None})), KNOWN_ALARMS.__contains__)
    assert isinstance(second, ApplyThresholds)
    assert second.thresholds == BASE["r2"]
    link.committed(second)
    assert link.overrides("r2") == {}


def test_a_uint64_sequence_number_round_trips_as_text() -> None:
    link = Downlink(BASE)
    decision = link.decide(message(2**63 - 1, AlarmAcknowledgement("a1", "Mei", NOW)), KNOWN_ALARMS.__contains__)
    assert link.cursors(decision)[SEQ_CURSOR] == str(2**63 - 1)
    assert parse_seq(str(2**64 - 1)) == 2**64 - 1
    assert parse_seq(7) == 7
    assert parse_seq(None) == 0
    assert parse_seq("x") == 0
