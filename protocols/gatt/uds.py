"""User Data Service (UDS 1.0, service 0x181C): what a multi-user scale needs before it sends a user's weights.

A scale with several users (Weight Scale Service 0x181D with the "multiple users" feature) keeps each user's
measurements apart and sends those of a registered user only to a client that gave that user's consent on the current
connection: the client writes the User Control Point and the scale indicates the result.

User Control Point, 0x2A9F (write with response, indicate): ``Op Code uint8 | Parameter``.

========  =====================  =================================================================
Op code   Procedure              Parameter
========  =====================  =================================================================
0x01      Register New User      Consent Code uint16 (0..9999)
0x02      Consent                User Index uint8 (0..254) | Consent Code uint16 (0..9999)
0x03      Delete User Data       none (the data of the user consented to on this connection)
0x20      Response Code          Request Op Code uint8 | Response Value uint8 | [Response Parameter]
========  =====================  =================================================================

Response values: 0x01 success, 0x02 op code not supported, 0x03 invalid parameter, 0x04 operation failed, 0x05 user
not authorized (a wrong consent code). A successful Register New User response carries the new User Index (uint8);
no other response this module knows carries a parameter.

Database Change Increment, 0x2A99: uint32, bumped by whoever changes the user's data. User Index, 0x2A9A: uint8, the
user consented to on this connection, 0xFF ("unknown user") when none.

Strictness: every value is decoded exactly; a short or long value, a consent code above 9999, the unknown user as a
consent's index, an unknown response value or a response without the Response Code op code raise :class:`UdsError`
(a :class:`~protocols.errors.DecodeError`), whose :attr:`UdsError.problem` says which, so that a server can answer
a bad request with the right response value (:meth:`UdsProblem.response_value`). Nothing else escapes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Final, Self

from protocols.errors import DecodeError, EncodeError
from protocols.gatt.common import U8, U16, U32, check_uint

__all__ = [
    "CONSENT_CODE_MAX",
    "DATABASE_CHANGE_INCREMENT",
    "SERVICE",
    "UNKNOWN_USER",
    "USER_CONTROL_POINT",
    "USER_INDEX",
    "Consent",
    "DatabaseChangeIncrement",
    "DeleteUserData",
    "RegisterNewUser",
    "UcpOpCode",
    "UcpRequest",
    "UcpResponse",
    "UcpResult",
    "UdsError",
    "UdsProblem",
    "UserIndex",
    "decode_request",
    "decode_response",
]

SERVICE: Final = 0x181C
USER_CONTROL_POINT: Final = 0x2A9F
DATABASE_CHANGE_INCREMENT: Final = 0x2A99
USER_INDEX: Final = 0x2A9A
#: The largest consent code (UDS 1.0: 0x0000..0x270F).
CONSENT_CODE_MAX: Final = 9999
#: The User Index of nobody in particular (a guest's weighing; the User Index characteristic with no consent).
UNKNOWN_USER: Final = 0xFF

_UCP: Final = "2A9F"
_INDEX_WHAT: Final = "2A9A"
_INCREMENT: Final = "2A99"


class UcpOpCode(enum.IntEnum):
    """The User Control Point op codes carehub knows (UDS 1.0); 0x04 and 0x05 (UDS 1.1 list and delete users) are
    not used and answered "op code not supported" by carehub's simulated scale."""

    REGISTER_NEW_USER = 0x01
    CONSENT = 0x02
    DELETE_USER_DATA = 0x03
    RESPONSE = 0x20


class UcpResult(enum.IntEnum):
    """A User Control Point response value."""

    SUCCESS = 0x01
    OP_CODE_NOT_SUPPORTED = 0x02
    INVALID_PARAMETER = 0x03
    OPERATION_FAILED = 0x04
    USER_NOT_AUTHORIZED = 0x05


class UdsProblem(enum.Enum):
    """Why bytes are not a valid UDS value."""

    EMPTY = "empty"
    UNKNOWN_OP_CODE = "unknown op code"
    WRONG_LENGTH = "wrong length"
    CONSENT_CODE_RANGE = "consent code above 9999"
    UNKNOWN_USER_INDEX = "the unknown user (0xFF) as a user index"
    NOT_A_RESPONSE = "not a response (op code is not 0x20)"
    RESPONSE_TO_RESPONSE = "a response to a response"
    UNKNOWN_RESULT = "unknown response value"

    def response_value(self) -> UcpResult:
        """What a server answers a request that failed to decode this way."""
        return UcpResult.OP_CODE_NOT_SUPPORTED if self is UdsProblem.UNKNOWN_OP_CODE else UcpResult.INVALID_PARAMETER


class UdsError(DecodeError):
    """A UDS value that does not decode.

    Attributes:
        problem: which rule the bytes break.
        op_code: the User Control Point op code that was read, if any.
    """

    def __init__(
        self, what: str, offset: int | None, problem: UdsProblem, detail: str, op_code: int | None = None
    ) -> None:
        self.problem = problem
        self.op_code = op_code
        super().__init__(what, offset, f"{problem.value}: {detail}")


def _check_consent_code(code: int) -> None:
    check_uint("consent_code", code, 16, optional=False)
    if code > CONSENT_CODE_MAX:
        raise EncodeError(f"consent_code={code} is above {CONSENT_CODE_MAX}")


def _check_user_index(index: int) -> None:
    check_uint("user_index", index, 8, optional=False)
    if index == UNKNOWN_USER:
        raise EncodeError("user_index 0xFF is the unknown user, not a registered one")


@dataclass(frozen=True, slots=True)
class RegisterNewUser:
    """``01 | consent code uint16``: register a user protected by `consent_code`; the answer names its index."""

    OP_CODE: ClassVar[UcpOpCode] = UcpOpCode.REGISTER_NEW_USER
    consent_code: int

    def __post_init__(self) -> None:
        _check_consent_code(self.consent_code)

    def __bytes__(self) -> bytes:
        return U8.pack(self.OP_CODE) + U16.pack(self.consent_code)


@dataclass(frozen=True, slots=True)
class Consent:
    """``02 | user index uint8 | consent code uint16``: act for user `user_index` on this connection."""

    OP_CODE: ClassVar[UcpOpCode] = UcpOpCode.CONSENT
    user_index: int
    consent_code: int

    def __post_init__(self) -> None:
        _check_user_index(self.user_index)
        _check_consent_code(self.consent_code)

    def __bytes__(self) -> bytes:
        return U8.pack(self.OP_CODE) + U8.pack(self.user_index) + U16.pack(self.consent_code)


@dataclass(frozen=True, slots=True)
class DeleteUserData:
    """``03``: delete the data of the user consented to on this connection."""

    OP_CODE: ClassVar[UcpOpCode] = UcpOpCode.DELETE_USER_DATA

    def __bytes__(self) -> bytes:
        return U8.pack(self.OP_CODE)


UcpRequest = RegisterNewUser | Consent | DeleteUserData
"""A write to the User Control Point."""

# Each request's length, op code included.
_REQUEST_SIZE: Final = {UcpOpCode.REGISTER_NEW_USER: 3, UcpOpCode.CONSENT: 4, UcpOpCode.DELETE_USER_DATA: 1}


def decode_request(data: bytes | bytearray | memoryview) -> UcpRequest:
    """A User Control Point write, strictly.

    Raises:
        UdsError: empty, an op code other than 0x01..0x03 (:attr:`UdsProblem.UNKNOWN_OP_CODE`; a response's 0x20
            too), a length that does not fit the op code, a consent code above 9999, user index 0xFF.
    """
    raw = bytes(data)
    if not raw:
        raise UdsError(_UCP, 0, UdsProblem.EMPTY, "no op code")
    op = raw[0]
    if op not in _REQUEST_SIZE:
        raise UdsError(_UCP, 0, UdsProblem.UNKNOWN_OP_CODE, f"0x{op:02X}", op)
    code = UcpOpCode(op)
    if len(raw) != _REQUEST_SIZE[code]:
        detail = f"{code.name.lower()} is {_REQUEST_SIZE[code]} byte(s), got {len(raw)}"
        raise UdsError(_UCP, min(len(raw), _REQUEST_SIZE[code]), UdsProblem.WRONG_LENGTH, detail, op)
    if code is UcpOpCode.DELETE_USER_DATA:
        return DeleteUserData()
    consent_code = int(U16.unpack_from(raw, len(raw) - 2)[0])
    if consent_code > CONSENT_CODE_MAX:
        raise UdsError(_UCP, len(raw) - 2, UdsProblem.CONSENT_CODE_RANGE, str(consent_code), op)
    if code is UcpOpCode.REGISTER_NEW_USER:
        return RegisterNewUser(consent_code)
    if raw[1] == UNKNOWN_USER:
        raise UdsError(_UCP, 1, UdsProblem.UNKNOWN_USER_INDEX, "consent for nobody", op)
    return Consent(raw[1], consent_code)


@dataclass(frozen=True, slots=True)
class UcpResponse:
    """``20 | request op code uint8 | response value uint8 | [user index uint8]``, indicated by the server.

    `request_op_code` is an int when the server answers an op code carehub does not know ("op code not supported").
    `user_index` is present exactly on a successful Register New User response.
    """

    request_op_code: UcpOpCode | int
    result: UcpResult
    user_index: int | None = None

    def __post_init__(self) -> None:
        check_uint("request_op_code", self.request_op_code, 8, optional=False)
        if self.request_op_code == UcpOpCode.RESPONSE:
            raise EncodeError("a response answers a request, not a response")
        if not isinstance(self.result, UcpResult):
            raise EncodeError(f"result={self.result!r} is not a UcpResult")
        if self._carries_index:
            if self.user_index is None:
                raise EncodeError("a successful register new user response names the new user index")
            _check_user_index(self.user_index)
        elif self.user_index is not None:
            raise EncodeError("only a successful register new user response carries a user index")

    @property
    def _carries_index(self) -> bool:
        return self.request_op_code == UcpOpCode.REGISTER_NEW_USER and self.result is UcpResult.SUCCESS

    @classmethod
    def answering(cls, request: UcpRequest, result: UcpResult, user_index: int | None = None) -> Self:
        """The response to `request`."""
        return cls(request.OP_CODE, result, user_index)

    def __bytes__(self) -> bytes:
        out = U8.pack(UcpOpCode.RESPONSE) + U8.pack(self.request_op_code) + U8.pack(self.result)
        return out + (b"" if self.user_index is None else U8.pack(self.user_index))


def decode_response(data: bytes | bytearray | memoryview) -> UcpResponse:
    """A User Control Point indication, strictly.

    Raises:
        UdsError: not 0x20, shorter than 3 bytes, an unknown response value, a response to 0x20, a missing or
            unexpected user index (the length does not fit), the unknown user as a new user's index.
    """
    raw = bytes(data)
    if not raw:
        raise UdsError(_UCP, 0, UdsProblem.EMPTY, "no op code")
    if raw[0] != UcpOpCode.RESPONSE:
        raise UdsError(_UCP, 0, UdsProblem.NOT_A_RESPONSE, f"0x{raw[0]:02X}", raw[0])
    if len(raw) < 3:
        raise UdsError(_UCP, len(raw), UdsProblem.WRONG_LENGTH, f"a response is at least 3 bytes, got {len(raw)}")
    request = raw[1]
    if request == UcpOpCode.RESPONSE:
        raise UdsError(_UCP, 1, UdsProblem.RESPONSE_TO_RESPONSE, "request op code 0x20", request)
    try:
        result = UcpResult(raw[2])
    except ValueError:
        raise UdsError(_UCP, 2, UdsProblem.UNKNOWN_RESULT, f"0x{raw[2]:02X}", request) from None
    op: UcpOpCode | int = request
    if request in _REQUEST_SIZE:
        op = UcpOpCode(request)
    wanted = 4 if op == UcpOpCode.REGISTER_NEW_USER and result is UcpResult.SUCCESS else 3
    if len(raw) != wanted:
        detail = f"this response is {wanted} bytes, got {len(raw)}"
        raise UdsError(_UCP, min(len(raw), wanted), UdsProblem.WRONG_LENGTH, detail, request)
    if wanted == 3:
        return UcpResponse(op, result)
    if raw[3] == UNKNOWN_USER:
        raise UdsError(_UCP, 3, UdsProblem.UNKNOWN_USER_INDEX, "a new user cannot be the unknown user", request)
    return UcpResponse(op, result, raw[3])


@dataclass(frozen=True, slots=True)
class DatabaseChangeIncrement:
    """0x2A99: uint32, incremented by whoever changes the consented user's data."""

    UUID: ClassVar[int] = DATABASE_CHANGE_INCREMENT
    value: int

    def __post_init__(self) -> None:
        check_uint("value", self.value, 32, optional=False)

    def __bytes__(self) -> bytes:
        return U32.pack(self.value)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Self:
        """Exactly four bytes.

        Raises:
            UdsError: another length.
        """
        raw = bytes(data)
        if len(raw) != U32.size:
            raise UdsError(_INCREMENT, min(len(raw), U32.size), UdsProblem.WRONG_LENGTH, f"4 bytes, got {len(raw)}")
        return cls(int(U32.unpack(raw)[0]))


@dataclass(frozen=True, slots=True)
class UserIndex:
    """0x2A9A: uint8, the user consented to on this connection (:data:`UNKNOWN_USER` when none)."""

    UUID: ClassVar[int] = USER_INDEX
    index: int

    def __post_init__(self) -> None:
        check_uint("index", self.index, 8, optional=False)

    @property
    def known(self) -> bool:
        """Whether a user was consented to."""
        return self.index != UNKNOWN_USER

    def __bytes__(self) -> bytes:
        return U8.pack(self.index)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Self:
        """Exactly one byte.

        Raises:
            UdsError: another length.
        """
        raw = bytes(data)
        if len(raw) != 1:
            raise UdsError(_INDEX_WHAT, min(len(raw), 1), UdsProblem.WRONG_LENGTH, f"1 byte, got {len(raw)}")
        return cls(raw[0])
