"""The Mosquitto worker stores the frames already waiting in its queue together (community.ingest.batches, issue 15
worker CPU: one commit and one fsync for a storm's queued frames instead of one each), never waits for a batch to
fill, keeps every frame and its order, and never puts a routine frame in a batch that starts with priority frames
(a panic's commit carries no routine envelopes)."""

from __future__ import annotations

import asyncio

import aiomqtt
from hypothesis import given
from hypothesis import strategies as st

from community.ingest import AlarmsFirst, batches


def message(n: int, lane: str) -> aiomqtt.Message:
    return aiomqtt.Message(
        f"carehub/v1/hub-{n % 3}/{lane}", str(n).encode(), qos=1, retain=False, mid=n, properties=None
    )


class Queue:
    """aiomqtt's ``client.messages`` over the worker's queue: the next message, and how many wait."""

    def __init__(self) -> None:
        self.queue = AlarmsFirst()

    def __len__(self) -> int:
        return self.queue.qsize()

    def __anext__(self) -> asyncio.Future[aiomqtt.Message]:
        return asyncio.ensure_future(self.queue.get())


def lane(m: aiomqtt.Message) -> str:
    return str(m.topic).rsplit("/", 1)[1]


@given(st.lists(st.lists(st.sampled_from(["up", "alarm"]), min_size=1, max_size=30), max_size=6), st.integers(1, 8))
def test_batches_hold_what_waits_in_order_and_never_mix_a_priority_batch(arrivals: list[list[str]], limit: int):
    async def run() -> None:
        q = Queue()
        taken: list[aiomqtt.Message] = []
        sent: list[aiomqtt.Message] = []
        n = 0
        stream = batches(q, limit)
        for burst in arrivals:  # a burst arrives, then the worker takes batches until the queue is empty
            for step in burst:
                m = message(n, step)
                n += 1
                sent.append(m)
                q.queue.put_nowait(m)
            while len(taken) < len(sent):
                batch = await anext(stream)
                assert 1 <= len(batch) <= limit
                if lane(batch[0]) == "alarm":
                    assert all(lane(m) == "alarm" for m in batch)
                taken.extend(batch)
            assert len(q) == 0
        await stream.aclose()
        assert sorted(int(m.payload) for m in taken) == list(range(n))  # type: ignore[arg-type]
        for kind in ("up", "alarm"):  # each lane in arrival order
            order = [int(m.payload) for m in taken if lane(m) == kind]  # type: ignore[arg-type]
            assert order == sorted(order)

    asyncio.run(run())


def test_a_batch_does_not_wait_to_fill():
    async def run() -> None:
        q = Queue()
        q.queue.put_nowait(message(0, "up"))
        stream = batches(q, 16)
        assert [int(m.payload) for m in await anext(stream)] == [0]  # type: ignore[arg-type]
        await stream.aclose()

    asyncio.run(run())


def test_a_panic_batch_ends_before_the_routine_frames_that_wait():
    async def run() -> None:
        q = Queue()
        for n in range(5):
            q.queue.put_nowait(message(n, "up"))
        q.queue.put_nowait(message(5, "alarm"))
        q.queue.put_nowait(message(6, "alarm"))
        stream = batches(q, 16)
        first, second = await anext(stream), await anext(stream)
        assert [int(m.payload) for m in first] == [5, 6]  # type: ignore[arg-type]
        assert [int(m.payload) for m in second] == [0, 1, 2, 3, 4]  # type: ignore[arg-type]
        await stream.aclose()

    asyncio.run(run())
