"""The sealer numbers drafts, derives hub-made ids from sequence numbers and seals envelopes; no event loop."""

from __future__ import annotations

from datetime import UTC, datetime

import nacl.signing
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.sealer import Draft, Sealer, ordered
from gateway.outbox import Lane
from protocols.envelope import open_envelope
from protocols.keys import HubIdentity, PlatformIdentity
from protocols.record import (
    AlarmBody,
    AlarmState,
    AlarmTier,
    DeviceStatusBody,
    LinkState,
    MeasurementBody,
    RecordKind,
    status_record_id,
)

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
HUB = HubIdentity("seal-core", nacl.signing.SigningKey(b"\x07" * 32))
PLATFORM = PlatformIdentity.generate()


def status(n: int) -> Draft:
    return Draft(DeviceStatusBody(battery=n % 101), Lane.ROUTINE, NOW, None, "cuff")


def alarm(n: int) -> Draft:
    body = AlarmBody(f"a{n}", "bp.systolic", AlarmTier.WARNING, AlarmState.RAISED, 0, "bp_high")
    return Draft(body, Lane.PRIORITY, NOW, bytes([n]) * 16)


def reading(n: int) -> Draft:
    body = MeasurementBody(uuid=0x2A35, raw=bytes([n]), values={"n": n})
    return Draft(body, Lane.ROUTINE, NOW, bytes([0x80 | n]) * 16, "cuff")


drafts = st.lists(
    st.one_of(st.integers(0, 60).map(status), st.integers(0, 60).map(alarm), st.integers(0, 60).map(reading)),
    max_size=80,
)


@given(drafts, st.integers(0, 2**40))
def test_records_are_numbered_in_order_and_hub_made_ids_come_from_their_numbers(
    given_drafts: list[Draft], first: int
) -> None:
    todo = ordered(given_drafts)
    records = Sealer(HUB, PLATFORM.public.box_key).number(todo, range(first, first + len(todo)))
    assert [r.seq for r in records] == list(range(first, first + len(todo)))
    for draft, record in zip(todo, records, strict=True):
        expected = draft.record_id or status_record_id(HUB.hub_id, draft.body.KIND, record.seq)
        assert record.record_id == expected
    assert len({r.record_id for r in records}) == len(records)


@given(drafts)
def test_ordered_puts_priority_first_and_keeps_a_fixed_id_once(given_drafts: list[Draft]) -> None:
    out = ordered(given_drafts)
    lanes = [d.lane for d in out]
    assert lanes == sorted(lanes, key=lambda lane: lane is not Lane.PRIORITY)
    fixed = [d.record_id for d in out if d.record_id is not None]
    assert len(fixed) == len(set(fixed))
    assert {d.record_id for d in given_drafts if d.record_id is not None} == set(fixed)
    assert sum(d.record_id is None for d in out) == sum(d.record_id is None for d in given_drafts)


def test_priority_records_get_envelopes_of_their_own_and_routine_ones_share() -> None:
    todo = ordered([status(1), alarm(1), reading(1), reading(2), alarm(2), status(2)])
    items = Sealer(HUB, PLATFORM.public.box_key).seal(todo, range(10, 16), NOW)
    assert [(i.lane, i.kind, len(i.record_ids)) for i in items] == [
        (Lane.PRIORITY, "alarm", 1),
        (Lane.PRIORITY, "alarm", 1),
        (Lane.ROUTINE, "device_status", 1),
        (Lane.ROUTINE, "measurement", 2),
        (Lane.ROUTINE, "device_status", 1),
    ]
    opened = [open_envelope(i.envelope, PLATFORM.box_key, {HUB.hub_id: HUB.public.verify_key}) for i in items]
    assert [r.seq for o in opened for r in o.decoded] == list(range(10, 16))
    assert [i.envelope_seq for i in items] == [10, 11, 12, 13, 15]
    assert opened[2].decoded[0].record_id == status_record_id(HUB.hub_id, RecordKind.DEVICE_STATUS, 12)


def test_two_reports_of_one_device_in_one_commit_have_different_ids() -> None:
    up = Draft(DeviceStatusBody(link=LinkState.CONNECTED), Lane.ROUTINE, NOW, None, "cuff")
    down = Draft(DeviceStatusBody(link=LinkState.DISCONNECTED), Lane.ROUTINE, NOW, None, "cuff")
    first, second = Sealer(HUB, PLATFORM.public.box_key).number([up, down], range(5, 7))
    assert first.record_id != second.record_id
