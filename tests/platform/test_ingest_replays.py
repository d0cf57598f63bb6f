"""Re-sent envelopes are counted per batch, not per envelope (issue 15 item 2: "rejection and replay counters kept in
memory and flushed, never one fsync each"): a 1,000,000-envelope storm's resends wrote one autocommitted row, and a
warning line, per re-sent envelope; now one write per batch and one line per hub, and the counts are the same."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path

import pytest

from community.ingest_core import IngestCore, IngestStats, UplinkFrame
from community.samples import T0, bp_record
from community.storage import SqliteStorage
from community.wire import PlatformCodec
from protocols.envelope import seal
from protocols.keys import HubIdentity, PlatformIdentity
from protocols.topics import encode_uplink, up_topic


class CountingStorage(SqliteStorage):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writes: list[dict[tuple[str, str], int]] = []

    async def count_rejection(self, reason: str, hub: str | None, count: int = 1) -> None:
        self.writes.append({(reason, hub or ""): count})
        await super().count_rejection(reason, hub, count)

    async def count_rejections(self, counts: Mapping[tuple[str, str], int]) -> None:
        self.writes.append(dict(counts))
        await super().count_rejections(counts)


async def test_a_batch_of_resends_is_counted_in_one_write(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    platform = PlatformIdentity.generate()
    hubs = [HubIdentity.generate(f"hub-{n}") for n in range(3)]

    def frame(hub: HubIdentity, seqs: range) -> UplinkFrame:
        envelopes = [
            seal(hub, platform.public.box_key, s, T0, [bp_record(hub.hub_id, s, seq=s).to_cbor()]) for s in seqs
        ]
        return UplinkFrame(up_topic(hub.hub_id), encode_uplink(envelopes))

    async with CountingStorage(tmp_path / "p.db") as storage:
        for hub in hubs:
            await storage.enroll_hub(hub.public)
        stats = IngestStats()
        core = IngestCore(storage, PlatformCodec(platform), stats, asyncio.Queue())
        await core.handle([frame(h, range(1, 11)) for h in hubs])
        assert stats.envelopes_stored == 30
        assert storage.writes == []
        # Each hub sends its ten again plus one new one; a second worker (a fresh core: no replay window) as well.
        again = [frame(h, range(1, 12)) for h in hubs]
        with caplog.at_level(logging.WARNING, logger="community.ingest_core"):
            acks = await core.handle(again)
            fresh = IngestCore(storage, PlatformCodec(platform), IngestStats(), asyncio.Queue())
            await fresh.handle(again)
        assert sorted(len(a.stored) for a in acks) == [11, 11, 11]  # re-sends are acked as stored
        assert storage.writes == [
            {("replayed", h.hub_id): 10 for h in hubs},
            {("replayed", h.hub_id): 11 for h in hubs},
        ]
        assert stats.replays == 30
        assert stats.rejections == {"replayed": 30}
        assert await storage.rejections() == {"replayed": 63}
        assert len([r for r in caplog.records if "seen before" in r.getMessage()]) == 6  # one line per hub and batch
