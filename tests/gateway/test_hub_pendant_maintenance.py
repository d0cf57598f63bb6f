"""The hub tells the platform when a pendant needs a new key (docs/protocol.md §9.6) and does not flood the outbox
with the battery level every pendant event carries (issue 19.5). Through the real gateway and its outbox."""

from __future__ import annotations

from test_hub_records import PENDANT, PENDANT_KEY, Home, device, run_in_home

from gateway.core.pendant_link import RekeyNeed
from gateway.events import PendantFrame
from protocols.pendant import REKEY_DUE_AT, ConfirmFrame, PendantEvent, PendantEventType
from protocols.record import DeviceStatusBody, Record


def event_frame(counter: int, kind: PendantEventType = PendantEventType.HEARTBEAT, battery: int | None = 80) -> bytes:
    return bytes(PendantEvent(kind, counter, battery, 100).sign(PENDANT, PENDANT_KEY))


def notices(records: list[Record]) -> list[str | None]:
    return [
        r.body.detail
        for r in records
        if isinstance(r.body, DeviceStatusBody)
        and r.body.detail is not None
        and r.body.detail.startswith("maintenance:")
    ]


def test_an_accepted_rekey_event_is_confirmed_and_reaches_the_platform_as_a_maintenance_notice() -> None:
    async def scenario(home: Home) -> None:
        async with home.running() as gw:
            pendant = device(gw, PENDANT)
            assert await gw.hub.pendant_frame(PendantFrame(pendant, event_frame(1))) is not None
            assert notices(await home.records(gw)) == []
            rekey = bytes(PendantEvent.rekey().sign(PENDANT, PENDANT_KEY))
            confirm = await gw.hub.pendant_frame(PendantFrame(pendant, rekey))
            assert confirm is not None
            assert ConfirmFrame.from_bytes(confirm).counter == PendantEvent.rekey().counter
            assert await gw.hub.pendant_frame(PendantFrame(pendant, rekey)) is not None  # a repeat: nothing new
            assert notices(await home.records(gw)) == [RekeyNeed.EXHAUSTED.notice]

    run_in_home(scenario)


def test_a_pendant_reaching_the_rekey_mark_raises_the_notice_once() -> None:
    async def scenario(home: Home) -> None:
        async with home.running() as gw:
            pendant = device(gw, PENDANT)
            for counter in (REKEY_DUE_AT - 1, REKEY_DUE_AT, REKEY_DUE_AT + 1):
                assert await gw.hub.pendant_frame(PendantFrame(pendant, event_frame(counter))) is not None
            assert notices(await home.records(gw)) == [RekeyNeed.DUE.notice]

    run_in_home(scenario)


def test_a_thousand_events_with_the_same_battery_add_one_battery_record() -> None:
    async def scenario(home: Home) -> None:
        async with home.running() as gw:
            pendant = device(gw, PENDANT)
            for counter in range(1, 1001):
                assert await gw.hub.pendant_frame(PendantFrame(pendant, event_frame(counter))) is not None
            assert await gw.hub.pendant_frame(PendantFrame(pendant, event_frame(1001, battery=79))) is not None
            assert await gw.hub.pendant_frame(PendantFrame(pendant, event_frame(1002, battery=79))) is not None
            records = await home.records(gw)
            levels = [r.body.battery for r in records if isinstance(r.body, DeviceStatusBody)]
            assert levels == [80, 79]
            assert len(records) <= 4  # O(1) rows for 1,002 heartbeats (battery records, nothing per event)
        async with home.running() as gw:
            # After a restart the first level is recorded again (the hub does not persist it).
            assert await gw.hub.pendant_frame(PendantFrame(device(gw, PENDANT), event_frame(1003, battery=79)))
            levels = [r.body.battery for r in await home.records(gw) if isinstance(r.body, DeviceStatusBody)]
            assert levels == [80, 79, 79]

    run_in_home(scenario)
