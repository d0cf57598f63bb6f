"""Fixtures for the platform's tests on both storage engines: every test that takes one runs once on SQLite and once
on PostgreSQL (a new database on the worker's server, ``tests/conftest.py``'s ``pg_server``)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from community.storage import SqliteStorage, Storage
from community.storage_pg import PostgresStorage

Opener = Callable[[], AbstractAsyncContextManager[Storage]]

_n = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def new_database(request: pytest.FixtureRequest, tmp_path: Path, pg_server: Any) -> Callable[[], Opener]:
    """Makes a new, empty database of the engine each time it is called, and returns how to open it (again and
    again: several connections to one database)."""
    if request.param == "sqlite":

        def sqlite() -> Opener:
            path = tmp_path / f"platform-{next(_n)}.db"
            return lambda: SqliteStorage(path)

        return sqlite

    def postgres() -> Opener:
        url = pg_server.create_database()
        return lambda: PostgresStorage(url)

    return postgres


@pytest.fixture
def one_database(new_database: Callable[[], Opener]) -> Opener:
    """How to open (again and again) one new, empty database of the engine."""
    return new_database()
