"""Down-messages are kept until the hub confirms them (issue 15 item 7), end to end on real Mosquitto: a caregiver's
ack made while the hub is offline reaches it when it comes back, the hub's down_applied / down_refused records mark
the message applied or refused, and `carehub platform down-messages` / `ack-alarm` show and keep them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from test_platform_postgres import carehub
from test_uplink_platform import BOUND, Keys, put_records, uplink_settings

from community.down_types import DownState, QueuedDown
from community.downbox import queue_message
from community.ingest import IngestWorker, WorkerSettings
from community.samples import T0, panic_record
from community.storage import EnvelopeToStore, SqliteStorage, StoredReading
from gateway.outbox import Lane, open_outbox
from gateway.uplink import Uplink
from protocols.keys import HubIdentity, PlatformIdentity, save_platform_identity
from protocols.messages import AlarmAcknowledgement, ThresholdUpdate
from protocols.record import DownAppliedBody, DownRefusal, DownRefusedBody, Record, RecordKind, status_record_id
from sim.broker import MosquittoBroker, free_port, mosquitto_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
]


@pytest.fixture
def keys() -> Keys:
    return Keys(PlatformIdentity.generate(), {"hub-a": HubIdentity.generate("hub-a")})


def confirmation(seq: int, record_seq: int, body: DownAppliedBody | DownRefusedBody) -> Record:
    """The record the hub makes when it applied or refused down-message ``seq`` (gateway.core.downlink)."""
    kind = RecordKind.DOWN_APPLIED if isinstance(body, DownAppliedBody) else RecordKind.DOWN_REFUSED
    return Record(status_record_id("hub-a", kind, seq), "hub-a", record_seq, T0, body)


async def state_of(storage: SqliteStorage, worker: IngestWorker, seq: int, wanted: DownState) -> QueuedDown:
    async with asyncio.timeout(BOUND):
        while True:
            worker.stored.clear()
            (row,) = [d for d in await storage.down_messages("hub-a") if d.seq == seq]
            if row.state is wanted:
                return row
            await worker.stored.wait()


async def test_an_ack_made_while_the_hub_is_offline_reaches_it_and_is_confirmed(
    tmp_path: Path, mosquitto: MosquittoBroker, keys: Keys
) -> None:
    wire = keys.hub_wire("hub-a")
    settings = WorkerSettings(mosquitto.host, mosquitto.port, down_resend_after_s=0.001, down_sweep_every_s=3600)
    async with SqliteStorage(tmp_path / "platform.db") as storage:
        await storage.enroll_hub(keys.hubs["hub-a"].public)
        async with IngestWorker(settings, storage, keys.codec()) as worker, open_outbox(tmp_path / "ob.db") as ob:
            async with asyncio.timeout(BOUND):
                await worker.connected.wait()
            # The hub is offline: the broker has nobody to give these to (the hub's session is clean).
            ack = await worker.ack_alarm("hub-a", "panic-7", "Dr. Li", T0, role="family doctor")
            change = await worker.update_thresholds("hub-a", "nobody", {"spo2.low.warning": 91})
            assert [(d.seq, d.state, d.sends) for d in await storage.down_messages("hub-a")] == [
                (1, DownState.SENT, 1),
                (2, DownState.SENT, 1),
            ]
            # The hub comes back and sends something: the worker publishes what it has not confirmed.
            async with Uplink(uplink_settings(mosquitto), ob, wire) as up:
                await put_records(ob, wire, [panic_record("hub-a", "pendant-1", 7, "panic-7", 1)], Lane.PRIORITY)
                async with asyncio.timeout(BOUND):
                    first, second = await up.down.get(), await up.down.get()
                assert (first.seq, first.body) == (1, AlarmAcknowledgement("panic-7", "Dr. Li", T0, "family doctor"))
                assert (second.seq, second.body) == (2, ThresholdUpdate("nobody", {"spo2.low.warning": 91}))
                assert (first, second) == (ack, change)
                # The hub applied the ack and refused the change (it has no such resident): its records say so.
                applied = confirmation(1, 2, DownAppliedBody(1, "alarm_ack"))
                refused = confirmation(
                    2, 3, DownRefusedBody(2, "thresholds", DownRefusal.UNKNOWN_RESIDENT, "no such resident", "nobody")
                )
                await put_records(ob, wire, [applied, refused], Lane.PRIORITY)
                done = await state_of(storage, worker, 1, DownState.APPLIED)
                no = await state_of(storage, worker, 2, DownState.REFUSED)
            assert done.sends == 2
            assert (no.reason, no.detail) == ("unknown_resident", "no such resident")
            assert await storage.down_messages(open_only=True) == []
            assert worker.downbox.confirmations == 2


async def test_ack_alarm_with_the_broker_down_keeps_the_message_and_lists_it(tmp_path: Path, keys: Keys) -> None:
    (tmp_path / "keys").mkdir()
    save_platform_identity(tmp_path / "keys" / "platform.key", keys.platform)
    cfg = tmp_path / "platform.toml"
    down = free_port()  # nothing listens there: the broker is down
    cfg.write_text(
        f'[broker]\nurl = "mqtt://127.0.0.1:{down}"\n[storage]\ndatabase = "p.db"\n'
        '[keys]\nidentity = "keys/platform.key"\n'
    )
    async with SqliteStorage(tmp_path / "p.db") as storage:
        await storage.enroll_hub(keys.hubs["hub-a"].public)
        alarm = panic_record("hub-a", "pendant-1", 7, "panic-7", 1)
        await storage.store_batch([EnvelopeToStore("hub-a", 1, (StoredReading.from_record(alarm, 1, 0.0),))])
    result = carehub(
        "platform", "ack-alarm", "-c", cfg, "--hub", "hub-a", "--alarm", "panic-7", "--caregiver", "Dr. Li"
    )
    assert result.returncode == 0, result.stderr
    assert "message 1 is stored but not sent yet" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    listed = carehub("platform", "down-messages", "-c", cfg, "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert (row["hub"], row["seq"], row["type"], row["state"], row["sends"]) == ("hub-a", 1, "alarm_ack", "queued", 0)
    text = carehub("platform", "down-messages", "-c", cfg, "--open")
    assert text.stdout.startswith("hub-a 1 alarm_ack queued ")


async def test_a_worker_sweep_sends_what_was_queued_while_the_broker_was_down(
    tmp_path: Path, mosquitto: MosquittoBroker, keys: Keys
) -> None:
    wire = keys.hub_wire("hub-a")
    async with SqliteStorage(tmp_path / "platform.db") as storage:
        await storage.enroll_hub(keys.hubs["hub-a"].public)
        message, _ = await queue_message(
            storage, keys.codec(), "hub-a", AlarmAcknowledgement("panic-7", "Dr. Li", T0), T0
        )
        settings = WorkerSettings(mosquitto.host, mosquitto.port, down_resend_after_s=0.001, down_sweep_every_s=0.05)
        async with (
            open_outbox(tmp_path / "ob.db") as ob,
            Uplink(uplink_settings(mosquitto), ob, wire) as up,
            IngestWorker(settings, storage, keys.codec()) as worker,
        ):
            async with asyncio.timeout(BOUND):
                assert await up.down.get() == message
                while True:  # the hub can have it before the worker counted the publish
                    worker.downbox.published.clear()
                    (row,) = await storage.down_messages("hub-a")
                    if row.state is DownState.SENT:
                        break
                    await worker.downbox.published.wait()
        assert row.sends >= 1
