"""Where the hub gets the passkey a meter shows (issue 14 item 3): one seam for every Bluetooth backend.

A meter with a display and no keyboard (Accu-Chek Guide, many cuffs) pairs with *passkey entry*: it shows six digits
and the hub's side must type them. The hub has no keyboard either, so the digits come from the installer: given up
front (``carehub provision pair --passkey``), typed at a prompt, or typed into the installer page when the meter asks.

Each backend asks the same :class:`PasskeyDesk` (BlueZ through the hub's ``org.bluez.Agent1``, `gateway.ble_agent`;
the simulated radio through its SMP delegate, `sim.ble.world.answer_pairing_with`). The desk hands the request to the
:class:`PasskeySource` of the pairing in progress; with none in progress (the hub daemon, a stranger trying to pair)
there is no passkey and the backend refuses. What was asked and answered is noted in a :class:`PasskeyLog`, so a
failed pairing can be told apart: a wrong passkey, a passkey the installer did not give, or a plain radio failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, Protocol

__all__ = [
    "PASSKEY_DIGITS",
    "FixedPasskey",
    "NoPasskey",
    "PasskeyDesk",
    "PasskeyFormatError",
    "PasskeyLog",
    "PasskeySource",
    "PromptedPasskey",
    "WaitingPasskey",
    "parse_passkey",
]

_log = logging.getLogger(__name__)

#: A passkey is a number 000000..999999, shown and typed as six digits (Core v5.4 Vol 3 Part H 2.3.5.3).
PASSKEY_DIGITS: Final = 6


class PasskeyFormatError(ValueError):
    """What the installer typed is not six digits."""


def parse_passkey(text: str) -> int:
    """The passkey in ``text`` (exactly six digits, spaces around allowed).

    Raises:
        PasskeyFormatError: anything else.
    """
    digits = text.strip()
    if len(digits) != PASSKEY_DIGITS or not digits.isascii() or not digits.isdigit():
        raise PasskeyFormatError(f"the PIN must be the {PASSKEY_DIGITS} digits the meter shows, not {text!r}")
    return int(digits)


class PasskeySource(Protocol):
    """Answers a meter's passkey request for one pairing."""

    async def passkey_for(self, address: str) -> int | None:
        """The passkey the meter at ``address`` shows, or None to refuse (nobody can tell)."""
        ...


@dataclass(frozen=True, slots=True)
class FixedPasskey:
    """The passkey the installer gave before pairing started."""

    passkey: int

    def __post_init__(self) -> None:
        if not 0 <= self.passkey < 10**PASSKEY_DIGITS:
            raise PasskeyFormatError(f"a passkey is 000000..999999, not {self.passkey}")

    async def passkey_for(self, address: str) -> int | None:
        """The passkey given, whatever the meter."""
        del address
        return self.passkey


class NoPasskey:
    """No installer to ask: every passkey request is refused."""

    async def passkey_for(self, address: str) -> int | None:
        """None: refuse."""
        del address
        return None


@dataclass(frozen=True, slots=True)
class PromptedPasskey:
    """Asks `ask` (a terminal prompt) when the meter asks; `ask` returns None when the installer gives up."""

    ask: Callable[[str], Awaitable[int | None]]

    async def passkey_for(self, address: str) -> int | None:
        """What the installer typed."""
        return await self.ask(address)


class WaitingPasskey:
    """A request the installer answers from elsewhere (the installer page): :attr:`waiting` names the meter that asks,
    :meth:`answer` gives the digits, :meth:`refuse` gives up. The request is refused after `patience` seconds."""

    def __init__(self, patience: float = 60.0) -> None:
        self._patience = patience
        self._answer: asyncio.Future[int | None] | None = None
        self.waiting: str | None = None
        self.asked = asyncio.Event()

    async def passkey_for(self, address: str) -> int | None:
        """Wait for :meth:`answer` (or :meth:`refuse`, or `patience` seconds: None)."""
        self._answer = asyncio.get_running_loop().create_future()
        self.waiting = address
        self.asked.set()
        try:
            async with asyncio.timeout(self._patience):
                return await self._answer
        except TimeoutError:
            _log.warning("nobody typed the PIN %s shows within %.0f s", address, self._patience)
            return None
        finally:
            self.waiting = None
            self._answer = None
            self.asked.clear()

    def answer(self, passkey: int) -> bool:
        """Give the digits; False when no meter is asking now."""
        if self._answer is None or self._answer.done():
            return False
        self._answer.set_result(passkey)
        return True

    def refuse(self) -> None:
        """Give up the request in progress, if any."""
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(None)


@dataclass(slots=True)
class PasskeyLog:
    """What happened to the passkey during one pairing.

    Attributes:
        asked: the addresses whose meter asked for a passkey (in order).
        given: the passkey handed to the stack (None: none was, or the request was refused).
        confirmed: numeric-comparison or authorisation requests answered yes.
    """

    asked: list[str] = field(default_factory=list)
    given: int | None = None
    confirmed: list[str] = field(default_factory=list)

    @property
    def was_asked(self) -> bool:
        """Whether the meter asked for a passkey."""
        return bool(self.asked)


@dataclass(slots=True)
class _Pairing:
    address: str
    source: PasskeySource
    log: PasskeyLog


class PasskeyDesk:
    """The one place every backend asks for a passkey or a yes: routed to the pairing in progress.

    Args:
        known: whether an address is a device the hub already keeps (the daemon's provisioned meters, which may
            re-pair with Just Works on their own); a device being paired right now is always trusted.
    """

    def __init__(self, known: Callable[[str], bool] | None = None) -> None:
        self._known = known or (lambda _address: False)
        self._pairing: _Pairing | None = None

    @contextlib.contextmanager
    def pairing(self, address: str, source: PasskeySource) -> Iterator[PasskeyLog]:
        """Route requests to `source` while the block pairs `address` (one pairing at a time, as the radio allows).

        Raises:
            RuntimeError: another pairing is in progress on this desk.
        """
        if self._pairing is not None:
            raise RuntimeError(f"already pairing {self._pairing.address}")
        log = PasskeyLog()
        self._pairing = _Pairing(address.upper(), source, log)
        try:
            yield log
        finally:
            self._pairing = None

    @property
    def busy(self) -> bool:
        """Whether a pairing is in progress."""
        return self._pairing is not None

    def trusts(self, address: str) -> bool:
        """Whether a Just Works or numeric-comparison pairing with `address` may be accepted."""
        return self._pairing is not None or self._known(address.upper())

    async def passkey_for(self, address: str) -> int | None:
        """The passkey for the meter at `address`, from the pairing in progress; None when there is none."""
        pairing = self._pairing
        if pairing is None:
            _log.warning("%s asked for a passkey, but no pairing is in progress: refused", address)
            return None
        pairing.log.asked.append(address.upper())
        passkey = await pairing.source.passkey_for(address.upper())
        if passkey is not None and not 0 <= passkey < 10**PASSKEY_DIGITS:
            _log.warning("a passkey out of range for %s was refused", address)
            passkey = None
        pairing.log.given = passkey
        return passkey

    def confirm(self, address: str) -> bool:
        """Answer a yes/no request (numeric comparison the hub cannot display, or an authorisation): yes for a
        trusted device, noted in the pairing's log."""
        accepted = self.trusts(address)
        if accepted and self._pairing is not None:
            self._pairing.log.confirmed.append(address.upper())
        return accepted
