"""The glucose meter's RACP decisions, sans I/O (GLS 1.0 §3.3.4)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sim.devices.racp import Abort, OpCode, Rejected, ResponseCode, Selected, evaluate

STORED = (3, 4, 5, 9, 12)


def test_report_all_first_last():
    assert evaluate(bytes([1, 1]), STORED) == Selected(OpCode.REPORT_STORED_RECORDS, STORED)
    assert evaluate(bytes([1, 5]), STORED) == Selected(OpCode.REPORT_STORED_RECORDS, (3,))
    assert evaluate(bytes([1, 6]), STORED) == Selected(OpCode.REPORT_STORED_RECORDS, (12,))
    assert evaluate(bytes([1, 5]), ()) == Selected(OpCode.REPORT_STORED_RECORDS, ())


def test_filters_by_sequence_number():
    assert evaluate(bytes([1, 3, 1, 5, 0]), STORED).sequences == (5, 9, 12)  # type: ignore[union-attr]
    assert evaluate(bytes([2, 2, 1, 4, 0]), STORED) == Selected(OpCode.DELETE_STORED_RECORDS, (3, 4))
    assert evaluate(bytes([4, 4, 1, 4, 0, 9, 0]), STORED) == Selected(OpCode.REPORT_NUMBER_OF_STORED_RECORDS, (4, 5, 9))


def test_every_rejection_code():
    assert evaluate(bytes([7, 1]), STORED) == Rejected(7, ResponseCode.OP_CODE_NOT_SUPPORTED)
    assert evaluate(bytes([1, 0]), STORED) == Rejected(1, ResponseCode.INVALID_OPERATOR)
    assert evaluate(bytes([1, 9]), STORED) == Rejected(1, ResponseCode.OPERATOR_NOT_SUPPORTED)
    assert evaluate(bytes([1, 1, 0]), STORED) == Rejected(1, ResponseCode.INVALID_OPERAND)
    assert evaluate(bytes([1, 3]), STORED) == Rejected(1, ResponseCode.INVALID_OPERAND)
    assert evaluate(bytes([1, 3, 1, 5]), STORED) == Rejected(1, ResponseCode.INVALID_OPERAND)
    assert evaluate(bytes([1, 3, 7, 5, 0]), STORED) == Rejected(1, ResponseCode.INVALID_OPERAND)
    assert evaluate(bytes([1, 4, 1, 9, 0, 4, 0]), STORED) == Rejected(1, ResponseCode.INVALID_OPERAND)
    assert evaluate(bytes([1, 3, 2, 0xE8, 7, 1, 1, 0, 0, 0]), STORED) == Rejected(1, ResponseCode.OPERAND_NOT_SUPPORTED)
    assert evaluate(bytes([3, 1]), STORED) == Rejected(3, ResponseCode.INVALID_OPERATOR)
    assert evaluate(bytes([3, 0, 1]), STORED) == Rejected(3, ResponseCode.INVALID_OPERAND)
    assert evaluate(bytes([3, 0]), STORED) == Abort()
    assert evaluate(b"\x01", STORED) == Rejected(1, ResponseCode.INVALID_OPERAND)
    assert evaluate(b"", STORED) == Rejected(0, ResponseCode.INVALID_OPERAND)


@given(
    st.binary(max_size=12),
    st.lists(st.integers(0, 0xFFFF), unique=True, max_size=20).map(sorted),
)
def test_any_bytes_get_a_decision_and_selections_come_from_the_store(request_bytes, stored):
    decision = evaluate(request_bytes, stored)
    assert isinstance(decision, Rejected | Selected | Abort)
    if isinstance(decision, Selected):
        assert set(decision.sequences) <= set(stored)
        assert list(decision.sequences) == sorted(decision.sequences)
