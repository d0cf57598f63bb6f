"""User Data Service (0x181C) codec: the User Control Point's requests and responses, Database Change Increment and
User Index, from hand-built bytes and by round trips of every valid value; every malformed value is a UdsError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import DecodeError, EncodeError
from protocols.gatt.uds import (
    Consent,
    DatabaseChangeIncrement,
    DeleteUserData,
    RegisterNewUser,
    UcpOpCode,
    UcpRequest,
    UcpResponse,
    UcpResult,
    UdsError,
    UdsProblem,
    UserIndex,
    decode_request,
    decode_response,
)


def hx(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


codes = st.integers(0, 9999)
indexes = st.integers(0, 254)
requests: st.SearchStrategy[UcpRequest] = st.one_of(
    st.builds(RegisterNewUser, codes),
    st.builds(Consent, indexes, codes),
    st.just(DeleteUserData()),
)
responses = st.one_of(
    st.builds(UcpResponse, st.just(UcpOpCode.REGISTER_NEW_USER), st.just(UcpResult.SUCCESS), indexes),
    st.builds(
        UcpResponse,
        st.sampled_from([UcpOpCode.REGISTER_NEW_USER, UcpOpCode.CONSENT, UcpOpCode.DELETE_USER_DATA]),
        st.sampled_from([r for r in UcpResult if r is not UcpResult.SUCCESS]),
    ),
    st.builds(
        UcpResponse,
        st.sampled_from([UcpOpCode.CONSENT, UcpOpCode.DELETE_USER_DATA]),
        st.just(UcpResult.SUCCESS),
    ),
    st.builds(  # an op code the scale does not know, echoed back
        UcpResponse,
        st.integers(0, 255).filter(lambda op: op not in (1, 2, 3, 0x20)),
        st.sampled_from(UcpResult),
    ),
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("01 D204", RegisterNewUser(1234)),
        ("02 01 0F27", Consent(1, 9999)),
        ("02 00 0000", Consent(0, 0)),
        ("03", DeleteUserData()),
    ],
)
def test_requests(raw: str, expected: UcpRequest) -> None:
    assert decode_request(hx(raw)) == expected
    assert bytes(expected) == hx(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("20 01 01 02", UcpResponse(UcpOpCode.REGISTER_NEW_USER, UcpResult.SUCCESS, 2)),
        ("20 02 01", UcpResponse(UcpOpCode.CONSENT, UcpResult.SUCCESS)),
        ("20 02 05", UcpResponse(UcpOpCode.CONSENT, UcpResult.USER_NOT_AUTHORIZED)),
        ("20 02 03", UcpResponse(UcpOpCode.CONSENT, UcpResult.INVALID_PARAMETER)),
        ("20 03 04", UcpResponse(UcpOpCode.DELETE_USER_DATA, UcpResult.OPERATION_FAILED)),
        ("20 04 02", UcpResponse(4, UcpResult.OP_CODE_NOT_SUPPORTED)),
        ("20 01 04", UcpResponse(UcpOpCode.REGISTER_NEW_USER, UcpResult.OPERATION_FAILED)),
    ],
)
def test_responses(raw: str, expected: UcpResponse) -> None:
    assert decode_response(hx(raw)) == expected
    assert bytes(expected) == hx(raw)


def test_a_response_answers_its_request() -> None:
    consent = Consent(3, 42)
    assert UcpResponse.answering(consent, UcpResult.USER_NOT_AUTHORIZED) == decode_response(hx("20 02 05"))


@given(requests)
def test_requests_round_trip(request: UcpRequest) -> None:
    assert decode_request(bytes(request)) == request


@given(responses)
def test_responses_round_trip(response: UcpResponse) -> None:
    assert decode_response(bytes(response)) == response


@given(st.integers(0, 2**32 - 1), indexes | st.just(0xFF))
def test_characteristics_round_trip(value: int, index: int) -> None:
    assert DatabaseChangeIncrement.from_bytes(bytes(DatabaseChangeIncrement(value))).value == value
    assert UserIndex.from_bytes(bytes(UserIndex(index))) == UserIndex(index)
    assert UserIndex(index).known is (index != 0xFF)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("", UdsProblem.EMPTY),
        ("00", UdsProblem.UNKNOWN_OP_CODE),
        ("04", UdsProblem.UNKNOWN_OP_CODE),  # UDS 1.1 list all users: not carehub's
        ("20 02 01", UdsProblem.UNKNOWN_OP_CODE),  # a response written as a request
        ("01 D2", UdsProblem.WRONG_LENGTH),
        ("01 D204 00", UdsProblem.WRONG_LENGTH),
        ("02 01 0F", UdsProblem.WRONG_LENGTH),
        ("03 00", UdsProblem.WRONG_LENGTH),
        ("01 1027", UdsProblem.CONSENT_CODE_RANGE),  # 10000
        ("02 01 FFFF", UdsProblem.CONSENT_CODE_RANGE),
        ("02 FF 0100", UdsProblem.UNKNOWN_USER_INDEX),
    ],
)
def test_bad_requests(raw: str, problem: UdsProblem) -> None:
    with pytest.raises(UdsError) as caught:
        decode_request(hx(raw))
    assert caught.value.problem is problem
    assert isinstance(caught.value, DecodeError)
    assert caught.value.what == "2A9F"


def test_a_server_answers_each_bad_request_with_its_response_value() -> None:
    assert UdsProblem.UNKNOWN_OP_CODE.response_value() is UcpResult.OP_CODE_NOT_SUPPORTED
    for problem in UdsProblem:
        if problem is not UdsProblem.UNKNOWN_OP_CODE:
            assert problem.response_value() is UcpResult.INVALID_PARAMETER


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("", UdsProblem.EMPTY),
        ("02 01 01", UdsProblem.NOT_A_RESPONSE),
        ("20 02", UdsProblem.WRONG_LENGTH),
        ("20 02 01 00", UdsProblem.WRONG_LENGTH),  # only a new user's response names an index
        ("20 01 01", UdsProblem.WRONG_LENGTH),  # ... and it must
        ("20 01 05 03", UdsProblem.WRONG_LENGTH),
        ("20 02 00", UdsProblem.UNKNOWN_RESULT),
        ("20 02 06", UdsProblem.UNKNOWN_RESULT),
        ("20 20 01", UdsProblem.RESPONSE_TO_RESPONSE),
        ("20 01 01 FF", UdsProblem.UNKNOWN_USER_INDEX),
    ],
)
def test_bad_responses(raw: str, problem: UdsProblem) -> None:
    with pytest.raises(UdsError) as caught:
        decode_response(hx(raw))
    assert caught.value.problem is problem


@given(st.binary(max_size=8))
def test_any_bytes_decode_or_raise_uds_error(raw: bytes) -> None:
    for decoder in (decode_request, decode_response, DatabaseChangeIncrement.from_bytes, UserIndex.from_bytes):
        try:
            value = decoder(raw)
        except UdsError:
            continue
        assert bytes(value) == raw  # what decodes is exactly what was sent


@pytest.mark.parametrize(
    "build",
    [
        lambda: RegisterNewUser(10_000),
        lambda: RegisterNewUser(-1),
        lambda: Consent(0xFF, 1),
        lambda: Consent(256, 1),
        lambda: Consent(1, True),
        lambda: UcpResponse(UcpOpCode.REGISTER_NEW_USER, UcpResult.SUCCESS),
        lambda: UcpResponse(UcpOpCode.CONSENT, UcpResult.SUCCESS, 1),
        lambda: UcpResponse(UcpOpCode.RESPONSE, UcpResult.SUCCESS),
        lambda: UcpResponse(UcpOpCode.CONSENT, 9),  # type: ignore[arg-type]
        lambda: DatabaseChangeIncrement(2**32),
        lambda: UserIndex(-1),
    ],
)
def test_values_that_cannot_be_sent_are_refused(build: object) -> None:
    assert callable(build)
    with pytest.raises(EncodeError):
        build()
