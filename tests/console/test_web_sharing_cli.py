"""``carehub platform sharing set|show`` (issue 18 item 5), through the real entry point."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import argon2
from cli_run import carehub

from community.console.accounts import AccountStore, Role, accounts_path
from community.console.audit import SqliteAuditStore, audit_path, verify

FAST = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def test_sharing_is_set_shown_audited_and_bad_input_is_one_line(tmp_path: Path) -> None:
    assert carehub("platform", "init", "--dir", tmp_path).returncode == 0
    config = tmp_path / "platform.toml"
    with AccountStore(accounts_path(tmp_path / "platform.db"), lambda: _dt.datetime.now(_dt.UTC), FAST) as accounts:
        accounts.add("dr-li", Role.DOCTOR, "correct horse")
    shown = carehub("platform", "sharing", "show", "wang", "-c", config)
    assert shown.returncode == 1
    assert "nobody" in shown.stdout
    done = carehub("platform", "sharing", "set", "wang", "-c", config, "--doctor", "dr-li", "--level", "care-team")
    assert done.returncode == 0, done.stderr
    shown = carehub("platform", "sharing", "show", "wang", "-c", config)
    assert shown.stdout.strip() == "wang: doctor=dr-li level=care-team"
    bad = carehub("platform", "sharing", "set", "wang", "-c", config, "--doctor", "nobody", "--level", "own-doctor")
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1
    assert "not a doctor" in bad.stderr
    with SqliteAuditStore(audit_path(tmp_path / "platform.db")) as store:
        entries = list(store.entries())
    verify(entries)
    assert [(e.action, e.resident) for e in entries] == [("sharing.set", "wang")]
