"""Console accounts, sessions and sharing (issue 18 item 5)."""

from __future__ import annotations

import datetime as _dt
import sqlite3
from pathlib import Path

import argon2
import pytest
from cli_run import carehub

from community.console.accounts import (
    Access,
    AccountError,
    AccountStore,
    Role,
    Sharing,
    SharingLevel,
    access,
)

T0 = _dt.datetime(2026, 3, 9, 8, 0, tzinfo=_dt.UTC)
FAST = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # the tests' cost, not production's


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> _dt.datetime:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> AccountStore:
    s = AccountStore(tmp_path / "a.db", Clock(), FAST, _dt.timedelta(hours=1))
    s.add("dr-li", Role.DOCTOR, "correct horse", "Dr Li")
    s.add("dr-chen", Role.DOCTOR, "battery staple")
    s.add("nurse-zhao", Role.NURSE, "nurse password")
    s.add("admin", Role.ADMINISTRATOR, "admin password")
    s.add("son-wang", Role.FAMILY, "family password")
    return s


def test_passwords_are_argon2_hashes_and_login_checks_them(store: AccountStore, tmp_path: Path) -> None:
    stored = sqlite3.connect(tmp_path / "a.db").execute("SELECT password_hash FROM accounts WHERE username='dr-li'")
    assert stored.fetchone()[0].startswith("$argon2id$")
    for user, password in (("dr-li", "wrong password"), ("nobody", "correct horse")):
        with pytest.raises(AccountError, match=r"^wrong username or password$"):
            store.login(user, password)
    with pytest.raises(AccountError, match="exists"):
        store.add("dr-li", Role.NURSE, "another password")
    with pytest.raises(AccountError, match="8 characters"):
        store.add("x", Role.NURSE, "short")
    with pytest.raises(AccountError, match="bad username"):
        store.add(" x", Role.NURSE, "long enough")


def test_sessions_expire_by_the_clock_and_carry_a_csrf_token(store: AccountStore) -> None:
    clock = store._clock
    assert isinstance(clock, Clock)
    one = store.login("dr-li", "correct horse")
    two = store.login("dr-li", "correct horse")
    assert len({one.token, one.csrf, two.token, two.csrf}) == 4
    assert store.session(one.token) == one
    assert store.csrf_ok(one, one.csrf)
    assert not store.csrf_ok(one, two.csrf)
    clock.now = T0 + _dt.timedelta(minutes=59)
    assert store.session(one.token) == one
    clock.now = T0 + _dt.timedelta(hours=1)
    assert store.session(one.token) is None
    store.logout(two.token)
    assert store.session(two.token) is None
    assert store.session("forged") is None


@pytest.mark.parametrize(
    ("level", "family", "expected"),
    [
        (SharingLevel.OWN_DOCTOR, None, {"dr-li": Access.FULL}),
        (SharingLevel.CARE_TEAM, None, {"dr-li": Access.FULL, "nurse-zhao": Access.FULL}),
        (SharingLevel.FAMILY, "son-wang", {"dr-li": Access.FULL, "nurse-zhao": Access.FULL, "son-wang": Access.STATUS}),
    ],
)
def test_the_sharing_level_decides_who_sees_a_resident(
    store: AccountStore, level: SharingLevel, family: str | None, expected: dict[str, Access]
) -> None:
    assert all(access(a, store.sharing("mrs-wang")) is Access.NONE for a in store.accounts())
    store.set_sharing(Sharing("mrs-wang", "dr-li", level, family))
    sharing = store.sharing("mrs-wang")
    seen = {a.username: access(a, sharing) for a in store.accounts()}
    assert seen == {u: expected.get(u, Access.NONE) for u in seen}


def test_bad_sharing_settings_are_refused(store: AccountStore) -> None:
    for sharing, match in (
        (Sharing("mrs-wang", "nurse-zhao", SharingLevel.CARE_TEAM), "not a doctor"),
        (Sharing("mrs-wang", "dr-li", SharingLevel.FAMILY), "family member"),
        (Sharing("mrs-wang", "dr-li", SharingLevel.CARE_TEAM, "son-wang"), "family member"),
        (Sharing("mrs-wang", "dr-li", SharingLevel.FAMILY, "dr-chen"), "not a family member"),
    ):
        with pytest.raises(AccountError, match=match):
            store.set_sharing(sharing)


def test_account_commands(tmp_path: Path) -> None:
    assert carehub("platform", "init", "--dir", tmp_path).returncode == 0
    config = tmp_path / "platform.toml"
    add = ("platform", "account", "add", "dr-li", "-c", config, "--role", "doctor", "--name", "Dr Li")
    ok = carehub(*add, "--password-stdin", stdin="correct horse\n")
    assert (ok.returncode, ok.stdout.strip()) == (0, "account added: dr-li (doctor)"), ok.stderr
    again = carehub(*add, "--password-stdin", stdin="correct horse\n")
    assert (again.returncode, again.stderr.strip()) == (2, "error: account 'dr-li' exists")
    short = carehub("platform", "account", "add", "n", "-c", config, "--role", "nurse", "--password-stdin", stdin="x\n")
    assert (short.returncode, short.stderr.strip()) == (2, "error: passwords need at least 8 characters")
    listed = carehub("platform", "account", "list", "-c", config)
    assert (listed.returncode, listed.stdout.strip()) == (0, "dr-li doctor Dr Li")
    with AccountStore(tmp_path / "platform.accounts.db", Clock()) as store:
        assert store.login("dr-li", "correct horse").username == "dr-li"
