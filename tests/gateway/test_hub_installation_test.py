"""Issue 16 item 2 in the running hub (``open_gateway`` without BLE, a real outbox; the harness of
``test_hub_records``): while ``Hub.installation_test`` is set, a crisis-level cuff reading raises no alarm and a
pendant press or check-in is no call for help (no siren, no voice, no fallback, even when the press cannot be
stored), yet each is recorded, marked, and the press confirmed once stored. The same inputs outside the test are
judged as ever."""

from __future__ import annotations

from datetime import timedelta

from test_hub_records import CUFF, NOW, PENDANT, PENDANT_KEY, FullDisk, Home, device, run_in_home

from gateway.app import Gateway
from gateway.events import PendantFrame, Reading
from gateway.feedback import RecordingFeedback
from protocols.datetime_ import DateTime
from protocols.gatt import BloodPressureMeasurement
from protocols.ieee11073 import MderFloat
from protocols.pendant import ConfirmFrame, PendantEvent, PendantEventType
from protocols.record import AlarmBody, MeasurementBody, PanicBody

CALL_CUES = {"siren", "panic_help_called"}


def crisis(minute: int) -> bytes:
    at = NOW + timedelta(minutes=minute)
    stamp = DateTime(at.year, at.month, at.day, at.hour, at.minute, at.second)
    return bytes(BloodPressureMeasurement(MderFloat(190), MderFloat(125), MderFloat(147), timestamp=stamp))


def frame(event: PendantEventType, counter: int) -> bytes:
    return bytes(PendantEvent(event, counter, 80, 100).sign(PENDANT, PENDANT_KEY))


def feedback_of(gw: Gateway) -> RecordingFeedback:
    feedback = gw.feedback
    assert isinstance(feedback, RecordingFeedback)
    return feedback


def test_under_test_nothing_is_judged_or_called_and_everything_is_recorded_marked() -> None:
    async def scenario(home: Home) -> None:
        async with home.running() as gw:
            gw.hub.installation_test = True
            cuff, pendant = device(gw, CUFF), device(gw, PENDANT)
            await gw.hub.store_readings([Reading(cuff, BloodPressureMeasurement.UUID, crisis(1), NOW)])
            confirm = await gw.hub.pendant_frame(PendantFrame(pendant, frame(PendantEventType.PRESS, 1)))
            assert confirm is not None
            assert ConfirmFrame.from_bytes(confirm).counter == 1
            assert await gw.hub.pendant_frame(PendantFrame(pendant, frame(PendantEventType.CHECKIN, 2))) is not None
            assert not CALL_CUES & set(feedback_of(gw).messages())
            assert gw.hub.open_alarms() == ()
            assert gw.hub.panic_calls() == []
            records = await home.records(gw)
            assert not [r for r in records if isinstance(r.body, AlarmBody)]
            marked = [r for r in records if isinstance(r.body, MeasurementBody | PanicBody)]
            assert sorted(type(r.body).__name__ for r in marked) == ["MeasurementBody", "PanicBody", "PanicBody"]
            assert all(r.installation_test for r in marked)

            # The test is over: the same kind of reading is the resident's and is judged.
            gw.hub.installation_test = False
            await gw.hub.store_readings([Reading(cuff, BloodPressureMeasurement.UUID, crisis(2), NOW)])
            records = await home.records(gw)
            assert [r for r in records if isinstance(r.body, AlarmBody)]
            assert gw.hub.open_alarms() != ()

    run_in_home(scenario)


def test_a_test_press_that_cannot_be_stored_calls_nobody() -> None:
    async def scenario(home: Home) -> None:
        async with home.running() as gw:
            gw.hub.installation_test = True
            disk = FullDisk(gw)
            pendant = device(gw, PENDANT)
            assert await gw.hub.pendant_frame(PendantFrame(pendant, frame(PendantEventType.PRESS, 1))) is None
            assert gw.hub.counters.fallback_notifications == 0
            assert not CALL_CUES & set(feedback_of(gw).messages())
            disk.full = False
            assert await gw.hub.pendant_frame(PendantFrame(pendant, frame(PendantEventType.PRESS, 1))) is not None
            presses = [r for r in await home.records(gw) if isinstance(r.body, PanicBody)]
            assert len(presses) == 1
            assert presses[0].installation_test
            assert presses[0].body.alarm_id is None  # type: ignore[union-attr]

    run_in_home(scenario)
