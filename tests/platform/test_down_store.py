"""The down-message store (issue 15 item 7) on both engines: queued before it is published, counted sends, the
hub's confirmation, earlier open messages expiring, a late confirmation still counted, and listing filters."""

from __future__ import annotations

import datetime as _dt
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from community.down_types import DownState, QueuedDown
from community.storage import SqliteStorage, Storage
from community.storage_common import StorageError

T0 = _dt.datetime(2026, 12, 4, 8, 0, tzinfo=_dt.UTC)
Opener = Callable[[], AbstractAsyncContextManager[Storage]]


@pytest.fixture
def fresh(one_database: Opener) -> Opener:
    """A new, empty database of each engine (tests/platform/conftest.py)."""
    return one_database


def queued(hub: str, seq: int, minutes: int = 0) -> QueuedDown:
    return QueuedDown(hub, seq, "alarm_ack", bytes([seq]) * 70, DownState.QUEUED, T0 + _dt.timedelta(minutes=minutes))


@asynccontextmanager
async def opened(fresh: Opener) -> AsyncIterator[Storage]:
    async with fresh() as db:
        yield db


async def test_a_message_is_kept_until_the_hub_confirms_it(fresh) -> None:
    async with opened(fresh) as db:
        await db.queue_down(queued("hub-a", 1))
        (m,) = await db.down_messages("hub-a", open_only=True)
        assert (m.state, m.sends, m.sent_at, m.payload) == (DownState.QUEUED, 0, None, bytes([1]) * 70)
        await db.mark_down_sent("hub-a", 1, T0 + _dt.timedelta(seconds=1))
        await db.mark_down_sent("hub-a", 1, T0 + _dt.timedelta(seconds=40))
        (m,) = await db.down_messages("hub-a")
        assert (m.state, m.sends, m.sent_at) == (DownState.SENT, 2, T0 + _dt.timedelta(seconds=40))
        await db.confirm_down("hub-a", 1, DownState.APPLIED, at=T0 + _dt.timedelta(minutes=1))
        assert await db.down_messages("hub-a", open_only=True) == []
        (m,) = await db.down_messages()
        assert (m.state, m.confirmed_at) == (DownState.APPLIED, T0 + _dt.timedelta(minutes=1))
        await db.mark_down_sent("hub-a", 1, T0 + _dt.timedelta(minutes=2))  # a confirmed message stays confirmed
        assert (await db.down_messages())[0].sends == 2


async def test_a_refusal_keeps_the_hubs_reason_and_expires_earlier_open_messages(fresh) -> None:
    async with opened(fresh) as db:
        for seq in (1, 2, 3):
            await db.queue_down(queued("hub-a", seq))
        await db.queue_down(queued("hub-b", 1))
        await db.confirm_down(
            "hub-a", 3, DownState.REFUSED, at=T0, reason="unknown_alarm", detail="no such alarm on this hub"
        )
        states = {(m.hub, m.seq): (m.state, m.reason) for m in await db.down_messages()}
        assert states[("hub-a", 3)] == (DownState.REFUSED, "unknown_alarm")
        assert states[("hub-a", 1)][0] is states[("hub-a", 2)][0] is DownState.EXPIRED
        assert states[("hub-b", 1)] == (DownState.QUEUED, None)  # another hub's queue is untouched
        # The confirmation of 2 was in flight: it still counts.
        await db.confirm_down("hub-a", 2, DownState.APPLIED, at=T0 + _dt.timedelta(seconds=5))
        assert {m.seq: m.state for m in await db.down_messages("hub-a")}[2] is DownState.APPLIED


async def test_listing_filters_by_last_send(fresh) -> None:
    async with opened(fresh) as db:
        await db.queue_down(queued("hub-a", 1))
        await db.queue_down(queued("hub-a", 2))
        await db.mark_down_sent("hub-a", 1, T0)
        await db.mark_down_sent("hub-a", 2, T0 + _dt.timedelta(minutes=5))
        due = await db.down_messages(open_only=True, sent_before=T0 + _dt.timedelta(minutes=1))
        assert [m.seq for m in due] == [1]


async def test_a_seq_is_stored_once_and_a_confirmation_must_be_applied_or_refused(fresh) -> None:
    async with opened(fresh) as db:
        await db.queue_down(queued("hub-a", 1))
        with pytest.raises(StorageError, match="already stored"):
            await db.queue_down(queued("hub-a", 1))
        with pytest.raises(ValueError, match="applied or refused"):
            await db.confirm_down("hub-a", 1, DownState.SENT, at=T0)


@settings(max_examples=20, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(["send", "apply", "refuse"]), st.integers(1, 6)), max_size=25))
def test_states_follow_the_model(tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int]]) -> None:
    """On SQLite, against a model: confirmed messages never reopen; an open message below a confirmed one expires."""
    import asyncio  # noqa: PLC0415

    async def run() -> None:
        async with SqliteStorage(tmp_path_factory.mktemp("model") / "d.db") as db:
            model: dict[int, DownState] = {}
            for seq in range(1, 7):
                await db.queue_down(queued("hub-a", seq))
                model[seq] = DownState.QUEUED
            for action, seq in steps:
                if action == "send":
                    await db.mark_down_sent("hub-a", seq, T0)
                    if model[seq].open:
                        model[seq] = DownState.SENT
                    continue
                state = DownState.APPLIED if action == "apply" else DownState.REFUSED
                await db.confirm_down("hub-a", seq, state, at=T0)
                if model[seq].open or model[seq] is DownState.EXPIRED:
                    model[seq] = state
                for earlier in range(1, seq):
                    if model[earlier].open:
                        model[earlier] = DownState.EXPIRED
            assert {m.seq: m.state for m in await db.down_messages()} == model

    asyncio.run(run())
