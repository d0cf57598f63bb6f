"""The down-message box costs no query for a hub heard from with nothing open (issue 15: a query per hub was about
2 % of the Mosquitto worker), and still delivers: a message this worker queues is known at once, one another
process queues is known at the next read of the open hubs (``open_refresh_s``), and the sweep sends it anyway.
On both engines, with a second connection to the same database standing for the other process."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import pytest

from community.down_types import DownState, QueuedDown
from community.downbox import DownBox, queue_message
from community.storage import Storage
from community.wire import PlatformCodec
from protocols.keys import PlatformIdentity
from protocols.messages import AlarmAcknowledgement

T0 = _dt.datetime(2026, 12, 4, 8, 0, tzinfo=_dt.UTC)
Opener = Callable[[], AbstractAsyncContextManager[Storage]]


@pytest.fixture
def fresh(one_database: Opener) -> Opener:
    """A new, empty database of each engine (tests/platform/conftest.py)."""
    return one_database


@pytest.fixture
def codec() -> PlatformCodec:
    return PlatformCodec(PlatformIdentity.generate())


@dataclass
class Clock:
    """Both of the box's clocks, moved by hand."""

    mono: float = 100.0
    wall: _dt.datetime = T0

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += _dt.timedelta(seconds=seconds)


@dataclass
class Publisher:
    """A broker client that keeps what it was given."""

    sent: list[tuple[str, bytes]] = field(default_factory=list)

    async def publish(self, topic: str, payload: bytes, qos: int) -> None:
        assert qos == 1
        self.sent.append((topic, payload))


class Counting:
    """The real storage, counting the reads the box makes."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self.listings = 0
        self.open_reads = 0

    async def down_messages(self, hub: str | None = None, **kwargs: Any) -> list[QueuedDown]:
        self.listings += 1
        return await self._storage.down_messages(hub, **kwargs)

    async def open_down_hubs(self) -> list[str]:
        self.open_reads += 1
        return await self._storage.open_down_hubs()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


def box(storage: Counting, codec: PlatformCodec, clock: Clock) -> DownBox:
    return DownBox(
        storage,  # type: ignore[arg-type]  # the real storage behind a counter
        codec,
        lambda: clock.wall,
        resend_after_s=30,
        sweep_every_s=30,
        open_refresh_s=1.0,
        monotonic=lambda: clock.mono,
    )


def topics(publisher: Publisher) -> Sequence[str]:
    return [topic for topic, _ in publisher.sent]


async def test_open_down_hubs_lists_each_hub_with_queued_or_sent_messages_once(fresh: Opener) -> None:
    async with fresh() as db:
        assert await db.open_down_hubs() == []
        for hub, seq in (("hub-a", 1), ("hub-a", 2), ("hub-b", 1), ("hub-c", 1)):
            await db.queue_down(QueuedDown(hub, seq, "alarm_ack", b"x" * 70, DownState.QUEUED, T0))
        await db.mark_down_sent("hub-b", 1, T0)
        await db.confirm_down("hub-c", 1, DownState.APPLIED, at=T0)
        assert sorted(await db.open_down_hubs()) == ["hub-a", "hub-b"]
        await db.confirm_down("hub-a", 2, DownState.REFUSED, at=T0, reason="unknown_alarm")  # 1 expires with it
        assert await db.open_down_hubs() == ["hub-b"]


async def test_hubs_with_nothing_open_cost_one_read_in_all(fresh: Opener, codec: PlatformCodec) -> None:
    clock = Clock()
    publisher = Publisher()
    async with fresh() as db:
        storage = Counting(db)
        downs = box(storage, codec, clock)
        for n in range(200):
            assert await downs.on_hub_seen(publisher, f"hub-{n}") == 0
        clock.advance(0.5)
        for n in range(200):
            assert await downs.on_hub_seen(publisher, f"hub-{n}") == 0
    assert (storage.open_reads, storage.listings, publisher.sent) == (1, 0, [])


async def test_a_message_another_process_queues_is_sent_once_the_open_hubs_are_read_again(
    fresh: Opener, codec: PlatformCodec
) -> None:
    clock = Clock()
    publisher = Publisher()
    async with fresh() as db, fresh() as other:
        downs = box(Counting(db), codec, clock)
        assert await downs.on_hub_seen(publisher, "hub-a") == 0  # nothing open: the set is read, hub-a not in it
        # Another process (the operator's command, whose own publish failed) stores a message for hub-a.
        message, _ = await queue_message(other, codec, "hub-a", AlarmAcknowledgement("panic-7", "Dr. Li", T0), T0)
        clock.advance(0.5)
        assert await downs.on_hub_seen(publisher, "hub-a") == 0  # the set is younger than open_refresh_s
        clock.advance(0.5)
        assert await downs.on_hub_seen(publisher, "hub-a") == 1  # read again: published at once
        assert publisher.sent == [(codec.down_topic("hub-a"), codec.encode_down(message))]
        ((seq, state, sends),) = [(d.seq, d.state, d.sends) for d in await db.down_messages("hub-a")]
        assert (seq, state, sends) == (1, DownState.SENT, 1)
        clock.advance(5)
        assert await downs.on_hub_seen(publisher, "hub-a") == 0  # published 5 s ago: not due yet
        clock.advance(31)
        assert await downs.on_hub_seen(publisher, "hub-a") == 1  # unconfirmed after resend_after_s: again


async def test_a_message_this_worker_sends_is_known_without_reading_the_open_hubs(
    fresh: Opener, codec: PlatformCodec
) -> None:
    clock = Clock()
    publisher = Publisher()
    async with fresh() as db:
        storage = Counting(db)
        downs = box(storage, codec, clock)
        assert await downs.on_hub_seen(publisher, "hub-a") == 0
        await downs.send(publisher, "hub-a", AlarmAcknowledgement("panic-7", "Dr. Li", T0))  # hub-a was offline
        clock.advance(0.2)  # the set was read 0.2 s ago: not read again
        assert await downs.on_hub_seen(publisher, "hub-a") == 0  # published 0.2 s ago: not due
        clock.advance(31)
        assert storage.open_reads == 1
        assert await downs.on_hub_seen(publisher, "hub-a") == 1
    assert topics(publisher) == [codec.down_topic("hub-a")] * 2


async def test_the_sweep_sends_what_another_process_queued_whoever_is_heard_from(
    fresh: Opener, codec: PlatformCodec
) -> None:
    clock = Clock()
    publisher = Publisher()
    async with fresh() as db, fresh() as other:
        downs = box(Counting(db), codec, clock)
        assert await downs.on_hub_seen(publisher, "hub-b") == 0
        await queue_message(other, codec, "hub-a", AlarmAcknowledgement("panic-7", "Dr. Li", T0), T0)
        assert await downs.on_hub_seen(publisher, "hub-a") == 0  # not known yet (the set is fresh)
        assert await downs.sweep(publisher) == 1
    assert topics(publisher) == [codec.down_topic("hub-a")]
