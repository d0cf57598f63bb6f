"""Record Access Control Point, 0x2A52 (Glucose Service 1.0 §3.110 and the GLS/PLXS RACP procedures).

``Op Code uint8 | Operator uint8 | Operand (variable)``. Op codes 5 and 6 are responses (:class:`RacpResponse`);
every other op code is a request (:class:`RacpRequest`). :func:`decode_racp` picks the class.

Interpretations:

* Requests with a known op code (1..4) and a known operator have a strict operand: none for Null, All, First and
  Last; ``filter type uint8`` plus one (``<=``, ``>=``) or two (range) values for the others. A sequence-number
  filter (0x01) carries uint16 values, a user-facing-time filter (0x02) Date Time values.
* An RFU op code, RFU operator or RFU filter type is not a decoding error (the meter must answer "op code not
  supported", "operator not supported" or "operand not supported"): the bytes after the last understood field are
  kept in ``raw_operand``.
* Responses must carry the Null operator. A number-of-records response carries a uint16 count; 1- and 4-byte counts
  are accepted on decode and ``count_size`` records which was used, so re-encoding gives the same bytes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Final, Self

from protocols.datetime_ import DateTime
from protocols.errors import DecodeError, EncodeError
from protocols.gatt.common import (
    U8,
    U16,
    U32,
    JSONValue,
    Measurement,
    Reader,
    check_uint,
    decoding,
    enum_name,
    enum_or_int,
)

__all__ = [
    "RacpFilterType",
    "RacpOpCode",
    "RacpOperator",
    "RacpRequest",
    "RacpResponse",
    "RacpResponseCode",
    "decode_racp",
]


class RacpOpCode(enum.IntEnum):
    """RACP op codes; 0 and 7..255 are RFU (kept as int)."""

    REPORT_STORED_RECORDS = 1
    DELETE_STORED_RECORDS = 2
    ABORT_OPERATION = 3
    REPORT_NUMBER_OF_STORED_RECORDS = 4
    NUMBER_OF_STORED_RECORDS_RESPONSE = 5
    RESPONSE_CODE = 6


class RacpOperator(enum.IntEnum):
    """RACP operators; 7..255 are RFU (kept as int)."""

    NULL = 0
    ALL_RECORDS = 1
    LESS_THAN_OR_EQUAL_TO = 2
    GREATER_THAN_OR_EQUAL_TO = 3
    WITHIN_RANGE_OF = 4
    FIRST_RECORD = 5
    LAST_RECORD = 6


class RacpFilterType(enum.IntEnum):
    """Filter types of the GLS operand; 0 and 3..255 are RFU (kept as int)."""

    SEQUENCE_NUMBER = 1
    USER_FACING_TIME = 2


class RacpResponseCode(enum.IntEnum):
    """RACP response codes; 0 and 10..255 are RFU (kept as int)."""

    SUCCESS = 1
    OP_CODE_NOT_SUPPORTED = 2
    INVALID_OPERATOR = 3
    OPERATOR_NOT_SUPPORTED = 4
    INVALID_OPERAND = 5
    NO_RECORDS_FOUND = 6
    ABORT_UNSUCCESSFUL = 7
    PROCEDURE_NOT_COMPLETED = 8
    OPERAND_NOT_SUPPORTED = 9


_REQUEST_OPS: Final = frozenset({1, 2, 3, 4})
_RESPONSE_OPS: Final = frozenset({5, 6})
_VALUE_COUNT: Final = {0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 5: 0, 6: 0}
_COUNT_LAYOUTS: Final = {1: U8, 2: U16, 4: U32}

FilterValue = int | DateTime


def _value_json(value: FilterValue) -> JSONValue:
    return value.iso() if isinstance(value, DateTime) else value


@dataclass(frozen=True, slots=True)
class RacpRequest(Measurement):
    """A write to the Record Access Control Point, 0x2A52 (GLS 1.0 §3.110, §4.9).

    Layout: ``op code uint8 | operator uint8 | [filter type uint8 | value | [value]] | raw operand``.
    Use the constructors (:meth:`report_all`, :meth:`report_greater_or_equal`, ...) for the usual requests.
    """

    UUID: ClassVar[int] = 0x2A52
    op_code: RacpOpCode | int
    operator: RacpOperator | int = RacpOperator.NULL
    filter_type: RacpFilterType | int | None = None
    values: tuple[FilterValue, ...] = ()
    raw_operand: bytes = b""

    def __post_init__(self) -> None:
        check_uint("op_code", self.op_code, 8, optional=False)
        if self.op_code in _RESPONSE_OPS:
            raise EncodeError("op codes 5 and 6 are responses: use RacpResponse")
        check_uint("operator", self.operator, 8, optional=False)
        check_uint("filter_type", self.filter_type, 8)
        if not isinstance(self.values, tuple) or not isinstance(self.raw_operand, bytes):
            raise EncodeError("values must be a tuple and raw_operand bytes")
        structured = self.op_code in _REQUEST_OPS and self.operator in _VALUE_COUNT
        if not structured:
            if self.filter_type is not None or self.values:
                raise EncodeError("an RFU op code or operator carries only raw_operand")
            return
        wanted = _VALUE_COUNT[self.operator]
        if wanted == 0:
            if self.filter_type is not None or self.values or self.raw_operand:
                raise EncodeError(f"operator {self.operator} takes no operand")
            return
        if self.filter_type is None:
            raise EncodeError(f"operator {self.operator} needs a filter_type")
        if self.filter_type not in (RacpFilterType.SEQUENCE_NUMBER, RacpFilterType.USER_FACING_TIME):
            if self.values:
                raise EncodeError("an RFU filter type carries only raw_operand")
            return
        if self.raw_operand:
            raise EncodeError("raw_operand is only for RFU op codes, operators and filter types")
        if len(self.values) != wanted:
            raise EncodeError(f"operator {self.operator} takes {wanted} value(s), got {len(self.values)}")
        for value in self.values:
            if self.filter_type == RacpFilterType.USER_FACING_TIME:
                if not isinstance(value, DateTime):
                    raise EncodeError("a user-facing-time filter takes DateTime values")
            elif isinstance(value, DateTime):
                raise EncodeError("a sequence-number filter takes int values")
            else:
                check_uint("sequence number", value, 16, optional=False)

    # -- constructors ------------------------------------------------------------------------------------------

    @classmethod
    def report_all(cls) -> Self:
        """``01 01``: report every stored record."""
        return cls(RacpOpCode.REPORT_STORED_RECORDS, RacpOperator.ALL_RECORDS)

    @classmethod
    def report_first(cls) -> Self:
        """``01 05``: report the oldest record."""
        return cls(RacpOpCode.REPORT_STORED_RECORDS, RacpOperator.FIRST_RECORD)

    @classmethod
    def report_last(cls) -> Self:
        """``01 06``: report the newest record."""
        return cls(RacpOpCode.REPORT_STORED_RECORDS, RacpOperator.LAST_RECORD)

    @classmethod
    def report_greater_or_equal(cls, sequence_number: int) -> Self:
        """``01 03 01 <uint16>``: report records whose sequence number is >= ``sequence_number``."""
        return cls(
            RacpOpCode.REPORT_STORED_RECORDS,
            RacpOperator.GREATER_THAN_OR_EQUAL_TO,
            RacpFilterType.SEQUENCE_NUMBER,
            (sequence_number,),
        )

    @classmethod
    def report_less_or_equal(cls, sequence_number: int) -> Self:
        """``01 02 01 <uint16>``: report records whose sequence number is <= ``sequence_number``."""
        return cls(
            RacpOpCode.REPORT_STORED_RECORDS,
            RacpOperator.LESS_THAN_OR_EQUAL_TO,
            RacpFilterType.SEQUENCE_NUMBER,
            (sequence_number,),
        )

    @classmethod
    def report_range(cls, first: int, last: int) -> Self:
        """``01 04 01 <uint16> <uint16>``: report records with ``first <= sequence number <= last``."""
        return cls(
            RacpOpCode.REPORT_STORED_RECORDS,
            RacpOperator.WITHIN_RANGE_OF,
            RacpFilterType.SEQUENCE_NUMBER,
            (first, last),
        )

    @classmethod
    def report_since(cls, time: DateTime) -> Self:
        """``01 03 02 <Date Time>``: report records whose user-facing time is >= ``time``."""
        return cls(
            RacpOpCode.REPORT_STORED_RECORDS,
            RacpOperator.GREATER_THAN_OR_EQUAL_TO,
            RacpFilterType.USER_FACING_TIME,
            (time,),
        )

    @classmethod
    def report_number_of_records(cls, operator: RacpOperator = RacpOperator.ALL_RECORDS) -> Self:
        """``04 <operator>``: ask for the count (operators with operands: build the request directly)."""
        return cls(RacpOpCode.REPORT_NUMBER_OF_STORED_RECORDS, operator)

    @classmethod
    def delete_all(cls) -> Self:
        """``02 01``: delete every stored record."""
        return cls(RacpOpCode.DELETE_STORED_RECORDS, RacpOperator.ALL_RECORDS)

    @classmethod
    def abort(cls) -> Self:
        """``03 00``: abort the running procedure."""
        return cls(RacpOpCode.ABORT_OPERATION, RacpOperator.NULL)

    # -- codec -------------------------------------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a request (op codes other than 5 and 6)."""
        r = Reader("2A52", data)
        op_code = enum_or_int(RacpOpCode, r.u8("Op Code"))
        if op_code in _RESPONSE_OPS:
            raise r.fail(f"op code {op_code} is a response, not a request", 0)
        operator = enum_or_int(RacpOperator, r.u8("Operator"))
        filter_type: RacpFilterType | int | None = None
        values: list[FilterValue] = []
        if op_code in _REQUEST_OPS and operator in _VALUE_COUNT:
            wanted = _VALUE_COUNT[operator]
            if wanted:
                filter_type = enum_or_int(RacpFilterType, r.u8("Filter Type"))
                for index in range(wanted if filter_type in (1, 2) else 0):
                    name = f"Operand value {index + 1}"
                    values.append(r.u16(name) if filter_type == 1 else r.date_time(name))
                if filter_type in (1, 2):
                    r.finish()
            else:
                r.finish()
        raw = r.rest()
        with decoding("2A52"):
            return cls(op_code, operator, filter_type, tuple(values), raw)

    def __bytes__(self) -> bytes:
        out = bytearray(U8.pack(self.op_code) + U8.pack(self.operator))
        if self.filter_type is not None:
            out += U8.pack(self.filter_type)
        for value in self.values:
            out += bytes(value) if isinstance(value, DateTime) else U16.pack(value)
        return bytes(out + self.raw_operand)

    def as_dict(self) -> dict[str, JSONValue]:
        """``op_code``, ``operator``, ``filter_type``, ``operand`` (values; times as strings), ``raw_operand`` hex."""
        return {
            "op_code": int(self.op_code),
            "op_code_name": enum_name(RacpOpCode, self.op_code),
            "operator": int(self.operator),
            "operator_name": enum_name(RacpOperator, self.operator),
            "filter_type": None if self.filter_type is None else int(self.filter_type),
            "operand": [_value_json(v) for v in self.values],
            "raw_operand": self.raw_operand.hex() if self.raw_operand else None,
            "request_op_code": None,
            "response_code": None,
            "number_of_records": None,
        }


@dataclass(frozen=True, slots=True)
class RacpResponse(Measurement):
    """An indication of the Record Access Control Point, 0x2A52 (GLS 1.0 §3.110).

    * op code 5: ``05 00 <count uint16>`` (``number_of_records``; ``count_size`` 2, or 1/4 as some meters send);
    * op code 6: ``06 00 <request op code uint8> <response code uint8>``.
    """

    UUID: ClassVar[int] = 0x2A52
    op_code: RacpOpCode
    request_op_code: RacpOpCode | int | None = None
    response_code: RacpResponseCode | int | None = None
    number_of_records: int | None = None
    count_size: int = 2

    def __post_init__(self) -> None:
        if self.op_code == RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE:
            if self.request_op_code is not None or self.response_code is not None:
                raise EncodeError("a number-of-records response has no request op code or response code")
            if self.count_size not in _COUNT_LAYOUTS:
                raise EncodeError(f"count_size must be 1, 2 or 4, not {self.count_size!r}")
            check_uint("number_of_records", self.number_of_records, 8 * self.count_size, optional=False)
        elif self.op_code == RacpOpCode.RESPONSE_CODE:
            check_uint("request_op_code", self.request_op_code, 8, optional=False)
            check_uint("response_code", self.response_code, 8, optional=False)
            if self.number_of_records is not None or self.count_size != 2:
                raise EncodeError("a response-code response has no number of records")
        else:
            raise EncodeError(f"a response has op code 5 or 6, not {self.op_code!r}")

    @property
    def operator(self) -> RacpOperator:
        """Always Null for responses."""
        return RacpOperator.NULL

    @classmethod
    def count(cls, number_of_records: int) -> Self:
        """``05 00 <uint16>``."""
        return cls(RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE, number_of_records=number_of_records)

    @classmethod
    def response(cls, request_op_code: RacpOpCode | int, response_code: RacpResponseCode | int) -> Self:
        """``06 00 <request op code> <response code>``."""
        return cls(RacpOpCode.RESPONSE_CODE, request_op_code=request_op_code, response_code=response_code)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Decode a response (op code 5 or 6)."""
        r = Reader("2A52", data)
        op_code = r.u8("Op Code")
        if op_code not in _RESPONSE_OPS:
            raise r.fail(f"op code {op_code} is not a response", 0)
        operator = r.u8("Operator")
        if operator != RacpOperator.NULL:
            raise r.fail(f"a response must carry the Null operator, not {operator}", 1)
        if op_code == RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE:
            size = r.remaining
            if size not in _COUNT_LAYOUTS:
                raise r.fail(f"number of records must be 1, 2 or 4 bytes (uint16 in GLS), not {size}")
            (count,) = r.unpack(_COUNT_LAYOUTS[size], "Number of Records")
            with decoding("2A52"):
                return cls(RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE, number_of_records=count, count_size=size)
        request = enum_or_int(RacpOpCode, r.u8("Request Op Code"))
        code = enum_or_int(RacpResponseCode, r.u8("Response Code Value"))
        r.finish()
        with decoding("2A52"):
            return cls(RacpOpCode.RESPONSE_CODE, request_op_code=request, response_code=code)

    def __bytes__(self) -> bytes:
        head = U8.pack(self.op_code) + U8.pack(RacpOperator.NULL)
        if self.op_code == RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE:
            return head + _COUNT_LAYOUTS[self.count_size].pack(self.number_of_records)
        return head + U8.pack(self.request_op_code) + U8.pack(self.response_code)

    def as_dict(self) -> dict[str, JSONValue]:
        """``op_code``, ``operator`` (0), ``request_op_code``, ``response_code``, ``number_of_records``."""
        return {
            "op_code": int(self.op_code),
            "op_code_name": enum_name(RacpOpCode, self.op_code),
            "operator": int(RacpOperator.NULL),
            "request_op_code": None if self.request_op_code is None else int(self.request_op_code),
            "response_code": None if self.response_code is None else int(self.response_code),
            "response_code_name": enum_name(RacpResponseCode, self.response_code),
            "number_of_records": self.number_of_records,
        }


def decode_racp(data: bytes) -> RacpRequest | RacpResponse:
    """Decode a Record Access Control Point value: a response for op codes 5 and 6, otherwise a request.

    Raises:
        DecodeError: empty or malformed input.
    """
    if not data:
        raise DecodeError("2A52", 0, "Op Code needs 1 byte(s), 0 left")
    if data[0] in _RESPONSE_OPS:
        return RacpResponse.from_bytes(data)
    return RacpRequest.from_bytes(data)
