"""The outbox's disk reserve (issue 17 item 2) on a really full file system: a small tmpfs filled by another file.

Priority rows (alarms, panic events) and acknowledgements are stored from the released reserve; routine writes are
refused with :class:`DiskFullError` and do not eat it; the reserve comes back once space returns and the episode is
kept in the outbox's cursor across a restart. Mounting needs root (CI runs as root); elsewhere these tests skip.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from small_disk import small_disk as tmpfs

from gateway.clock import ManualClock
from gateway.disk_reserve import (
    EPISODE_CURSOR,
    DiskFullError,
    DiskReserve,
    FullDiskEpisode,
    free_bytes,
    reserve_path,
)
from gateway.outbox import Lane, OutboxItem, open_outbox

RESERVE = 512 * 1024


def item(seq: int, lane: Lane, size: int = 2000) -> OutboxItem:
    return OutboxItem(
        envelope_seq=seq,
        envelope=os.urandom(size),  # incompressible, like a sealed envelope
        lane=lane,
        kind="alarm" if lane is Lane.PRIORITY else "measurement",
        record_ids=(f"rec-{seq}",),
        created=1_700_000_000.0 + seq,
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of its own, unmounted after the test."""
    with tmpfs(tmp_path / "disk", "4m") as path:
        yield path


def fill(directory: Path, leave: int = 0) -> Path:
    """Another program's file taking every byte of the file system but ``leave``."""
    filler = directory / "someone-elses.log"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while free_bytes(directory) - chunk >= leave and os.write(fd, b"x" * chunk) == chunk:
                    pass
    finally:
        os.close(fd)
    return filler


def held(outbox_path: Path) -> int:
    found = reserve_path(outbox_path).stat()
    return min(found.st_size, found.st_blocks * 512)


async def test_a_full_disk_stores_alarms_from_the_reserve_refuses_routine_and_recovers(small_disk: Path) -> None:
    path = small_disk / "outbox.sqlite"
    clock = ManualClock(1_800_000_000.0)
    async with open_outbox(path, clock=clock, reserve_bytes=RESERVE) as ob:
        assert held(path) == RESERVE
        seqs = iter(await ob.allocate_seqs(1000))
        delivered = next(seqs)
        await ob.put(item(delivered, Lane.ROUTINE))
        filler = fill(small_disk)
        assert free_bytes(small_disk) == 0

        # A routine reading on the full disk is not stored and does not take the reserve.
        refusal: DiskFullError | None = None
        for _ in range(50):  # the WAL may have room for a few frames left
            try:
                await ob.put(item(next(seqs), Lane.ROUTINE))
            except DiskFullError as exc:
                refusal = exc
                break
        assert refusal is not None
        assert held(path) == RESERVE
        stats = await ob.stats()
        routine_before = stats.routine_rows

        # An alarm is stored: the reserve is given up for it, and the caller never sees the failure.
        alarm = next(seqs)
        await ob.put(item(alarm, Lane.PRIORITY))
        assert held(path) == 0
        assert alarm in [i.envelope_seq for i in await ob.peek_batch(10, 1_000_000)]
        more_alarms = [next(seqs) for _ in range(5)]
        for seq in more_alarms:
            await ob.put(item(seq, Lane.PRIORITY), cursors={"pendant:C0": seq})
        assert await ob.get_cursor("pendant:C0") == more_alarms[-1]
        # While it is released, routine writes are refused up front: the space is the alarms'.
        with pytest.raises(DiskFullError):
            await ob.put(item(next(seqs), Lane.ROUTINE))
        with pytest.raises(DiskFullError):
            await ob.set_cursor("racp:meter", 7)
        assert await ob.ack([delivered]) == 1  # an acknowledgement is essential: it frees pages
        stats = await ob.stats()
        assert (stats.priority_rows, stats.routine_rows) == (6, routine_before - 1)
        status, episode = await ob.disk_reserve()
        assert status is not None
        assert not status.present
        assert episode is not None
        assert episode.ended is None
        assert episode.priority_commits >= 1
        assert episode.refused >= 3

        # Space returns: the next write puts the reserve back and routine readings are stored again.
        filler.unlink()
        clock.advance(60.0)
        await ob.put(item(next(seqs), Lane.ROUTINE))
        assert held(path) == RESERVE
        status, episode = await ob.disk_reserve()
        assert status is not None
        assert status.present
        assert episode is not None
        assert episode.ended == 1_800_000_060.0
        assert episode.started == 1_800_000_000.0
        ended = episode
        await ob.put(item(next(seqs), Lane.ROUTINE))  # the episode's end is committed with this write

    # The episode survives a restart, in the cursor the doctor reads.
    async with open_outbox(path, clock=clock, reserve_bytes=RESERVE) as ob:
        assert FullDiskEpisode.decode(await ob.get_cursor(EPISODE_CURSOR)) == ended
        assert (await ob.disk_reserve())[1] == ended


async def test_an_outbox_opened_with_too_little_space_holds_no_reserve_until_space_returns(small_disk: Path) -> None:
    path = small_disk / "outbox.sqlite"
    filler = fill(small_disk, leave=RESERVE + RESERVE // 2)  # less than twice the reserve
    async with open_outbox(path, reserve_bytes=RESERVE) as ob:
        assert not reserve_path(path).exists() or held(path) == 0
        status, episode = await ob.disk_reserve()
        assert status is not None
        assert not status.present
        assert episode is not None
        assert episode.ended is None
        seqs = iter(await ob.allocate_seqs(10))
        with pytest.raises(DiskFullError):
            await ob.put(item(next(seqs), Lane.ROUTINE))
        await ob.put(item(next(seqs), Lane.PRIORITY))  # there is space, just not to spare
        filler.unlink()
        await ob.put(item(next(seqs), Lane.ROUTINE))
        assert held(path) == RESERVE
        episode = (await ob.disk_reserve())[1]
        assert episode is not None
        assert episode.ended is not None


def test_the_reserve_is_real_blocks_and_release_gives_them_back(small_disk: Path) -> None:
    reserve = DiskReserve(small_disk / "x-reserve", RESERVE)
    before = free_bytes(small_disk)
    assert reserve.ensure()
    assert before - free_bytes(small_disk) >= RESERVE  # allocated, not a sparse file
    assert reserve.release() == RESERVE
    assert free_bytes(small_disk) == before
    assert not reserve.held
    fill(small_disk, leave=RESERVE)  # room for it, but not twice: it is not taken back yet
    assert not reserve.ensure()
    assert reserve.status().allocated == 0


@given(
    started=st.floats(min_value=0, max_value=2**40, allow_nan=False),
    ended=st.none() | st.floats(min_value=0, max_value=2**40, allow_nan=False),
    commits=st.integers(min_value=0, max_value=2**62),
    refused=st.integers(min_value=0, max_value=2**62),
)
def test_an_episode_round_trips_through_its_cursor_text(
    started: float, ended: float | None, commits: int, refused: int
) -> None:
    episode = FullDiskEpisode(started, ended, commits, refused)
    assert FullDiskEpisode.decode(episode.encode()) == episode


@pytest.mark.parametrize(
    "value",
    [
        b"{}",
        7,
        "not json",
        "[]",
        '{"started": 1}',
        '{"started": "x", "ended": null, "priority_commits": 0, "refused": 0}',
        '{"started": 1, "ended": true, "priority_commits": 0, "refused": 0}',
        '{"started": 1, "ended": null, "priority_commits": -1, "refused": 0}',
        '{"started": 1, "ended": null, "priority_commits": 0, "refused": 1.5}',
    ],
)
def test_a_malformed_episode_cursor_is_a_typed_error(value: object) -> None:
    with pytest.raises(ValueError, match="not a full-disk episode"):
        FullDiskEpisode.decode(value)


async def test_a_garbled_episode_cursor_does_not_keep_the_outbox_from_opening(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    async with open_outbox(path, reserve_bytes=RESERVE) as ob:
        await ob.set_cursor(EPISODE_CURSOR, "{garbled")
    async with open_outbox(path, reserve_bytes=RESERVE) as ob:
        assert (await ob.disk_reserve())[1] is None
        await ob.put(item(1, Lane.PRIORITY))
