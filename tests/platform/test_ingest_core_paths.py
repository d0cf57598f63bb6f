"""The ingest core's per-envelope paths (issue 15's CPU cuts keep their behaviour): an envelope is opened once with
the cached (or prefetched) key, and one whose cached key is stale costs one more open, never two; after the commit only
envelopes that carry an alarm, a panic, an installation-test record or a down-message confirmation are looked at:
alarms are offered, test data is logged, confirmations reach the hook, and routine readings reach neither."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import nacl.signing
import pytest

from community.ingest_core import IngestCore, IngestStats, UplinkFrame
from community.samples import T0, alarm_record, bp_record, panic_record
from community.storage import SqliteStorage
from community.wire import PlatformCodec
from protocols.envelope import OpenedEnvelope, seal
from protocols.keys import HubIdentity, PlatformIdentity
from protocols.record import DownAppliedBody, MeasurementBody, Record, RecordKind, status_record_id
from protocols.topics import encode_uplink, up_topic


class CountingCodec(PlatformCodec):
    """The real codec, counting envelopes opened."""

    __slots__ = ("opens",)

    def __init__(self, identity: PlatformIdentity) -> None:
        super().__init__(identity)
        self.opens = 0

    def open(
        self, envelope: bytes, known_hubs: Mapping[str, nacl.signing.VerifyKey], expected_hub: str
    ) -> OpenedEnvelope:
        self.opens += 1
        return super().open(envelope, known_hubs, expected_hub)


def frame(platform: PlatformIdentity, hub: HubIdentity, seq: int, records: Sequence[Record]) -> UplinkFrame:
    envelope = seal(hub, platform.public.box_key, seq, T0, [r.to_cbor() for r in records])
    return UplinkFrame(up_topic(hub.hub_id), encode_uplink([envelope]))


async def test_a_hub_enrolled_after_the_cache_was_filled_costs_one_more_open(tmp_path: Path) -> None:
    platform = PlatformIdentity.generate()
    early, late = HubIdentity.generate("hub-a"), HubIdentity.generate("hub-b")
    codec = CountingCodec(platform)
    async with SqliteStorage(tmp_path / "p.db") as storage:
        await storage.enroll_hub(early.public)
        core = IngestCore(storage, codec, IngestStats(), asyncio.Queue())
        await core.handle([frame(platform, early, 1, [bp_record("hub-a", 1)])])
        assert codec.opens == 1
        await storage.enroll_hub(late.public)  # not cached: its key is read before the frame is opened
        (ack,) = await core.handle([frame(platform, late, 1, [bp_record("hub-b", 1)])])
        assert (ack.hub_id, ack.stored, ack.rejected) == ("hub-b", (1,), ())
        assert codec.opens == 2
        renewed = HubIdentity.generate("hub-a")  # re-enrolled with a new key: the cached one no longer verifies
        await storage.enroll_hub(renewed.public)
        (ack,) = await core.handle([frame(platform, renewed, 2, [bp_record("hub-a", 2)])])
        assert (ack.hub_id, ack.stored, ack.rejected) == ("hub-a", (2,), ())
        assert codec.opens == 4  # refused by the cached key, the row read, opened again
        await core.handle([frame(platform, renewed, 3, [bp_record("hub-a", 3)])])
        assert codec.opens == 5
        stranger = HubIdentity.generate("hub-c")  # never enrolled: refused after one open and one read of its row
        (refused,) = await core.handle([frame(platform, stranger, 1, [bp_record("hub-c", 1)])])
        assert [r.reason.value for r in refused.rejected] == ["unknown_hub"]
        assert codec.opens == 6
        assert core.stats.envelopes_stored == 4


async def test_only_envelopes_with_alarms_test_data_or_confirmations_are_looked_at_after_the_commit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    platform = PlatformIdentity.generate()
    hub = HubIdentity.generate("hub-a")
    hooked: list[tuple[str, list[RecordKind], list[str]]] = []

    async def on_stored(hub_id: str, records: Sequence[Record], new_ids: Sequence[str]) -> None:
        hooked.append((hub_id, [r.kind for r in records], list(new_ids)))

    routine = bp_record("hub-a", 1)
    measured = bp_record("hub-a", 2)
    assert isinstance(measured.body, MeasurementBody)
    test_reading = dataclasses.replace(measured, body=dataclasses.replace(measured.body, installation_test=True))
    alarm = alarm_record("hub-a", "alarm-1", 3)
    panic = panic_record("hub-a", "pendant-1", 7, "panic-7", 4)
    applied = Record(
        status_record_id("hub-a", RecordKind.DOWN_APPLIED, 1), "hub-a", 5, T0, DownAppliedBody(1, "alarm_ack")
    )
    alarms: asyncio.Queue[Record] = asyncio.Queue()
    async with SqliteStorage(tmp_path / "p.db") as storage:
        await storage.enroll_hub(hub.public)
        core = IngestCore(storage, PlatformCodec(platform), IngestStats(), alarms, on_stored=on_stored)
        with caplog.at_level(logging.INFO, logger="community.ingest_core"):
            await core.handle(
                [
                    frame(platform, hub, 1, [routine]),
                    frame(platform, hub, 2, [test_reading]),
                    frame(platform, hub, 3, [alarm, panic]),
                    frame(platform, hub, 4, [routine, applied]),  # routine again: a duplicate record
                ]
            )
    assert [alarms.get_nowait().kind for _ in range(alarms.qsize())] == [RecordKind.ALARM, RecordKind.PANIC]
    assert hooked == [("hub-a", [RecordKind.MEASUREMENT, RecordKind.DOWN_APPLIED], [applied.record_id.hex()])]
    assert [m for m in caplog.messages if "installation-test" in m] == [
        f"platform: installation-test measurement {test_reading.record_id.hex()} from hub-a stored (test data, not an"
        " alarm)"
    ]
    assert core.stats.records_stored == 5
    assert core.stats.records_duplicate == 1
