"""The ingest worker's message queue hands priority-lane frames (carehub/v1/<hub>/alarm) out before routine ones,
each lane in arrival order, however gets and puts interleave (issue 15 item 4: a panic must not wait behind a storm
of backlogged routine frames in the worker)."""

from __future__ import annotations

import asyncio

import aiomqtt
from hypothesis import given
from hypothesis import strategies as st

from community.ingest import AlarmsFirst

steps = st.lists(st.one_of(st.sampled_from(["up", "alarm"]), st.just("get")), max_size=60)


def message(n: int, lane: str) -> aiomqtt.Message:
    return aiomqtt.Message(
        f"carehub/v1/hub-{n % 3}/{lane}", str(n).encode(), qos=1, retain=False, mid=n, properties=None
    )


@given(steps)
def test_alarms_come_first_and_each_lane_keeps_its_order(script: list[str]) -> None:
    async def run() -> None:
        queue = AlarmsFirst()
        alarms: list[int] = []
        routine: list[int] = []
        for n, step in enumerate(script):
            if step == "get":
                if queue.empty():
                    continue
                got = queue.get_nowait()
                expected = alarms.pop(0) if alarms else routine.pop(0)
                assert int(got.payload) == expected  # type: ignore[arg-type]
            else:
                queue.put_nowait(message(n, step))
                (alarms if step == "alarm" else routine).append(n)
        drained = [int(queue.get_nowait().payload) for _ in range(queue.qsize())]  # type: ignore[arg-type]
        assert drained == alarms + routine

    asyncio.run(run())


def test_a_panic_behind_two_thousand_routine_frames_is_next() -> None:
    async def run() -> None:
        queue = AlarmsFirst()
        for n in range(2000):
            queue.put_nowait(message(n, "up"))
        queue.put_nowait(message(2000, "alarm"))
        assert str((await queue.get()).topic).endswith("/alarm")
        assert int((await queue.get()).payload) == 0  # type: ignore[arg-type]

    asyncio.run(run())
