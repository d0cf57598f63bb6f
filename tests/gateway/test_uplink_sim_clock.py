"""The uplink's resend timer on a clock that runs faster than real time (the demo's compressed day, issue 16 item 9):
an ack deadline is measured on the injected clock, so the resend comes when that clock says so, not after as many
real seconds."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from community.samples import T0, bp_record
from gateway.outbox import Lane, OutboxItem, open_outbox
from gateway.transport import MemoryBroker
from gateway.uplink import Uplink, UplinkSettings
from gateway.wire import HubWire
from protocols.keys import HubIdentity, PlatformIdentity
from protocols.topics import decode_uplink
from sim.clock import CompressedClock

BOUND = 20  # real seconds: an upper bound for awaiting an event, never a sleep
UP = "carehub/v1/hub-a/up"
ALARM = "carehub/v1/hub-a/alarm"  # the priority lane's uplink (protocol revision 6)


async def test_an_unacked_frame_is_resent_when_the_injected_clock_passes_its_deadline(tmp_path: Path) -> None:
    wire = HubWire(HubIdentity.generate("hub-a"), PlatformIdentity.generate().public)
    record = bp_record("hub-a", 1)
    item = OutboxItem(1, wire.seal(1, [record], T0), Lane.ROUTINE, "measurement", (record.record_id.hex(),), 0.0)
    # 60 simulated seconds before the first resend are 60 ms at 1000x; slept as real seconds they outlast BOUND.
    settings = UplinkSettings(hub_id="hub-a", host="127.0.0.1", ack_timeout=60.0, ack_timeout_cap=60.0)
    clock = CompressedClock(datetime(2026, 1, 1, 8, tzinfo=UTC), 1000.0)
    broker = MemoryBroker()
    async with (
        open_outbox(tmp_path / "o.db") as outbox,
        broker.connector().session([UP, ALARM]) as platform,
    ):
        await outbox.put(item)
        async with Uplink(settings, outbox, wire, connector=broker.connector(), clock=clock) as up:
            seen: list[tuple[bytes, ...]] = []
            async with asyncio.timeout(BOUND):
                async for message in platform.incoming():
                    seen.append(decode_uplink(message.payload))
                    if len(seen) == 2:
                        break
            assert seen[0] == seen[1]  # the same envelope, sent again: nobody acked it
            assert up.metrics.resends >= 1
