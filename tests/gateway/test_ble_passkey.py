"""The passkey seam (`gateway.ble_passkey`): what the installer types is six digits or refused; the desk routes a
meter's request to the pairing in progress and refuses it when there is none; a waiting request is answered from
elsewhere (the installer page) or given up."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.ble_passkey import (
    FixedPasskey,
    NoPasskey,
    PasskeyDesk,
    PasskeyFormatError,
    WaitingPasskey,
    parse_passkey,
)

CUFF = "C0:00:00:00:65:01"


def _busy(desk: PasskeyDesk) -> bool:
    return desk.busy  # read afresh (mypy would keep the value an earlier assert narrowed)


def _asking(waiting: WaitingPasskey) -> str | None:
    return waiting.waiting


@given(st.integers(min_value=0, max_value=999_999), st.sampled_from(["", " ", "\n"]))
def test_six_digits_parse_to_their_number(passkey: int, around: str) -> None:
    assert parse_passkey(f"{around}{passkey:06d}{around}") == passkey


@given(st.text(max_size=12))
def test_anything_but_six_ascii_digits_is_refused(text: str) -> None:
    stripped = text.strip()
    if len(stripped) == 6 and stripped.isascii() and stripped.isdigit():
        assert parse_passkey(text) == int(stripped)
    else:
        with pytest.raises(PasskeyFormatError):
            parse_passkey(text)


def test_a_fixed_passkey_has_six_digits() -> None:
    for bad in (-1, 1_000_000):
        with pytest.raises(PasskeyFormatError):
            FixedPasskey(bad)


async def test_the_desk_refuses_without_a_pairing_and_routes_to_the_one_in_progress() -> None:
    desk = PasskeyDesk(known=lambda address: address == CUFF)
    assert await desk.passkey_for(CUFF) is None  # nobody is pairing: refused
    assert desk.trusts(CUFF)  # a provisioned device may re-pair with Just Works
    assert not desk.trusts("C0:00:00:00:65:02")
    assert not desk.confirm("C0:00:00:00:65:02")
    with desk.pairing(CUFF.lower(), FixedPasskey(42)) as log:
        assert _busy(desk)
        with pytest.raises(RuntimeError), desk.pairing(CUFF, NoPasskey()):
            pass
        assert await desk.passkey_for(CUFF) == 42
        assert desk.confirm("C0:00:00:00:65:02")  # whatever is being paired right now
    assert not _busy(desk)
    assert (log.asked, log.given, log.confirmed, log.was_asked) == ([CUFF], 42, ["C0:00:00:00:65:02"], True)
    with desk.pairing(CUFF, NoPasskey()) as refused:
        assert await desk.passkey_for(CUFF) is None
    assert refused.was_asked
    assert refused.given is None


async def test_a_waiting_request_is_answered_from_elsewhere_or_given_up() -> None:
    waiting = WaitingPasskey(patience=60.0)
    assert not waiting.answer(123_456)  # nobody asks yet
    request = asyncio.ensure_future(waiting.passkey_for(CUFF))
    await waiting.asked.wait()
    assert _asking(waiting) == CUFF
    assert waiting.answer(123_456)
    assert await request == 123_456
    assert _asking(waiting) is None
    request = asyncio.ensure_future(waiting.passkey_for(CUFF))
    await waiting.asked.wait()
    waiting.refuse()
    assert await request is None
    assert await WaitingPasskey(patience=0.0).passkey_for(CUFF) is None  # nobody typed it in time
