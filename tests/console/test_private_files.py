"""The console's SQLite files hold password hashes, sessions and who looked at whose health data: like the platform
database (community.storage_common.make_private) they are created mode 0600, and tightened to it when found open."""

from __future__ import annotations

import datetime as _dt
import os
import stat
from pathlib import Path

import pytest

from community.console.accounts import AccountStore
from community.console.audit import SqliteAuditStore


def _open_accounts(path: Path) -> None:
    with AccountStore(path, lambda: _dt.datetime(2026, 12, 3, tzinfo=_dt.UTC)):
        pass


def _open_audit(path: Path) -> None:
    with SqliteAuditStore(path):
        pass


@pytest.mark.parametrize("opener", [_open_accounts, _open_audit], ids=["accounts", "audit"])
def test_console_files_are_created_private_and_tightened(tmp_path: Path, opener: object) -> None:
    assert callable(opener)
    old = os.umask(0o022)
    try:
        made = tmp_path / "new.db"
        opener(made)
        assert stat.S_IMODE(made.stat().st_mode) == 0o600
        found = tmp_path / "open.db"
        found.touch(mode=0o644)
        found.chmod(0o644)
        opener(found)
        assert stat.S_IMODE(found.stat().st_mode) == 0o600
    finally:
        os.umask(old)
