"""Console accounts, sessions and residents' sharing levels (issue 18 item 5).

Roles: a family doctor sees the residents whose sharing names them as doctor; a nurse is the care team; an
administrator manages accounts and sees no resident data; a family member sees the status (not the readings) of a
resident who named them. Passwords are argon2id hashes (argon2-cffi). A session is a random token with an expiry
from an injected clock and its own CSRF token. Kept in SQLite beside the platform database
(``platform.db`` -> ``platform.accounts.db``).
"""

from __future__ import annotations

import datetime as _dt
import enum
import hmac
import secrets
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import argon2
import typer

from community.config import PlatformConfigError, load_platform_config
from community.storage_common import make_private

__all__ = [
    "Access",
    "Account",
    "AccountError",
    "AccountStore",
    "Role",
    "Session",
    "Sharing",
    "SharingLevel",
    "access",
    "accounts_path",
    "app",
]

SESSION_LIFETIME = _dt.timedelta(hours=8)


class AccountError(Exception):
    """A bad account, password, session or sharing setting."""


class Role(enum.StrEnum):
    DOCTOR = "doctor"
    NURSE = "nurse"
    ADMINISTRATOR = "administrator"
    FAMILY = "family"


class SharingLevel(enum.StrEnum):
    OWN_DOCTOR = "own-doctor"  # only the resident's family doctor
    CARE_TEAM = "care-team"  # the doctor and the nurses
    FAMILY = "family"  # the care team, and a named family member sees status only


class Access(enum.Enum):
    NONE = 0
    STATUS = 1
    FULL = 2


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    role: Role
    display_name: str


@dataclass(frozen=True, slots=True)
class Sharing:
    resident: str
    doctor: str
    level: SharingLevel
    family_member: str | None = None


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    csrf: str
    username: str
    expires: _dt.datetime


def access(account: Account, sharing: Sharing | None) -> Access:
    """What ``account`` may see of a resident; a resident with no sharing setting is visible to nobody."""
    if sharing is None:
        return Access.NONE
    if account.role is Role.DOCTOR and account.username == sharing.doctor:
        return Access.FULL
    if account.role is Role.NURSE and sharing.level is not SharingLevel.OWN_DOCTOR:
        return Access.FULL
    if (
        account.role is Role.FAMILY
        and sharing.level is SharingLevel.FAMILY
        and account.username == sharing.family_member
    ):
        return Access.STATUS
    return Access.NONE


def accounts_path(database: Path) -> Path:
    return database.with_name(f"{database.stem}.accounts.db")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    username TEXT PRIMARY KEY, role TEXT NOT NULL, display_name TEXT NOT NULL, password_hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sharing (
    resident TEXT PRIMARY KEY, doctor TEXT NOT NULL, level TEXT NOT NULL, family_member TEXT);
CREATE TABLE IF NOT EXISTS sessions (
    token TEXT PRIMARY KEY, csrf TEXT NOT NULL, username TEXT NOT NULL, expires TEXT NOT NULL);
"""


def _valid_name(kind: str, name: str) -> str:
    if not name or len(name) > 64 or not name.isprintable() or name != name.strip():
        raise AccountError(f"bad {kind} {name!r}: 1-64 printable characters, no surrounding spaces")
    return name


class AccountStore:
    """Accounts, sharing and sessions in one SQLite file; ``clock`` gives aware times, ``hasher`` the argon2 cost."""

    def __init__(
        self,
        path: Path,
        clock: Callable[[], _dt.datetime],
        hasher: argon2.PasswordHasher | None = None,
        lifetime: _dt.timedelta = SESSION_LIFETIME,
    ) -> None:
        try:
            make_private(path)  # who saw whose data, and password hashes: for the platform's user only
            self._conn = sqlite3.connect(path, isolation_level=None)
            self._conn.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise AccountError(f"cannot open accounts {path}: {exc}") from None
        self._clock = clock
        self._hasher = hasher or argon2.PasswordHasher()
        self._lifetime = lifetime

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> AccountStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def add(self, username: str, role: Role, password: str, display_name: str = "") -> Account:
        _valid_name("username", username)
        if len(password) < 8:
            raise AccountError("passwords need at least 8 characters")
        account = Account(username, role, display_name or username)
        try:
            self._conn.execute(
                "INSERT INTO accounts VALUES (?, ?, ?, ?)",
                (username, role.value, account.display_name, self._hasher.hash(password)),
            )
        except sqlite3.IntegrityError:
            raise AccountError(f"account {username!r} exists") from None
        return account

    def accounts(self) -> list[Account]:
        rows = self._conn.execute("SELECT username, role, display_name FROM accounts ORDER BY username").fetchall()
        return [Account(u, Role(r), d) for u, r, d in rows]

    def account(self, username: str) -> Account | None:
        row = self._conn.execute(
            "SELECT username, role, display_name FROM accounts WHERE username = ?", (username,)
        ).fetchone()
        return None if row is None else Account(row[0], Role(row[1]), row[2])

    def login(self, username: str, password: str) -> Session:
        """A new session for the right password; the same error for an unknown user and a wrong password."""
        row = self._conn.execute("SELECT password_hash FROM accounts WHERE username = ?", (username,)).fetchone()
        try:
            if row is None:
                raise argon2.exceptions.VerifyMismatchError
            self._hasher.verify(row[0], password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            raise AccountError("wrong username or password") from None
        session = Session(
            secrets.token_urlsafe(32), secrets.token_urlsafe(32), username, self._clock() + self._lifetime
        )
        self._conn.execute(
            "INSERT INTO sessions VALUES (?, ?, ?, ?)",
            (session.token, session.csrf, username, session.expires.astimezone(_dt.UTC).isoformat()),
        )
        return session

    def session(self, token: str) -> Session | None:
        """The live session for ``token``; expired sessions are removed and give ``None``."""
        row = self._conn.execute("SELECT * FROM sessions WHERE token = ?", (token,)).fetchone()
        if row is None:
            return None
        session = Session(row[0], row[1], row[2], _dt.datetime.fromisoformat(row[3]))
        if self._clock() >= session.expires:
            self.logout(token)
            return None
        return session

    @staticmethod
    def csrf_ok(session: Session, presented: str) -> bool:
        return hmac.compare_digest(session.csrf.encode(), presented.encode())

    def logout(self, token: str) -> None:
        self._conn.execute("DELETE FROM sessions WHERE token = ?", (token,))

    def set_sharing(self, sharing: Sharing) -> None:
        _valid_name("resident", sharing.resident)
        doctor = self.account(sharing.doctor)
        if doctor is None or doctor.role is not Role.DOCTOR:
            raise AccountError(f"{sharing.doctor!r} is not a doctor's account")
        if (sharing.level is SharingLevel.FAMILY) != (sharing.family_member is not None):
            raise AccountError("a named family member goes with (and only with) the family sharing level")
        if sharing.family_member is not None:
            member = self.account(sharing.family_member)
            if member is None or member.role is not Role.FAMILY:
                raise AccountError(f"{sharing.family_member!r} is not a family member's account")
        self._conn.execute(
            "INSERT OR REPLACE INTO sharing VALUES (?, ?, ?, ?)",
            (sharing.resident, sharing.doctor, sharing.level.value, sharing.family_member),
        )

    def sharing(self, resident: str) -> Sharing | None:
        row = self._conn.execute("SELECT * FROM sharing WHERE resident = ?", (resident,)).fetchone()
        return None if row is None else Sharing(row[0], row[1], SharingLevel(row[2]), row[3])


# --- carehub platform account ... ----------------------------------------------------------------------------------

app = typer.Typer(help="Console accounts.", no_args_is_help=True, add_completion=False)
_ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The platform's TOML config file.")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    return typer.Exit(2)


def _store(config: Path) -> AccountStore:
    try:
        path = accounts_path(load_platform_config(config).database)
        return AccountStore(path, lambda: _dt.datetime.now(_dt.UTC))
    except (PlatformConfigError, AccountError) as exc:
        raise _fail(str(exc)) from None


@app.command("add")
def add_command(
    username: Annotated[str, typer.Argument(help="The login name.")],
    config: _ConfigOption,
    role: Annotated[Role, typer.Option("--role", help="doctor, nurse, administrator or family.")],
    name: Annotated[str, typer.Option("--name", help="The name the console shows.")] = "",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input (one line).")
    ] = False,
) -> None:
    """Add an account; the password is prompted for (or read from stdin), never taken from the command line."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    with _store(config) as store:
        try:
            account = store.add(username, role, password, name)
        except AccountError as exc:
            raise _fail(str(exc)) from None
    typer.echo(f"account added: {account.username} ({account.role.value})")


@app.command("list")
def list_command(config: _ConfigOption) -> None:
    """List accounts: username, role, display name."""
    with _store(config) as store:
        for a in store.accounts():
            typer.echo(f"{a.username} {a.role.value} {a.display_name}")
