"""The installer PIN for the local web page: one-time, salted and hashed at rest, compared in constant time,
rate-limited.

``carehub provision pin`` issues a fresh 6-digit PIN (replacing any earlier one) and prints it; only its scrypt hash
is kept (``provision/pin``, mode 0600), with an expiry. A correct PIN is consumed: it opens one browser session and
cannot be used again. More than ``max_failures`` wrong PINs within ``window_s`` lock logins for ``lockout_s``
(during the lockout even the right PIN is refused).
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gateway.provision.errors import LockedOutError, NotInitialisedError, WrongPinError
from gateway.provision.files import HubPaths, Writer, write_atomic

__all__ = ["PIN_DIGITS", "PinGate", "issue_pin"]

PIN_DIGITS: Final = 6
_SCRYPT: Final = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
_LIFETIME_S: Final = 24 * 3600.0


def _hash(pin: str, salt: bytes) -> bytes:
    return hashlib.scrypt(pin.encode(), salt=salt, **_SCRYPT)


def issue_pin(paths: HubPaths, *, now: float | None = None, writer: Writer = os.write) -> str:
    """A fresh PIN, valid for 24 hours or one login, replacing any earlier PIN."""
    pin = f"{secrets.randbelow(10**PIN_DIGITS):0{PIN_DIGITS}d}"
    salt = secrets.token_bytes(16)
    issued = time.time() if now is None else now
    record = {"salt": salt.hex(), "hash": _hash(pin, salt).hex(), "expires": issued + _LIFETIME_S}
    write_atomic(paths.pin, json.dumps(record).encode(), mode=0o600, writer=writer)
    return pin


@dataclass(frozen=True, slots=True)
class _Stored:
    salt: bytes
    digest: bytes
    expires: float


class PinGate:
    """Checks PINs against the issued one, with rate limiting; one gate per running web server."""

    def __init__(
        self,
        paths: HubPaths,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        max_failures: int = 5,
        window_s: float = 60.0,
        lockout_s: float = 300.0,
    ) -> None:
        self._paths = paths
        self._clock = clock
        self._wall = wall
        self._max_failures = max_failures
        self._window_s = window_s
        self._lockout_s = lockout_s
        self._failures: collections.deque[float] = collections.deque()
        self._locked_until = 0.0

    def _stored(self) -> _Stored | None:
        try:
            raw = json.loads(self._paths.pin.read_text(encoding="utf-8"))
            return _Stored(bytes.fromhex(raw["salt"]), bytes.fromhex(raw["hash"]), float(raw["expires"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def check(self, pin: str) -> None:
        """Accept ``pin`` (and consume it) or raise.

        Raises:
            LockedOutError: too many recent failures; nothing is compared.
            NotInitialisedError: no PIN has been issued, or it expired or was used.
            WrongPinError: the PIN does not match (counted towards the lockout).
        """
        now = self._clock()
        if now < self._locked_until:
            raise LockedOutError(self._locked_until - now)
        stored = self._stored()
        if stored is None or stored.expires < self._wall():
            raise NotInitialisedError(
                "no valid installer PIN", "run `carehub provision pin` on the hub and type the PIN it shows"
            )
        candidate = _hash(pin.strip()[:32], stored.salt)
        if not hmac.compare_digest(candidate, stored.digest):
            while self._failures and self._failures[0] <= now - self._window_s:
                self._failures.popleft()
            self._failures.append(now)
            if len(self._failures) >= self._max_failures:
                self._failures.clear()
                self._locked_until = now + self._lockout_s
                raise LockedOutError(self._lockout_s)
            left = self._max_failures - len(self._failures)
            raise WrongPinError("wrong PIN", f"type the PIN shown by `carehub provision pin` ({left} tries left)")
        self._failures.clear()
        self._paths.pin.unlink(missing_ok=True)
