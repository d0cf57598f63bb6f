"""The installer PIN for the local web page: one-time, salted and hashed at rest, compared in constant time,
rate-limited.

``carehub provision pin`` issues a fresh 6-digit PIN (replacing any earlier one) and prints it; only its scrypt hash
is kept (``provision/pin``, mode 0600), with an expiry. A correct PIN is consumed: it opens one browser session and
cannot be used again. More than ``max_failures`` wrong PINs within ``window_s`` lock logins for ``lockout_s``
(during the lockout even the right PIN is refused) for the client that made them, and persist across restarts;
too many wrong PINs from all clients together revoke the PIN.
"""

from __future__ import annotations

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


_BUDGET_PER_PIN: Final = 20
"""Wrong PINs from all clients together after which the PIN is revoked (a new one is issued on the hub itself).

Per-client lockouts alone would let a device that changes its address keep guessing; this bound keeps a guess's
odds at 20 in 10**6 per issued PIN without letting any one LAN device lock the installer out."""


@dataclass(slots=True)
class _Client:
    failures: list[float]
    locked_until: float


class PinGate:
    """Checks PINs against the issued one, rate-limited per client; one gate per running web server.

    Lockouts are per client (its network address), so a stranger's wrong guesses never lock the installer's phone
    out, and they are kept in ``provision/pin-lockout`` (0600), so restarting the web server does not clear them.
    They are counted in wall-clock seconds (``clock``), because monotonic time does not survive a restart; a
    lockout never lasts longer than ``lockout_s`` from now, whatever the wall clock did meanwhile. Across all
    clients, more than a fixed budget of wrong PINs revokes the PIN itself.
    """

    def __init__(
        self,
        paths: HubPaths,
        *,
        clock: Callable[[], float] = time.time,
        wall: Callable[[], float] = time.time,
        max_failures: int = 5,
        window_s: float = 60.0,
        lockout_s: float = 300.0,
        writer: Writer = os.write,
    ) -> None:
        self._paths = paths
        self._clock = clock
        self._wall = wall
        self._max_failures = max_failures
        self._window_s = window_s
        self._lockout_s = lockout_s
        self._writer = writer
        self._state_file = paths.pin.with_name("pin-lockout")

    def _stored(self) -> _Stored | None:
        try:
            raw = json.loads(self._paths.pin.read_text(encoding="utf-8"))
            return _Stored(bytes.fromhex(raw["salt"]), bytes.fromhex(raw["hash"]), float(raw["expires"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _load(self, stored: _Stored) -> tuple[dict[str, _Client], int]:
        """Per-client state and this PIN's wrong guesses so far (an unreadable file starts afresh, empty)."""
        try:
            raw = json.loads(self._state_file.read_text(encoding="utf-8"))
            clients = {
                str(k): _Client([float(t) for t in v["failures"]], float(v["locked_until"]))
                for k, v in raw["clients"].items()
            }
            spent = int(raw["spent"]) if raw.get("pin") == stored.salt.hex() else 0
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}, 0
        return clients, spent

    def _save(self, stored: _Stored, clients: dict[str, _Client], spent: int) -> None:
        record = {
            "pin": stored.salt.hex(),
            "spent": spent,
            "clients": {k: {"failures": c.failures, "locked_until": c.locked_until} for k, c in clients.items()},
        }
        write_atomic(self._state_file, json.dumps(record).encode(), mode=0o600, writer=self._writer)

    def check(self, pin: str, client: str = "local") -> None:
        """Accept ``pin`` from ``client`` (and consume it) or raise.

        Raises:
            LockedOutError: too many recent failures from this client; nothing is compared.
            NotInitialisedError: no PIN has been issued, or it expired, was used or was revoked.
            WrongPinError: the PIN does not match (counted towards the lockout).
        """
        stored = self._stored()
        if stored is None or stored.expires < self._wall():
            raise NotInitialisedError(
                "no valid installer PIN", "run `carehub provision pin` on the hub and type the PIN it shows"
            )
        now = self._clock()
        clients, spent = self._load(stored)
        state = clients.setdefault(client, _Client([], 0.0))
        state.locked_until = min(state.locked_until, now + self._lockout_s)  # a wall clock set back
        if now < state.locked_until:
            raise LockedOutError(state.locked_until - now)
        candidate = _hash(pin.strip()[:32], stored.salt)
        if hmac.compare_digest(candidate, stored.digest):
            self._paths.pin.unlink(missing_ok=True)
            self._state_file.unlink(missing_ok=True)
            return
        spent += 1
        state.failures = [t for t in state.failures if now - self._window_s < t <= now] + [now]
        locked = len(state.failures) >= self._max_failures
        if locked:
            state.failures = []
            state.locked_until = now + self._lockout_s
        # Forget clients with nothing left to remember, so the file stays small.
        clients = {k: c for k, c in clients.items() if c.failures or c.locked_until > now}
        if spent >= _BUDGET_PER_PIN:
            self._paths.pin.unlink(missing_ok=True)
            self._state_file.unlink(missing_ok=True)
            raise NotInitialisedError(
                "too many wrong PINs: this PIN is revoked", "run `carehub provision pin` on the hub for a new PIN"
            )
        self._save(stored, clients, spent)
        if locked:
            raise LockedOutError(self._lockout_s)
        left = self._max_failures - len(state.failures)
        raise WrongPinError("wrong PIN", f"type the PIN shown by `carehub provision pin` ({left} tries left)")
