"""The glucose meter's side of the Record Access Control Point (GLS 1.0 §3.3.4, characteristic 0x2A52).

Sans-I/O: :func:`evaluate` reads a request exactly as a meter's firmware would (leniently, so that every malformed
request gets the response code the specification assigns it rather than an exception) and says what to do with
which records. The meter (:mod:`sim.devices.glucose`) does the sending; the response bytes come from
:mod:`protocols.gatt`.

Request layout: ``Op Code (uint8) | Operator (uint8) | Operand (variable)``; the operand of ≤, ≥ and range is a
filter-type byte (0x01 sequence number, uint16 each; 0x02 user-facing time) followed by one or two values.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from collections.abc import Sequence

# uint16 sequence number, little-endian
_U16 = struct.Struct("<H")
# two uint16 sequence numbers (range minimum, maximum)
_U16_PAIR = struct.Struct("<HH")

FILTER_SEQUENCE_NUMBER = 0x01
FILTER_USER_FACING_TIME = 0x02


class OpCode(enum.IntEnum):
    """RACP op codes (GLS 1.0 Table 3.7)."""

    REPORT_STORED_RECORDS = 1
    DELETE_STORED_RECORDS = 2
    ABORT_OPERATION = 3
    REPORT_NUMBER_OF_STORED_RECORDS = 4
    NUMBER_OF_STORED_RECORDS_RESPONSE = 5
    RESPONSE_CODE = 6


class Operator(enum.IntEnum):
    """RACP operators (GLS 1.0 Table 3.8)."""

    NULL = 0
    ALL = 1
    LESS_OR_EQUAL = 2
    GREATER_OR_EQUAL = 3
    WITHIN_RANGE = 4
    FIRST = 5
    LAST = 6


class ResponseCode(enum.IntEnum):
    """RACP response code values (GLS 1.0 Table 3.9)."""

    SUCCESS = 1
    OP_CODE_NOT_SUPPORTED = 2
    INVALID_OPERATOR = 3
    OPERATOR_NOT_SUPPORTED = 4
    INVALID_OPERAND = 5
    NO_RECORDS_FOUND = 6
    ABORT_UNSUCCESSFUL = 7
    PROCEDURE_NOT_COMPLETED = 8
    OPERAND_NOT_SUPPORTED = 9


@dataclasses.dataclass(frozen=True, slots=True)
class Rejected:
    """The request is answered at once with ``code`` for ``op_code``."""

    op_code: int
    code: ResponseCode


@dataclasses.dataclass(frozen=True, slots=True)
class Selected:
    """A valid report, delete or count request and the sequence numbers it selects (oldest first)."""

    op_code: OpCode
    sequences: tuple[int, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Abort:
    """A valid Abort Operation request."""


Decision = Rejected | Selected | Abort


def evaluate(request: bytes, stored: Sequence[int]) -> Decision:
    """Decide how a meter holding records ``stored`` (sequence numbers, oldest first) answers ``request``."""
    if len(request) < 2:
        return Rejected(request[0] if request else 0, ResponseCode.INVALID_OPERAND)
    op_code, operator, operand = request[0], request[1], request[2:]
    if op_code not in (
        OpCode.REPORT_STORED_RECORDS,
        OpCode.DELETE_STORED_RECORDS,
        OpCode.ABORT_OPERATION,
        OpCode.REPORT_NUMBER_OF_STORED_RECORDS,
    ):
        return Rejected(op_code, ResponseCode.OP_CODE_NOT_SUPPORTED)
    if op_code == OpCode.ABORT_OPERATION:
        if operator != Operator.NULL:
            return Rejected(op_code, ResponseCode.INVALID_OPERATOR)
        if operand:
            return Rejected(op_code, ResponseCode.INVALID_OPERAND)
        return Abort()
    if operator == Operator.NULL:
        return Rejected(op_code, ResponseCode.INVALID_OPERATOR)
    if operator > Operator.LAST:
        return Rejected(op_code, ResponseCode.OPERATOR_NOT_SUPPORTED)
    selected = _select(Operator(operator), operand, stored)
    if isinstance(selected, ResponseCode):
        return Rejected(op_code, selected)
    return Selected(OpCode(op_code), selected)


def _select(operator: Operator, operand: bytes, stored: Sequence[int]) -> tuple[int, ...] | ResponseCode:
    if operator in (Operator.ALL, Operator.FIRST, Operator.LAST):
        if operand:
            return ResponseCode.INVALID_OPERAND
        if operator == Operator.ALL or not stored:
            return tuple(stored)
        return (stored[0],) if operator == Operator.FIRST else (stored[-1],)
    if not operand:
        return ResponseCode.INVALID_OPERAND
    if operand[0] == FILTER_USER_FACING_TIME:
        return ResponseCode.OPERAND_NOT_SUPPORTED
    if operand[0] != FILTER_SEQUENCE_NUMBER:
        return ResponseCode.INVALID_OPERAND
    values = operand[1:]
    if operator == Operator.WITHIN_RANGE:
        if len(values) != _U16_PAIR.size:
            return ResponseCode.INVALID_OPERAND
        low, high = _U16_PAIR.unpack(values)
        if low > high:
            return ResponseCode.INVALID_OPERAND
        return tuple(s for s in stored if low <= s <= high)
    if len(values) != _U16.size:
        return ResponseCode.INVALID_OPERAND
    (bound,) = _U16.unpack(values)
    if operator == Operator.LESS_OR_EQUAL:
        return tuple(s for s in stored if s <= bound)
    return tuple(s for s in stored if s >= bound)
