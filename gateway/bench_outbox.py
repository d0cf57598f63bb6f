"""Outbox benchmarks for ``carehub bench --json``.

* ``outbox_rows_per_s``: rows per second committed (fsynced) with group commit and 64 concurrent putters;
* ``outbox_naive_rows_per_s``: the same machine and run, one commit per row (both are medians of alternating
  rounds: :func:`group_and_naive_rows_per_s`).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

from gateway.outbox import Lane, OutboxItem, open_outbox

__all__ = ["group_and_naive_rows_per_s", "outbox_rows_per_s"]

_ENVELOPE = bytes(range(256)) * 2  # about the size of a sealed measurement envelope


def _item(seq: int) -> OutboxItem:
    return OutboxItem(seq, _ENVELOPE, Lane.ROUTINE, "measurement", (f"bench:{seq}",), 0.0)


async def _put_rate(path: Path, rows: int, putters: int, *, group_commit: bool) -> float:
    items = iter([_item(seq) for seq in range(rows)])  # built before the clock starts: the outbox is measured
    async with open_outbox(path, group_commit=group_commit) as ob:

        async def putter() -> None:
            for item in items:
                await ob.put(item)

        start = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for n in range(putters):
                tg.create_task(putter(), name=f"bench-putter-{n}")
        return rows / (time.perf_counter() - start)


async def outbox_rows_per_s(workdir: Path, *, rows: int = 4000, putters: int = 64, group_commit: bool = True) -> float:
    """Rows per second through ``await outbox.put`` with ``putters`` concurrent callers."""
    name = "group.db" if group_commit else "naive.db"
    return await _put_rate(workdir / name, rows, putters, group_commit=group_commit)


async def group_and_naive_rows_per_s(
    workdir: Path, *, rounds: int = 5, rows: int = 8000, naive_rows: int = 800, putters: int = 64
) -> tuple[float, float]:
    """Median rows per second with group commit and with one commit per row, measured in alternating rounds.

    Alternating puts both modes under the same disk conditions (a VM's fsync time drifts from second to second),
    and the median of several rounds keeps one disturbed round from deciding the figure.
    """
    group: list[float] = []
    naive: list[float] = []
    for n in range(rounds):
        group.append(await _put_rate(workdir / f"group-{n}.db", rows, putters, group_commit=True))
        naive.append(await _put_rate(workdir / f"naive-{n}.db", naive_rows, putters, group_commit=False))
    return statistics.median(group), statistics.median(naive)
