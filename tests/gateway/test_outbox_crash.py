"""Crash safety: a process SIGKILLed mid-stream loses no row whose ``put`` had returned.

The child opens the outbox, runs several concurrent putters and prints each envelope sequence number only after
its ``await outbox.put(...)`` returned (and its cursor, committed in the same transaction). The parent kills it at
a random moment and checks that every reported row, and a cursor at least as new, is on disk.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.outbox import open_outbox

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import asyncio, sys
from gateway.outbox import Lane, OutboxItem, open_outbox

async def putter(ob, worker, lane):
    n = 0
    while True:
        seq = worker * 1_000_000 + n
        item = OutboxItem(seq, b"sealed" * 20, lane, "measurement", (f"r{seq}",), 0.0)
        await ob.put(item, cursors={f"racp:{worker}": n})
        sys.stdout.write(f"{seq}\n")
        sys.stdout.flush()
        n += 1

async def main():
    async with open_outbox(sys.argv[1]) as ob:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        async with asyncio.TaskGroup() as tg:
            for worker in range(6):
                lane = Lane.PRIORITY if worker == 0 else Lane.ROUTINE
                tg.create_task(putter(ob, worker, lane), name=f"putter-{worker}")

asyncio.run(main())
"""


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_reported_put_survives_sigkill(tmp_path: Path, seed: int):
    path = tmp_path / "outbox.db"
    kill_after = random.Random(seed).randint(20, 600)  # noqa: S311 - reproducible kill point
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, str(path), stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    reported: list[int] = []
    async with asyncio.timeout(60):
        assert (await proc.stdout.readline()).strip() == b"ready"
        while len(reported) < kill_after:
            line = await proc.stdout.readline()
            assert line, "child exited early"
            reported.append(int(line))
        proc.send_signal(signal.SIGKILL)
        # Lines written before the kill may still be in the pipe: they were reported too.
        rest = await proc.stdout.read()
        reported.extend(int(x) for x in rest.split())
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL

    async with open_outbox(path) as ob:
        stored = {i.envelope_seq for i in await ob.peek_batch(10**6, 10**12)}
        missing = set(reported) - stored
        assert not missing, f"{len(missing)} acknowledged puts lost"
        for worker in range(6):
            mine = [s % 1_000_000 for s in reported if s // 1_000_000 == worker]
            cursor = await ob.get_cursor(f"racp:{worker}", default=-1)
            assert isinstance(cursor, int)
            assert cursor >= max(mine, default=-1)
            # The cursor never runs ahead of the rows: every row up to it is stored.
            assert all(worker * 1_000_000 + n in stored for n in range(cursor + 1))
