"""The hub registry's generation in storage, and each worker's verify-key cache (issue 15.2, cause 1)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from community.hubkeys import HubKeyCache
from community.storage import Enrolment, HubKeyChanges, SqliteStorage
from gateway.clock import ManualClock
from protocols.keys import HubIdentity, HubPublicKey

_T = TypeVar("_T")


def key(n: int) -> nacl.signing.VerifyKey:
    return nacl.signing.SigningKey(bytes([n + 1]) * 32).verify_key


def hub(name: str, n: int = 0) -> HubPublicKey:
    return HubPublicKey(name, key(n))


# -- storage ------------------------------------------------------------------------------------------------------


async def test_every_enrolment_steps_the_generation_and_names_only_the_hubs_it_wrote(tmp_path: Path):
    async with SqliteStorage(tmp_path / "p.db") as db:
        start = await db.hub_key_changes(None)
        assert start == HubKeyChanges(0, {})
        await db.enroll_hubs([Enrolment(hub("hub-a")), Enrolment(hub("hub-b"), ("resident-1",))])
        first = await db.hub_key_changes(start.generation)
        assert first.generation == 1
        assert dict(first.keys) == {"hub-a": key(0), "hub-b": key(0)}
        assert await db.knows_resident("hub-b", "resident-1")
        await db.enroll_hub(hub("hub-a", 1))  # re-enrolled with a new key
        second = await db.hub_key_changes(first.generation)
        assert (second.generation, dict(second.keys)) == (2, {"hub-a": key(1)})
        assert await db.hub_key_changes(second.generation) == HubKeyChanges(2, {})
        assert (await db.hub_key_changes(None)).keys == {}  # the generation alone
        await db.enroll_hubs([])  # nothing to write: the generation stays
        assert (await db.hub_key_changes(None)).generation == 2
        assert await db.hub_key("hub-a") == key(1)
        assert await db.hub_key("hub-z") is None


async def test_an_invalid_enrolment_is_refused_before_anything_is_written(tmp_path: Path):
    with pytest.raises(ValueError, match="not a valid hub id"):
        Enrolment(hub("Hub A"))
    with pytest.raises(ValueError, match="resident id"):
        Enrolment(hub("hub-a"), ("",))
    async with SqliteStorage(tmp_path / "p.db") as db:
        with pytest.raises(ValueError, match="resident id"):
            await db.enroll_hub(hub("hub-a"), ["r" * 300])
        assert await db.hubs() == {}
        assert (await db.hub_key_changes(None)).generation == 0


async def test_a_schema_3_database_gains_the_registry_generation(tmp_path: Path):
    path = tmp_path / "p.db"
    enrolled = HubIdentity.generate("hub-a")
    async with SqliteStorage(path) as db:
        await db.enroll_hub(enrolled.public)
    conn = sqlite3.connect(path)  # back to schema 3 as it was: no generation anywhere
    for statement in (
        "DROP INDEX hubs_generation",
        "DROP TABLE hub_registry",
        "ALTER TABLE hubs DROP COLUMN generation",
        "PRAGMA user_version = 3",
    ):
        conn.execute(statement)
    conn.commit()
    conn.close()
    async with SqliteStorage(path) as db:
        assert await db.hub_key("hub-a") == enrolled.verify_key
        assert await db.hub_key_changes(None) == HubKeyChanges(0, {})
        await db.enroll_hub(hub("hub-b"))
        assert await db.hub_key_changes(0) == HubKeyChanges(1, {"hub-b": key(0)})
    async with SqliteStorage(path) as db:  # opening it again changes nothing
        assert (await db.hub_key_changes(None)).generation == 1
        assert set(await db.hubs()) == {"hub-a", "hub-b"}


# -- the cache ----------------------------------------------------------------------------------------------------


class Registry:
    """An in-memory :class:`~community.hubkeys.HubKeySource` that counts the rows it returns."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[int, nacl.signing.VerifyKey]] = {}  # hub -> (generation, key)
        self.generation = 0
        self.rows = 0

    def enroll(self, name: str, n: int) -> None:
        self.generation += 1
        self.keys[name] = (self.generation, key(n))

    async def hub_key(self, name: str) -> nacl.signing.VerifyKey | None:
        self.rows += 1
        entry = self.keys.get(name)
        return None if entry is None else entry[1]

    async def hub_key_changes(self, since: int | None) -> HubKeyChanges:
        changed = {} if since is None else {h: k for h, (g, k) in self.keys.items() if g > since}
        self.rows += 1 + len(changed)
        return HubKeyChanges(self.generation, changed)


def run(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine that never waits (the in-memory registry answers at once)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("the coroutine waited")


def open_with(
    cache: HubKeyCache, name: str, signed_with: nacl.signing.VerifyKey | None
) -> nacl.signing.VerifyKey | None:
    """What the ingest worker does per envelope: the cached key, re-read once if missing or not the signer's."""
    found = cache.lookup().get(name)
    if found is None or found != signed_with:
        if not run(cache.reload(name)):
            return found
        found = cache.lookup().get(name)
    return found


HUBS = [f"hub-{n}" for n in range(6)]
REFRESH_S = 10.0

operations = st.lists(
    st.one_of(
        st.tuples(st.just("enroll"), st.sampled_from(HUBS), st.integers(0, 3)),
        st.tuples(st.just("frame"), st.sampled_from(HUBS), st.booleans()),
        st.tuples(st.just("tick"), st.just(""), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(operations)
def test_the_cache_uses_the_current_key_and_stays_within_its_bounds(ops):
    registry, clock = Registry(), ManualClock()
    cache = HubKeyCache(registry, refresh_s=REFRESH_S, capacity=3, negative_capacity=2, monotonic=clock.monotonic)
    previous: dict[str, nacl.signing.VerifyKey] = {}  # each hub's key before its last re-enrolment
    for op, name, arg in ops:
        if op == "enroll":
            if name in registry.keys:
                previous[name] = registry.keys[name][1]
            registry.enroll(name, int(arg))
        elif op == "tick":
            clock.advance(REFRESH_S)
        else:
            before, seen = registry.rows, cache.generation
            changed = 0 if seen is None else sum(g > seen for g, _ in registry.keys.values())
            run(cache.refresh_if_due())
            current = registry.keys.get(name)
            used_old_key = bool(arg) and name in previous
            signer = previous[name] if used_old_key else (None if current is None else current[1])
            used = open_with(cache, name, signer)
            if current is not None and not used_old_key:
                assert used == current[1]  # enrolled or re-enrolled since the last refresh: accepted at once
            if current is None:
                assert used is None
            # At most: the generation and the hubs changed since (refresh), then one hub row or the same again.
            assert registry.rows - before <= 2 + 2 * changed
        assert len(cache) <= 3
        assert sum(cache.is_known_unknown(h) for h in HUBS) <= 2
    clock.advance(REFRESH_S)
    run(cache.refresh_if_due())
    lookup = cache.lookup()
    for name in list(lookup):  # after a refresh every cached key is the registry's
        assert lookup[name] == registry.keys[name][1]
    for name in HUBS:
        assert not (cache.is_known_unknown(name) and name in registry.keys)


def test_a_hub_in_the_negative_cache_costs_one_row_until_the_registry_moves():
    registry, clock = Registry(), ManualClock()
    cache = HubKeyCache(registry, refresh_s=REFRESH_S, monotonic=clock.monotonic)
    run(cache.refresh_if_due())
    assert not run(cache.reload("hub-x"))  # one row: not enrolled
    assert cache.is_known_unknown("hub-x")
    rows = registry.rows
    assert not run(cache.reload("hub-x"))
    assert registry.rows - rows == 1  # the generation alone
    registry.enroll("hub-x", 0)
    assert run(cache.reload("hub-x"))
    assert cache.lookup()["hub-x"] == key(0)
    assert not cache.is_known_unknown("hub-x")


def test_a_refresh_reads_only_the_changed_hubs_and_loads_none_it_was_not_asked_for():
    registry, clock = Registry(), ManualClock()
    for n in range(50):
        registry.enroll(f"hub-{n}", 0)
    cache = HubKeyCache(registry, refresh_s=REFRESH_S, monotonic=clock.monotonic)
    run(cache.refresh_if_due())
    assert registry.rows == 1
    assert run(cache.reload("hub-1"))
    registry.enroll("hub-1", 1)
    registry.enroll("hub-2", 1)
    clock.advance(REFRESH_S - 1)
    run(cache.refresh_if_due())  # not due yet
    assert cache.lookup()["hub-1"] == key(0)
    clock.advance(1)
    rows = registry.rows
    run(cache.refresh_if_due())
    assert registry.rows - rows == 3  # the generation and the two changed hubs
    assert cache.lookup()["hub-1"] == key(1)
    assert len(cache) == 1  # hub-2 was not cached and is not loaded until it sends


@pytest.mark.parametrize(("argument", "value"), [("refresh_s", -1.0), ("capacity", 0), ("negative_capacity", -1)])
def test_bounds_are_checked(argument, value):
    with pytest.raises(ValueError, match=argument):
        HubKeyCache(Registry(), **{argument: value})


class BatchRegistry(Registry):
    """A :class:`Registry` that also reads many hubs' keys at once (:class:`community.hubkeys.HubKeyBatchSource`),
    counting its reads."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_reads: list[list[str]] = []
        self.during_read: Callable[[], None] = lambda: None

    async def hub_keys(self, hubs: Sequence[str]) -> dict[str, nacl.signing.VerifyKey]:
        self.batch_reads.append(list(hubs))
        found = {h: self.keys[h][1] for h in hubs if h in self.keys}
        self.during_read()
        return found


def test_a_prefetch_reads_the_new_hubs_of_a_batch_in_one_read():
    registry, clock = BatchRegistry(), ManualClock()
    for name in ("hub-a", "hub-b", "hub-c"):
        registry.enroll(name, 0)
    cache = HubKeyCache(registry, refresh_s=REFRESH_S, monotonic=clock.monotonic)
    run(cache.refresh_if_due())
    assert not run(cache.reload("hub-x"))  # remembered as not enrolled
    assert run(cache.reload("hub-a"))  # cached
    rows = registry.rows
    run(cache.prefetch(["hub-c", "hub-a", "hub-b", "hub-x", "hub-y", "hub-b"]))
    assert registry.batch_reads == [["hub-b", "hub-c", "hub-y"]]  # neither cached nor known unknown, once each
    assert registry.rows == rows  # no row read one at a time
    assert cache.lookup()["hub-b"] == key(0)
    assert cache.lookup()["hub-c"] == key(0)
    assert "hub-y" not in cache.lookup()
    assert not cache.is_known_unknown("hub-y")  # left to the envelope's own miss, which remembers it
    run(cache.prefetch(["hub-a", "hub-b", "hub-c", "hub-x"]))
    assert len(registry.batch_reads) == 1  # nothing missing: no read


def test_a_prefetch_keeps_nothing_read_while_the_registry_moved():
    registry, clock = BatchRegistry(), ManualClock()
    registry.enroll("hub-a", 0)
    cache = HubKeyCache(registry, refresh_s=0.0, monotonic=clock.monotonic)
    run(cache.refresh_if_due())

    def re_enrolled_and_refreshed() -> None:  # another lane's refresh saw the re-enrolment while the read ran
        registry.during_read = lambda: None
        registry.enroll("hub-a", 1)
        run(cache.refresh_if_due())

    registry.during_read = re_enrolled_and_refreshed
    run(cache.prefetch(["hub-a"]))
    assert "hub-a" not in cache.lookup()  # the key read before the re-enrolment is not kept
    assert run(cache.reload("hub-a"))
    assert cache.lookup()["hub-a"] == key(1)
