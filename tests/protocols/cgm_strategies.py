"""Hypothesis strategies for the CGM characteristics (``protocols.gatt.cgm``), shared by the contract suite."""

from __future__ import annotations

from typing import TypeVar

from hypothesis import strategies as st

from protocols.datetime_ import DateTime
from protocols.gatt.cgm import _OPERAND as OPERAND_LENGTHS
from protocols.gatt.cgm import (
    CgmFeature,
    CgmMeasurement,
    CgmOpCode,
    CgmRecord,
    CgmSessionRunTime,
    CgmSessionStartTime,
    CgmSpecificOpsControlPoint,
    CgmStatus,
)
from protocols.ieee11073 import NAN, NEG_INF, NRES, POS_INF, SFLOAT_MANTISSA_MAX, MderFloat

__all__ = [
    "cgm_feature",
    "cgm_measurement",
    "cgm_records",
    "cgm_run_time",
    "cgm_socp",
    "cgm_start_time",
    "cgm_status",
]

_T = TypeVar("_T")


# Own small helpers (strategies.py imports this module, so it cannot import that one).
def sfloats() -> st.SearchStrategy[MderFloat]:
    numbers = st.builds(MderFloat, st.integers(-SFLOAT_MANTISSA_MAX, SFLOAT_MANTISSA_MAX), st.integers(-8, 7))
    return st.one_of(numbers, st.sampled_from((NAN, NRES, POS_INF, NEG_INF)))


def date_times() -> st.SearchStrategy[DateTime]:
    return st.builds(
        DateTime,
        st.integers(2000, 2099),
        st.integers(1, 12),
        st.integers(1, 28),
        st.integers(0, 23),
        st.integers(0, 59),
        st.integers(0, 59),
    )


def _opt(strategy: st.SearchStrategy[_T]) -> st.SearchStrategy[_T | None]:
    return st.one_of(st.none(), strategy)


def _u(bits: int) -> st.SearchStrategy[int]:
    return st.integers(0, (1 << bits) - 1)


def cgm_records(*, e2e_crc: bool | None = None) -> st.SearchStrategy[CgmRecord]:
    """Any CGM Measurement record; `e2e_crc` fixes whether it carries the CRC."""
    return st.builds(
        CgmRecord,
        glucose=sfloats(),
        time_offset=_u(16),
        warning=_opt(_u(8)),
        cal_temp=_opt(_u(8)),
        status=_opt(_u(8)),
        trend=_opt(sfloats()),
        quality=_opt(sfloats()),
        e2e_crc=st.booleans() if e2e_crc is None else st.just(e2e_crc),
    )


@st.composite
def cgm_measurement(draw: st.DrawFn) -> CgmMeasurement:
    """One to four records, all with or all without E2E-CRC (as one sensor sends them)."""
    crc = draw(st.booleans())
    return CgmMeasurement(tuple(draw(st.lists(cgm_records(e2e_crc=crc), min_size=1, max_size=4))))


def cgm_feature() -> st.SearchStrategy[CgmFeature]:
    return st.builds(CgmFeature, _u(24), _u(4), _u(4))


def cgm_status() -> st.SearchStrategy[CgmStatus]:
    return st.builds(CgmStatus, _u(16), _u(24), st.booleans())


def cgm_start_time() -> st.SearchStrategy[CgmSessionStartTime]:
    zones = st.one_of(st.just(-128), st.integers(-48, 56))
    return st.builds(CgmSessionStartTime, date_times(), zones, st.sampled_from([0, 2, 4, 8, 255]), st.booleans())


def cgm_run_time() -> st.SearchStrategy[CgmSessionRunTime]:
    return st.builds(CgmSessionRunTime, _u(16), st.booleans())


@st.composite
def cgm_socp(draw: st.DrawFn) -> CgmSpecificOpsControlPoint:
    op = draw(st.sampled_from(list(CgmOpCode)))
    length = OPERAND_LENGTHS.get(op, 0)
    operand = draw(st.binary(min_size=length, max_size=length))
    return CgmSpecificOpsControlPoint(op, operand, draw(st.booleans()))
