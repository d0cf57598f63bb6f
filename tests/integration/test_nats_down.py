"""The JetStream worker keeps down-messages until the hub confirms them, as the Mosquitto worker does (issue 15
item 7 on the district path): an ack made while the hub is away reaches it through NATS's MQTT listener once it is
back, and the hub's down_applied record marks it applied."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats_server import NatsNode, nats_server_path
from test_down_delivery import confirmation, state_of
from test_nats_ingest import Keys, put_records, uplink_settings, worker_on

from community.down_types import DownState
from community.samples import T0, panic_record
from community.storage import SqliteStorage
from gateway.outbox import Lane, open_outbox
from gateway.uplink import Uplink
from protocols.keys import HubIdentity, PlatformIdentity
from protocols.messages import AlarmAcknowledgement
from protocols.record import DownAppliedBody

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(nats_server_path() is None, reason="nats-server is not installed (scripts/test installs it)"),
]
BOUND = 30  # seconds: an upper bound for awaiting events, never a sleep


async def test_an_ack_made_while_the_hub_is_away_reaches_it_through_nats_and_is_confirmed(tmp_path: Path) -> None:
    keys = Keys(PlatformIdentity.generate(), {"hub-a": HubIdentity.generate("hub-a")})
    wire = keys.hub_wire("hub-a")
    async with (
        NatsNode(tmp_path / "nats") as node,
        SqliteStorage(tmp_path / "platform.db") as storage,
        open_outbox(tmp_path / "ob.db") as ob,
    ):
        await storage.enroll_hub(keys.hubs["hub-a"].public)
        async with worker_on([node.url], storage, keys, down_resend_after_s=0.001, down_sweep_every_s=3600) as worker:
            ack = await worker.ack_alarm("hub-a", "panic-7", "Dr. Li", T0, role="family doctor")
            (row,) = await storage.down_messages("hub-a")
            assert (row.seq, row.state) == (1, DownState.SENT)  # stored, published to nobody (the hub is away)
            async with Uplink(uplink_settings(node, "hub-a"), ob, wire) as up:
                # The hub is back and sends something; the worker resends what the hub has not confirmed.
                await put_records(ob, wire, [panic_record("hub-a", "pendant-1", 7, "panic-7", 1)], Lane.PRIORITY)
                async with asyncio.timeout(BOUND):
                    while True:
                        down = await up.down.get()
                        if down.seq == ack.seq:
                            break
                assert down.body == AlarmAcknowledgement("panic-7", "Dr. Li", T0, "family doctor")
                await put_records(ob, wire, [confirmation(1, 2, DownAppliedBody(1, "alarm_ack"))], Lane.PRIORITY)
                done = await state_of(storage, worker, 1, DownState.APPLIED)  # type: ignore[arg-type]
            assert done.sends >= 2
