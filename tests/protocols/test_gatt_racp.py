"""Record Access Control Point (0x2A52): every op code, operator, filter and response, from hand-built bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from strategies import racp_requests, racp_responses

from protocols import gatt
from protocols.datetime_ import DateTime
from protocols.errors import DecodeError, EncodeError
from protocols.gatt import RacpFilterType, RacpOpCode, RacpOperator, RacpRequest, RacpResponse, RacpResponseCode


def hx(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("01 03 01 2A00", RacpRequest.report_greater_or_equal(42)),
        ("01 02 01 2A00", RacpRequest.report_less_or_equal(42)),
        ("01 04 01 0A00 1400", RacpRequest.report_range(10, 20)),
        ("01 01", RacpRequest.report_all()),
        ("01 05", RacpRequest.report_first()),
        ("01 06", RacpRequest.report_last()),
        ("04 01", RacpRequest.report_number_of_records()),
        ("02 01", RacpRequest.delete_all()),
        ("03 00", RacpRequest.abort()),
        ("01 03 02 E2 07 04 11 0F 33 00", RacpRequest.report_since(DateTime(2018, 4, 17, 15, 51))),
    ],
)
def test_requests(raw: str, expected: RacpRequest) -> None:
    assert gatt.decode("2A52", hx(raw)) == expected
    assert bytes(expected) == hx(raw)


def test_request_as_dict() -> None:
    assert gatt.decode("2A52", hx("01 03 01 2A00")).as_dict() == {
        "op_code": 1,
        "op_code_name": "report_stored_records",
        "operator": 3,
        "operator_name": "greater_than_or_equal_to",
        "filter_type": 1,
        "operand": [42],
        "raw_operand": None,
        "request_op_code": None,
        "response_code": None,
        "number_of_records": None,
    }
    timed = gatt.decode("2A52", hx("01 04 02 E2 07 04 11 0F 33 00 E2 07 04 11 10 00 00")).as_dict()
    assert timed["operand"] == ["2018-04-17T15:51:00", "2018-04-17T16:00:00"]
    assert timed["filter_type"] == RacpFilterType.USER_FACING_TIME


def test_responses() -> None:
    success = gatt.decode("2A52", hx("06 00 01 01"))
    assert success == RacpResponse.response(RacpOpCode.REPORT_STORED_RECORDS, RacpResponseCode.SUCCESS)
    assert success.as_dict() == {
        "op_code": 6,
        "op_code_name": "response_code",
        "operator": 0,
        "request_op_code": 1,
        "response_code": 1,
        "response_code_name": "success",
        "number_of_records": None,
    }
    assert success.as_dict()["response_code"] in (RacpResponseCode.SUCCESS, RacpResponseCode.NO_RECORDS_FOUND)
    none_found = gatt.decode("2A52", hx("06 00 01 06"))
    assert none_found.as_dict()["response_code"] == RacpResponseCode.NO_RECORDS_FOUND
    count = gatt.decode("2A52", hx("05 00 2C01"))
    assert count == RacpResponse.count(300)
    assert count.as_dict()["number_of_records"] == 300
    assert bytes(count) == hx("05 00 2C01")


@pytest.mark.parametrize(
    ("raw", "count", "size"), [("05 00 07", 7, 1), ("05 00 0700", 7, 2), ("05 00 07000100", 65543, 4)]
)
def test_count_widths(raw: str, count: int, size: int) -> None:
    m = gatt.decode("2A52", hx(raw))
    assert isinstance(m, RacpResponse)
    assert (m.number_of_records, m.count_size) == (count, size)
    assert bytes(m) == hx(raw)


@pytest.mark.parametrize("code", [0, 10, 255])
def test_rfu_response_code_is_kept(code: int) -> None:
    m = gatt.decode("2A52", bytes([6, 0, 1, code]))
    assert isinstance(m, RacpResponse)
    assert m.response_code == code
    assert m.as_dict()["response_code_name"] is None


def test_rfu_op_code_operator_and_filter_are_kept_raw() -> None:
    op = gatt.decode("2A52", hx("07 01 AA BB"))
    assert op == RacpRequest(7, 1, raw_operand=hx("AA BB"))
    operator = gatt.decode("2A52", hx("01 09 01"))
    assert operator == RacpRequest(1, 9, raw_operand=hx("01"))
    filt = gatt.decode("2A52", hx("01 03 07 2A00"))
    assert filt == RacpRequest(1, 3, 7, raw_operand=hx("2A00"))
    assert filt.as_dict()["raw_operand"] == "2a00"


@pytest.mark.parametrize(
    "raw",
    [
        "01",  # operator missing
        "01 03",  # filter type missing
        "01 03 01 2A",  # truncated uint16
        "01 04 01 0A00",  # range with one value
        "01 03 01 2A00 00",  # trailing byte
        "01 01 00",  # operand after All records
        "01 03 02 E2 07 0D 11 0F 33 00",  # month 13 in a time filter
        "05 00",  # count missing
        "05 00 010203",  # 3-byte count
        "05 01 0100",  # response with non-Null operator
        "06 00 01",  # response code missing
        "06 00 01 01 00",  # trailing byte
    ],
)
def test_malformed(raw: str) -> None:
    with pytest.raises(DecodeError) as info:
        gatt.decode("2A52", hx(raw))
    assert info.value.what == "2A52"


@settings(max_examples=100)
@given(req=racp_requests())
def test_structured_request_prefixes_fail(req: RacpRequest) -> None:
    wire = bytes(req)
    structured = req.op_code in (1, 2, 3, 4) and req.operator in range(7) and not req.raw_operand
    for length in range(len(wire) if structured else min(len(wire), 2)):
        with pytest.raises(DecodeError):
            gatt.decode("2A52", wire[:length])


@settings(max_examples=100)
@given(response=racp_responses())
def test_response_prefixes_fail_or_shrink_the_count(response: RacpResponse) -> None:
    wire = bytes(response)
    for length in range(len(wire)):
        if response.op_code == RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE and length - 2 in (1, 2):
            shorter = gatt.decode("2A52", wire[:length])
            assert isinstance(shorter, RacpResponse)
            assert shorter.count_size == length - 2
        else:
            with pytest.raises(DecodeError):
                gatt.decode("2A52", wire[:length])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"op_code": 5},
        {"op_code": 1, "operator": 3},
        {"op_code": 1, "operator": 3, "filter_type": 1, "values": (1, 2)},
        {"op_code": 1, "operator": 1, "filter_type": 1},
        {"op_code": 1, "operator": 3, "filter_type": 2, "values": (5,)},
        {"op_code": 1, "operator": 3, "filter_type": 1, "values": (DateTime(2020, 1, 1),)},
        {"op_code": 1, "operator": 3, "filter_type": 1, "values": (70000,)},
        {"op_code": 1, "operator": 1, "raw_operand": b"\x00"},
        {"op_code": 9, "operator": 1, "filter_type": 1},
    ],
)
def test_request_invariants(kwargs: dict[str, object]) -> None:
    with pytest.raises(EncodeError):
        RacpRequest(**kwargs)  # type: ignore[arg-type]


def test_response_invariants() -> None:
    with pytest.raises(EncodeError):
        RacpResponse(RacpOpCode.REPORT_STORED_RECORDS)
    with pytest.raises(EncodeError):
        RacpResponse(RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE, number_of_records=300, count_size=1)
    with pytest.raises(EncodeError):
        RacpResponse(RacpOpCode.RESPONSE_CODE, request_op_code=1)
    with pytest.raises(EncodeError):
        RacpResponse.count(70000)


def test_class_decoders_refuse_the_other_direction() -> None:
    with pytest.raises(DecodeError):
        RacpRequest.from_bytes(hx("06 00 01 01"))
    with pytest.raises(DecodeError):
        RacpResponse.from_bytes(hx("01 01"))


def test_operator_enum_values() -> None:
    assert [int(o) for o in RacpOperator] == list(range(7))
    assert [int(c) for c in RacpResponseCode] == list(range(1, 10))
