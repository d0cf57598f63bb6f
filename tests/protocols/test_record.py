"""Records: round trips for every kind, deterministic bytes, strict decoding, stable record ids."""

from __future__ import annotations

import contextlib
import datetime as dt

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import cbor
from protocols.errors import DecodeError, EncodeError
from protocols.record import (
    AlarmBody,
    AlarmState,
    AlarmTier,
    ClockCorrection,
    DeviceStatusBody,
    DownRefusal,
    DownRefusedBody,
    EvictionBody,
    LinkFailure,
    LinkState,
    MeasurementBody,
    PanicBody,
    PanicEventType,
    Record,
    RecordKind,
    alarm_record_id,
    decode_record,
    measurement_record_id,
    panic_record_id,
    peek_record_hub,
    status_record_id,
)

UTC = dt.UTC
T0 = dt.datetime(2026, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)

times = st.datetimes(
    min_value=dt.datetime(1970, 1, 1),  # noqa: DTZ001 - hypothesis takes naive bounds and adds the zone
    max_value=dt.datetime(2200, 1, 1),  # noqa: DTZ001 - same
    timezones=st.just(UTC),
)
ids16 = st.binary(min_size=16, max_size=16)
names = st.text(min_size=1, max_size=20)
hub_ids = st.from_regex(r"[a-z0-9][a-z0-9-]{1,20}", fullmatch=True)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**63 - 1)  # every uint is at most cbor.MAX_UINT (docs/protocol.md §1)
numbers = st.one_of(st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


@st.composite
def measurement_bodies(draw: st.DrawFn) -> MeasurementBody:
    corrected = draw(st.booleans())
    return MeasurementBody(
        uuid=draw(st.integers(0, 0xFFFF)),
        raw=draw(st.binary(max_size=40)),
        values=draw(st.dictionaries(st.text(max_size=10), json_values, max_size=5)),
        resident_id=draw(st.none() | names),
        clock_corrected=corrected,
        corrected_time=draw(times) if corrected else None,
        unreliable=draw(st.booleans()),
    )


bodies = st.one_of(
    measurement_bodies(),
    st.builds(
        AlarmBody,
        alarm_id=names,
        condition=names,
        tier=st.sampled_from(AlarmTier),
        state=st.sampled_from(AlarmState),
        revision=u32,
        message=st.text(min_size=1, max_size=60),
        trigger_record_ids=st.lists(ids16, max_size=3).map(tuple),
        value=st.none() | numbers,
        threshold=st.none() | numbers,
        resident_id=st.none() | names,
    ),
    st.builds(
        PanicBody,
        pendant_id=st.just("pendant-1"),
        event=st.sampled_from(PanicEventType),
        counter=u32,
        battery=st.none() | st.integers(0, 100),
        alarm_id=st.none() | names,
    ),
    st.builds(
        DeviceStatusBody,
        battery=st.none() | st.integers(0, 100),
        link=st.none() | st.sampled_from([LinkState.CONNECTED, LinkState.DISCONNECTED]),
        clock_correction=st.none()
        | st.builds(ClockCorrection, old_device_time=names, new_time=times, offset_seconds=st.none() | numbers),
        detail=st.none() | names,
        raw=st.none() | st.binary(max_size=512),
    ),
    st.builds(
        DeviceStatusBody,
        link=st.just(LinkState.FAILED),
        failure=st.sampled_from(LinkFailure),
        detail=st.none() | names,
    ),
    st.builds(
        DownRefusedBody,
        down_seq=u64,
        message_type=st.sampled_from(["thresholds", "alarm_ack", "alarm_snooze"]),
        reason=st.sampled_from(DownRefusal),
        detail=names,
        key=st.none() | names,
    ),
    st.builds(
        EvictionBody,
        count=u64,
        first_seq=st.integers(0, 1000),
        last_seq=st.integers(1000, 2000),
        bytes_freed=u64,
        oldest_record_id=st.none() | ids16,
        newest_record_id=st.none() | ids16,
    ),
)


@st.composite
def records(draw: st.DrawFn) -> Record:
    body = draw(bodies)
    device: str | None
    if isinstance(body, PanicBody):
        device = body.pendant_id
    elif isinstance(body, MeasurementBody | DeviceStatusBody):
        device = draw(names)
    else:
        device = draw(st.none() | names)
    return Record(
        record_id=draw(ids16),
        hub_id=draw(hub_ids),
        seq=draw(u64),
        hub_time=draw(times),
        body=body,
        device_id=device,
        device_time=draw(st.none() | st.text(min_size=1, max_size=19)),
    )


def bp_record(**changes: object) -> Record:
    raw = bytes.fromhex("1e7800500060000000")
    fields: dict[str, object] = {
        "record_id": measurement_record_id("bp-cuff-1", 0x2A35, raw, None, "2026-03-14T09:20:00", T0),
        "hub_id": "home-0042",
        "seq": 7,
        "hub_time": T0,
        "body": MeasurementBody(
            uuid=0x2A35,
            raw=raw,
            values={"systolic": 120, "diastolic": 80.5, "unit": "mmHg", "flags": [True, None]},
            resident_id="resident-1",
        ),
        "device_id": "bp-cuff-1",
        "device_time": "2026-03-14T09:20:00",
    }
    fields.update(changes)
    return Record(**fields)  # type: ignore[arg-type]


@settings(max_examples=300)
@given(records())
def test_every_kind_round_trips(record: Record) -> None:
    data = record.to_cbor()
    assert Record.from_cbor(data) == record
    assert decode_record(data).to_cbor() == data


@given(records())
def test_same_record_same_bytes(record: Record) -> None:
    again = Record.from_cbor(record.to_cbor())
    assert again.to_cbor() == record.to_cbor()


def test_kind_follows_body() -> None:
    assert bp_record().kind is RecordKind.MEASUREMENT


def test_dict_key_order_does_not_change_bytes() -> None:
    a = bp_record(body=MeasurementBody(uuid=0x2A35, raw=b"\x01", values={"a": 1, "b": {"x": 1, "y": 2}}))
    b = bp_record(body=MeasurementBody(uuid=0x2A35, raw=b"\x01", values={"b": {"y": 2, "x": 1}, "a": 1}))
    assert a.to_cbor() == b.to_cbor()


def test_tuples_in_values_become_lists() -> None:
    body = MeasurementBody(uuid=0x2A35, raw=b"", values={"pair": (1, 2)})
    assert body.values == {"pair": [1, 2]}


@given(records(), st.data())
def test_every_strict_prefix_is_a_decode_error(record: Record, data: st.DataObject) -> None:
    encoded = record.to_cbor()
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(DecodeError):
        Record.from_cbor(encoded[:cut])


def test_all_prefixes_of_one_record() -> None:
    encoded = bp_record().to_cbor()
    for cut in range(len(encoded)):
        with pytest.raises(DecodeError):
            Record.from_cbor(encoded[:cut])


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        Record.from_cbor(data)


@given(records(), st.data())
def test_mutated_records_raise_only_decode_error(record: Record, data: st.DataObject) -> None:
    encoded = bytearray(record.to_cbor())
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] = data.draw(st.integers(0, 255))
    with contextlib.suppress(DecodeError):
        Record.from_cbor(bytes(encoded))


def _reencode(record: Record, mutate: object) -> bytes:
    value = cbor2.loads(record.to_cbor())
    mutate(value)  # type: ignore[operator]
    return bytes(cbor2.dumps(value, canonical=True))


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda m: m.update(v=2), "version"),
        (lambda m: m.update(kind="weather"), "kind"),
        (lambda m: m.update(extra=1), "keys"),
        (lambda m: m.pop("device_time"), "keys"),
        (lambda m: m.update(seq=-1), "seq"),
        (lambda m: m.update(seq=True), "seq"),
        (lambda m: m.update(id=b"short"), "id"),
        (lambda m: m.update(hub="Not/A/Hub"), "hub"),
        (lambda m: m["body"].update(uuid="2A35"), "uuid"),
        (lambda m: m["body"].update(values={"x": float("nan")}), "non-finite"),
        (lambda m: m["body"].update(clock_corrected=True), "corrected_time"),
        (lambda m: m.update(device_id=None), "device_id"),
    ],
)
def test_invalid_fields_are_decode_errors(mutate: object, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        Record.from_cbor(_reencode(bp_record(), mutate))


def test_non_deterministic_encodings_are_rejected() -> None:
    value = cbor2.loads(bp_record().to_cbor())
    with pytest.raises(DecodeError, match="deterministic"):
        Record.from_cbor(bytes(cbor2.dumps(value)))  # keys in insertion order, not sorted
    with pytest.raises(DecodeError, match="trailing"):
        Record.from_cbor(bp_record().to_cbor() + b"\x00")
    with pytest.raises(DecodeError):
        Record.from_cbor(bytes(cbor2.dumps(value, canonical=True, indefinite_containers=True)))


def test_tagged_values_are_rejected() -> None:
    with pytest.raises(DecodeError):
        cbor.loads(bytes.fromhex("c11a514b67b0"))  # tag 1, epoch time
    with pytest.raises(DecodeError):
        cbor.loads(bytes.fromhex("c249010000000000000000"))  # bignum 2**64
    with pytest.raises(DecodeError):
        cbor.loads(bytes.fromhex("d9d9f700"))  # self-described CBOR


@pytest.mark.parametrize(
    "build",
    [
        lambda: bp_record(record_id=b"x"),
        lambda: bp_record(hub_id="Hub With Spaces"),
        lambda: bp_record(hub_time=dt.datetime(2026, 1, 1)),  # noqa: DTZ001 - naive on purpose
        lambda: bp_record(device_id=None),
        lambda: bp_record(seq=-1),
        lambda: MeasurementBody(uuid=0x2A35, raw=b"", values={"x": float("inf")}),
        lambda: MeasurementBody(uuid=0x2A35, raw=b"", values={"x": object()}),
        lambda: MeasurementBody(uuid=0x2A35, raw=b"", values={}, clock_corrected=True),
        lambda: MeasurementBody(uuid=0x1_0000, raw=b"", values={}),
        lambda: PanicBody("p", PanicEventType.PRESS, 2**32),
        lambda: EvictionBody(count=1, first_seq=5, last_seq=4, bytes_freed=0),
        lambda: Record(b"\x00" * 16, "home-1", 1, T0, PanicBody("p", PanicEventType.PRESS, 1), device_id="q"),
    ],
)
def test_invalid_records_cannot_be_built(build: object) -> None:
    with pytest.raises(EncodeError):
        build()  # type: ignore[operator]


# --- record ids ------------------------------------------------------------------------------------------------------


@given(
    names,
    st.integers(0, 0xFFFF),
    st.binary(max_size=30),
    st.none() | st.integers(0, 65535),
    st.none() | names,
    times,
    times,
)
def test_measurement_id_is_stable(  # noqa: PLR0917 - one parameter per id input
    device: str, uuid: int, raw: bytes, seq: int | None, stamp: str | None, t1: dt.datetime, t2: dt.datetime
) -> None:
    first = measurement_record_id(device, uuid, raw, seq, stamp, t1)
    assert len(first) == 16
    assert measurement_record_id(device, uuid, raw, seq, stamp, t1) == first
    if seq is not None or stamp is not None:
        # Redelivery later (another receive time) must give the same id.
        assert measurement_record_id(device, uuid, raw, seq, stamp, t2) == first


def test_measurement_ids_differ_by_every_input() -> None:
    base = measurement_record_id("cuff", 0x2A35, b"\x01", 5, None, T0)
    assert measurement_record_id("cuff2", 0x2A35, b"\x01", 5, None, T0) != base
    assert measurement_record_id("cuff", 0x2A18, b"\x01", 5, None, T0) != base
    assert measurement_record_id("cuff", 0x2A35, b"\x02", 5, None, T0) != base
    assert measurement_record_id("cuff", 0x2A35, b"\x01", 6, None, T0) != base
    by_time = measurement_record_id("cuff", 0x2A35, b"\x01", None, "2026-01-01T00:00:00", T0)
    assert by_time != base
    received = measurement_record_id("cuff", 0x2A35, b"\x01", None, None, T0)
    assert received != by_time
    assert measurement_record_id("cuff", 0x2A35, b"\x01", None, None, T0 + dt.timedelta(seconds=1)) != received


def test_known_record_ids() -> None:
    # Fixed vectors, also in docs/protocol.md: a platform reimplementing ids can check against them.
    raw = bytes.fromhex("1e7800500060000000")
    assert measurement_record_id("bp-cuff-1", 0x2A35, raw, 17, None, T0).hex() == "97e8eaaf5732a893e608aeb4361fdf2a"
    by_time = measurement_record_id("bp-cuff-1", 0x2A35, raw, None, "2026-03-14T09:20:00", T0)
    assert by_time.hex() == "e93e1bf727962b6718a84d1f31b60a07"
    by_receipt = measurement_record_id("bp-cuff-1", 0x2A35, raw, None, None, T0)
    assert by_receipt.hex() == "3b2efc1ed9ec2174372981636a2feba2"
    assert panic_record_id("pendant-1", 42, PanicEventType.PRESS).hex() == "eb38172ce41a1f4100710afd0ba7215b"
    assert alarm_record_id("home-0042", "alarm-7", AlarmState.RAISED, 0).hex() == "be4c3ea8849ca509fb79813fb386b5e3"
    # BLAKE2b-128 keyed "carehub/v1/record-id" over CBOR ["status", "home-0042", "device_status", 3] (§3.7).
    assert status_record_id("home-0042", RecordKind.DEVICE_STATUS, 3).hex() == "07bc6a2435f613e32fc51cb42c85753a"


def test_ids_of_other_kinds_differ_by_identity() -> None:
    press = panic_record_id("pendant-1", 42, PanicEventType.PRESS)
    assert press != panic_record_id("pendant-1", 42, PanicEventType.CANCEL)
    assert press != panic_record_id("pendant-1", 43, PanicEventType.PRESS)
    assert alarm_record_id("home-1", "a1", AlarmState.RAISED, 0) != alarm_record_id(
        "home-1", "a1", AlarmState.RAISED, 1
    )
    assert status_record_id("home-1", RecordKind.DEVICE_STATUS, 3) != status_record_id("home-1", RecordKind.EVICTION, 3)
    assert status_record_id("home-1", RecordKind.DEVICE_STATUS, 3) != status_record_id(
        "home-1", RecordKind.DEVICE_STATUS, 4
    )


@pytest.mark.parametrize("hub", ["h1", "home-0042", "a" * 23, "b" * 24, "c" * 63])
def test_peek_record_hub_reads_the_prefix_or_decodes(hub: str) -> None:
    record = Record(
        record_id=bytes(16),
        hub_id=hub,
        seq=1,
        hub_time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        body=DownRefusedBody(1, "thresholds", DownRefusal.UNKNOWN_RESIDENT, "no such resident"),
    )
    assert peek_record_hub(record.to_cbor()) == hub
    with pytest.raises(DecodeError):
        peek_record_hub(record.to_cbor()[:30])


cbor_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**64), 2**64 - 1),
        st.floats(allow_nan=False),
        st.text(max_size=6),
        st.binary(max_size=6),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=30), st.sampled_from(["a", "b", "aa", "z", "é", "ab"])), inner),
    ),
    max_leaves=16,
)


@given(cbor_values)
def test_encoding_is_the_deterministic_one_whatever_the_map_order(value: cbor.CborValue) -> None:
    expected = bytes(cbor2.dumps(value, canonical=True))
    assert cbor.dumps(value) == expected  # the plain fast path (ordered keys, no floats) included
    assert cbor.loads(expected) == value
    shuffled = bytes(cbor2.dumps(value))  # maps in their own order, floats in 64 bits
    if shuffled != expected:
        with pytest.raises(DecodeError, match="deterministic"):
            cbor.loads(shuffled)


@given(st.dictionaries(st.text(max_size=30), st.integers(0, 99), min_size=2))
def test_maps_in_deterministic_key_order_encode_as_cbor2_canonical(value: dict[str, int]) -> None:
    ordered = dict(sorted(value.items(), key=lambda kv: (len(kv[0].encode()), kv[0].encode())))
    assert cbor.dumps(ordered) == bytes(cbor2.dumps(value, canonical=True)) == bytes(cbor2.dumps(ordered))


def _status_record(body_map: dict[str, object]) -> bytes:
    record = Record(bytes(16), "home-1", 5, T0, DeviceStatusBody(battery=50), device_id="bp-cuff-1")
    value = cbor.loads(record.to_cbor())
    assert isinstance(value, dict)
    value["body"] = body_map
    return cbor.dumps(value)


def test_a_first_revision_device_status_body_still_decodes() -> None:
    # §3.4 before the failure/detail/raw keys: three keys only.
    data = _status_record({"battery": 40, "link": "connected", "clock": None})
    body = decode_record(data).body
    assert body == DeviceStatusBody(battery=40, link=LinkState.CONNECTED)


@pytest.mark.parametrize(
    "body_map",
    [
        {"battery": None, "link": "failed", "clock": None, "failure": None, "detail": None, "raw": None},
        {"battery": None, "link": "connected", "clock": None, "failure": "auth", "detail": None, "raw": None},
        {"battery": None, "link": "silent", "clock": None, "failure": None, "detail": None, "raw": None},
        {"battery": None, "link": None, "clock": None, "failure": None, "detail": None},
        {"battery": None, "link": None, "clock": None, "failure": None, "detail": None, "raw": b"x" * 513},
    ],
)
def test_inconsistent_device_status_bodies_are_refused(body_map: dict[str, object]) -> None:
    with pytest.raises(DecodeError):
        decode_record(_status_record(body_map))


def test_a_failed_link_names_its_failure_and_nothing_else_does() -> None:
    with pytest.raises(EncodeError):
        DeviceStatusBody(link=LinkState.FAILED)
    with pytest.raises(EncodeError):
        DeviceStatusBody(link=LinkState.DISCONNECTED, failure=LinkFailure.GONE)
    assert DeviceStatusBody(link=LinkState.FAILED, failure=LinkFailure.GONE).failure is LinkFailure.GONE
