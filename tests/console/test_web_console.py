"""The console's web application on aiohttp's test server, real SQLite and real argon2 (issue 18 items 1-5).

The ingest worker is replaced by a recorder behind the same ``DownSender`` interface here; the real worker, broker
and hub are in ``test_web_browser_console.py``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import argon2
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from community.console.accounts import AccountStore, Role, Sharing, SharingLevel, accounts_path
from community.console.audit import SqliteAuditStore, audit_path, verify
from community.console.client import ConsoleClient, ConsoleClientError
from community.console.web import Console, ConsoleSettings, console_app, open_console
from community.down_types import DownState, QueuedDown
from community.samples import T0, alarm_record, bp_record
from community.storage import EnvelopeToStore, SqliteStorage, StoredReading
from protocols.messages import AlarmAcknowledgement, DownMessage, ThresholdUpdate
from protocols.record import AlarmBody, Record

FAST = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # the tests' cost, not production's
NOW = T0 + _dt.timedelta(minutes=10)
Client = TestClient[web.Request, web.Application]


class Recorder:
    """Records what the console asks the worker to send down (the DownSender interface)."""

    def __init__(self) -> None:
        self.sent: list[DownMessage] = []

    async def ack_alarm(
        self,
        hub: str,
        alarm_id: str,
        caregiver: str,
        at: _dt.datetime,
        *,
        role: str | None = None,
        note: str | None = None,
    ) -> DownMessage:
        msg = DownMessage(hub, len(self.sent) + 1, at, AlarmAcknowledgement(alarm_id, caregiver, at, role, note))
        self.sent.append(msg)
        return msg

    async def update_thresholds(
        self, hub: str, resident_id: str, thresholds: Mapping[str, float | None]
    ) -> DownMessage:
        msg = DownMessage(hub, len(self.sent) + 1, NOW, ThresholdUpdate(resident_id, dict(thresholds)))
        self.sent.append(msg)
        return msg


def other_alarm(hub: str, alarm_id: str, seq: int, resident: str) -> Record:
    base = alarm_record(hub, alarm_id, seq)
    assert isinstance(base.body, AlarmBody)
    return dataclasses.replace(base, body=dataclasses.replace(base.body, resident_id=resident))


def seed_accounts(database: Path) -> None:
    with AccountStore(accounts_path(database), lambda: NOW, FAST) as accounts:
        accounts.add("dr-li", Role.DOCTOR, "correct horse", "Dr Li")
        accounts.add("dr-chen", Role.DOCTOR, "battery staple", "Dr Chen")
        accounts.add("mei", Role.FAMILY, "daughter pass", "Mei Lin")
        accounts.set_sharing(Sharing("resident-1", "dr-li", SharingLevel.FAMILY, "mei"))
        accounts.set_sharing(Sharing("resident-2", "dr-chen", SharingLevel.OWN_DOCTOR))


class Setup:
    def __init__(
        self, client: Client, console: Console, sender: Recorder, storage: SqliteStorage, database: Path
    ) -> None:
        self.client, self.console, self.sender, self.storage, self.database = client, console, sender, storage, database
        self.origin = str(client.make_url("/")).rstrip("/")

    async def login(self, user: str, password: str) -> str:
        r = await self.post("/login", {"username": user, "password": password})
        assert r.status == 303, await r.text()
        return await self.csrf()

    async def csrf(self) -> str:
        text = await (await self.client.get("/")).text()
        return text.split('name="csrf" value="', 1)[1].split('"', 1)[0]

    async def post(self, path: str, data: dict[str, str], origin: str | None = None) -> ClientResponse:
        headers = {"Origin": origin or self.origin}
        return await self.client.post(path, data=data, headers=headers, allow_redirects=False)

    def audit(self) -> list[tuple[str, str, str | None]]:
        with SqliteAuditStore(audit_path(self.database)) as store:
            entries = list(store.entries())
            verify(entries)
        return [(e.actor, e.action, e.resident) for e in entries]


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    database = tmp_path / "platform.db"
    seed_accounts(database)
    sender = Recorder()
    async with SqliteStorage(database) as storage:
        rows = (
            bp_record("hub-a", 1),
            alarm_record("hub-a", "alarm-1", 2),
            other_alarm("hub-b", "alarm-2", 3, "resident-2"),
        )
        await storage.store_batch(
            [
                EnvelopeToStore(r.hub_id, i + 1, (StoredReading.from_record(r, i + 1, 1.7e9),))
                for i, r in enumerate(rows)
            ]
        )
        settings = ConsoleSettings(escalate_after=_dt.timedelta(minutes=5), refresh_s=3600)
        async with (
            open_console(storage, sender, database, clock=lambda: NOW, settings=settings) as console,
            TestClient(TestServer(console_app(console))) as client,
        ):
            yield Setup(client, console, sender, storage, database)


async def test_pages_need_a_login_and_a_wrong_password_is_refused_and_audited(setup: Setup) -> None:
    r = await setup.client.get("/", allow_redirects=False)
    assert (r.status, r.headers["Location"]) == (303, "/login")
    assert (await setup.client.get("/events")).status == 401
    assert (await setup.client.get("/fhir/metadata")).status == 401
    r = await setup.post("/login", {"username": "dr-li", "password": "wrong horse"})
    assert r.status == 401
    assert ("dr-li", "login.failed", None) in setup.audit()
    r = await setup.post("/login", {"username": "dr-li", "password": "correct horse"}, origin="http://evil.example")
    assert r.status == 403
    r = await setup.post("/login", {"username": "dr-li", "password": "correct horse"})
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("carehub_session=")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie


async def test_queue_shows_own_residents_alarms_most_urgent_and_escalated(setup: Setup) -> None:
    await setup.login("dr-li", "correct horse")
    page = await (await setup.client.get("/")).text()
    assert 'data-alarm="alarm-1"' in page
    assert "alarm-2" not in page  # dr-chen's resident
    assert "escalated" in page  # critical, unanswered for 10 min > 5 min
    assert "190" in page  # the triggering value
    assert ("dr-li", "view.queue", "resident-1") in setup.audit()


async def test_ack_needs_csrf_and_origin_then_reaches_the_sender_and_is_audited(setup: Setup) -> None:
    csrf = await setup.login("dr-li", "correct horse")
    assert (await setup.post("/alarms/hub-a/alarm-1/ack", {})).status == 403
    assert (await setup.post("/alarms/hub-a/alarm-1/ack", {"csrf": csrf}, origin="http://evil.example")).status == 403
    assert setup.sender.sent == []
    r = await setup.post("/alarms/hub-a/alarm-1/ack", {"csrf": csrf})
    assert r.status == 303
    [sent] = setup.sender.sent
    assert sent.hub_id == "hub-a"
    assert sent.body == AlarmAcknowledgement("alarm-1", "Dr Li", NOW, "doctor", None)
    assert ("dr-li", "alarm.ack", "resident-1") in setup.audit()
    page = await (await setup.client.get("/")).text()
    assert "acknowledgement sent by Dr Li" in page
    assert "escalation" not in page  # answered: no longer escalated
    assert (await setup.post("/alarms/hub-a/alarm-1/note", {"csrf": csrf, "text": "called daughter"})).status == 303
    assert "called daughter" in await (await setup.client.get("/")).text()
    assert (await setup.post("/alarms/hub-a/alarm-1/resolve", {"csrf": csrf})).status == 303
    assert 'data-alarm="alarm-1"' not in await (await setup.client.get("/")).text()
    actions = [a for _, a, _ in setup.audit()]
    assert {"alarm.note", "alarm.resolve"} <= set(actions)


async def test_a_doctor_without_access_gets_403_and_the_attempt_is_audited(setup: Setup) -> None:
    csrf = await setup.login("dr-li", "correct horse")
    r = await setup.post("/alarms/hub-b/alarm-2/ack", {"csrf": csrf})
    assert r.status == 403
    assert setup.sender.sent == []
    assert (await setup.client.get("/residents/resident-2")).status == 403
    denied = [e for e in setup.audit() if e[1] == "access.denied"]
    assert denied == [("dr-li", "access.denied", "resident-2"), ("dr-li", "access.denied", "resident-2")]
    residents = await (await setup.client.get("/residents")).text()
    assert "resident-1" in residents
    assert "resident-2" not in residents


async def test_live_queue_streams_a_new_alarm_without_a_reload(setup: Setup) -> None:
    await setup.login("dr-chen", "battery staple")
    r = await setup.client.get("/events")
    assert r.headers["Content-Type"] == "text/event-stream"

    async def event() -> str:
        lines = []
        while (line := (await r.content.readline()).decode()) != "\n":
            lines.append(line)
        return "".join(lines)

    first = await event()
    assert first.startswith("event: queue")
    assert "alarm-2" in first
    assert "alarm-3" not in first
    row = StoredReading.from_record(other_alarm("hub-b", "alarm-3", 9, "resident-2"), 9, 1.7e9)
    await setup.storage.store_batch([EnvelopeToStore("hub-b", 9, (row,))])
    setup.console.feed.publish()
    assert "alarm-3" in await event()
    r.close()


async def test_residents_trends_and_a_threshold_change_confirmed_by_the_hub(setup: Setup) -> None:
    csrf = await setup.login("dr-li", "correct horse")
    residents = await (await setup.client.get("/residents")).text()
    assert 'class="badge red"' in residents  # an open critical alarm
    page = await (await setup.client.get("/residents/resident-1?days=30")).text()
    assert page.count("<svg") == 6
    r = await setup.post(
        "/residents/resident-1/thresholds", {"csrf": csrf, "key": "bp.systolic.critical_high", "value": "175"}
    )
    assert r.status == 303
    [sent] = setup.sender.sent
    assert sent.body == ThresholdUpdate("resident-1", {"bp.systolic.critical_high": 175.0})
    assert "not yet confirmed by the hub" in await (await setup.client.get("/residents/resident-1")).text()
    # The down-box's record of the message, then the hub's confirmation (what DownBox.confirm stores).
    await setup.storage.queue_down(QueuedDown("hub-a", sent.seq, "thresholds", b"x", DownState.QUEUED, NOW))
    await setup.storage.confirm_down("hub-a", sent.seq, DownState.APPLIED, at=NOW + _dt.timedelta(seconds=5))
    page = await (await setup.client.get("/residents/resident-1")).text()
    assert "applied by the hub at" in page
    assert "175" in page
    bad = await setup.post("/residents/resident-1/thresholds", {"csrf": csrf, "key": "bp.nonsense", "value": "1"})
    assert bad.status == 400
    assert ("dr-li", "thresholds.change", "resident-1") in setup.audit()
    assert ("dr-li", "view.resident", "resident-1") in setup.audit()


async def test_language_from_accept_language_and_the_toggle(setup: Setup) -> None:
    r = await setup.client.get("/login", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"})
    assert "登录" in await r.text()
    r = await setup.client.get("/login?lang=en", headers={"Accept-Language": "zh-CN"})
    assert "Log in" in await r.text()
    r = await setup.client.get("/login", headers={"Accept-Language": "zh-CN"})
    assert "Log in" in await r.text()  # the toggle's cookie wins over the header


async def test_fhir_is_mounted_and_reading_it_is_audited(setup: Setup) -> None:
    await setup.login("dr-li", "correct horse")
    # Unfiltered by sharing, so refused while one stored resident (resident-2) is not shared with dr-li.
    assert (await setup.client.get("/fhir/Observation")).status == 403
    assert ("dr-li", "access.denied", None) in setup.audit()
    setup.console.accounts.set_sharing(Sharing("resident-2", "dr-li", SharingLevel.OWN_DOCTOR))
    r = await setup.client.get("/fhir/metadata")
    assert r.status == 200
    assert (await r.json())["resourceType"] == "CapabilityStatement"
    assert ("dr-li", "fhir.read", None) in setup.audit()


async def test_the_console_client_logs_in_lists_and_acknowledges_through_the_api(setup: Setup) -> None:
    async with ConsoleClient(setup.origin) as bad:
        with pytest.raises(ConsoleClientError, match="401"):
            await bad.login("dr-li", "wrong horse")
    async with ConsoleClient(setup.origin) as doctor:
        await doctor.login("dr-li", "correct horse")
        [alarm] = await doctor.alarms()
        assert (alarm.hub, alarm.alarm_id, alarm.resident, alarm.tier) == ("hub-a", "alarm-1", "resident-1", "critical")
        assert alarm.escalated
        await doctor.ack("hub-a", "alarm-1")
        with pytest.raises(ConsoleClientError, match="403"):
            await doctor.ack("hub-b", "alarm-2")
    [sent] = setup.sender.sent
    assert sent.body == AlarmAcknowledgement("alarm-1", "Dr Li", NOW, "doctor", None)
    assert ("dr-li", "access.denied", "resident-2") in setup.audit()


async def test_a_family_member_sees_the_status_only(setup: Setup) -> None:
    await setup.login("mei", "daughter pass")
    queue = await (await setup.client.get("/")).text()
    assert 'id="empty"' in queue  # no alarms, no readings
    residents = await (await setup.client.get("/residents")).text()
    assert "Status only" in residents
    assert 'class="badge red"' in residents
    assert "mmHg" not in residents  # no vitals
    assert (await setup.client.get("/residents/resident-1")).status == 403
    assert ("mei", "view.residents", "resident-1") in setup.audit()
    assert ("mei", "access.denied", "resident-1") in setup.audit()
