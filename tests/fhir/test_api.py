"""The read-only FHIR API on aiohttp's test server (127.0.0.1) over a real SQLite platform database: searchset
Bundles with paging links, Observation search by patient, code and date, reads, OperationOutcome on bad input, and the
app mounted under /fhir as the console mounts it."""

from __future__ import annotations

import datetime as _dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from analytics_data import store
from fhir_data import T0, Day, stored, validate
from yarl import URL

from community.fhir.api import FHIR_JSON, fhir_app
from community.fhir.mapping import resource_id
from community.storage import EnvelopeToStore, SqliteStorage

PATIENT = resource_id("pat", "hub-wang", "mrs-wang")


def _day() -> Day:
    day = Day()
    day.every_meter(0)
    day.every_meter(30)
    day.panic(90, "panic-1", answered_after=None)
    return day


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    await store(tmp_path / "platform.db", [_day()])
    return tmp_path / "platform.db"


@pytest.fixture
async def client(db: Path) -> AsyncIterator[TestClient[Any, Any]]:
    async with SqliteStorage(db) as storage, TestClient(TestServer(fhir_app(storage), host="127.0.0.1")) as c:
        yield c


async def _get(client: TestClient[Any, Any], url: str, status: int = 200) -> dict[str, Any]:
    response = await client.get(url)
    assert response.status == status, await response.text()
    assert response.content_type == FHIR_JSON
    body: dict[str, Any] = await response.json()
    validate(body)
    return body


def _ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


async def test_observation_search_by_patient_code_and_date(client):
    everything = await _get(client, f"/Observation?patient=Patient/{PATIENT}")
    assert everything["type"] == "searchset"
    assert everything["total"] == 12
    assert _ids(await _get(client, f"/Observation?patient={PATIENT}")) == _ids(everything)
    bp = await _get(client, "/Observation?code=http://loinc.org|85354-9")
    assert bp["total"] == 2
    assert all(e["resource"]["code"]["coding"][0]["code"] == "85354-9" for e in bp["entry"])
    either = await _get(client, "/Observation?code=urn:iso:std:iso:11073:10101|150456,8310-5")
    assert either["total"] == 4  # two oximeter and two thermometer readings
    assert (await _get(client, "/Observation?code=http://snomed.info/sct|8867-4"))["total"] == 0
    later = (T0 + _dt.timedelta(minutes=30)).isoformat()
    since = await _get(client, f"/Observation?date=ge{later.replace('+', '%2B')}")
    assert since["total"] == 6
    window = await _get(client, f"/Observation?date=ge{later.replace('+', '%2B')}&date=lt2026-03-02T01:33:00Z")
    assert window["total"] == 3
    assert (await _get(client, "/Observation?date=2026-03-02"))["total"] == 12
    assert (await _get(client, "/Observation?date=gt2026-03-02"))["total"] == 0
    assert (await _get(client, "/Observation?patient=pat-nobody"))["total"] == 0


async def test_paging_links_walk_every_match_once(client):
    page = await _get(client, "/Observation?_count=5")
    assert len(page["entry"]) == 5
    assert page["total"] == 12
    seen: list[str] = []
    pages = 0
    while True:
        pages += 1
        seen += _ids(page)
        links = {link["relation"]: link["url"] for link in page["link"]}
        if pages > 1:
            assert "previous" in links
        if "next" not in links:
            break
        assert links["next"].startswith(str(client.make_url("/Observation?")))  # absolute links
        page = await _get(client, URL(links["next"]).path_qs)
    assert pages == 3
    assert len(seen) == len(set(seen)) == 12
    assert (await _get(client, "/Observation?_count=0"))["total"] == 12


async def test_read_patients_devices_and_flags(client):
    obs = await _get(client, "/Observation?_count=1")
    first = obs["entry"][0]
    assert first["fullUrl"].endswith(f"/Observation/{first['resource']['id']}")
    assert await _get(client, f"/Observation/{first['resource']['id']}") == first["resource"]
    patients = await _get(client, "/Patient?identifier=urn:carehub:hub:hub-wang:resident|mrs-wang")
    assert _ids(patients) == [PATIENT]
    assert (await _get(client, f"/Patient/{PATIENT}"))["identifier"][0]["value"] == "mrs-wang"
    devices = await _get(client, f"/Device?patient={PATIENT}")
    assert devices["total"] == 7
    flags = await _get(client, f"/Flag?patient={PATIENT}")
    assert [e["resource"]["status"] for e in flags["entry"]] == ["active"]
    assert (await _get(client, "/Communication"))["entry"][0]["resource"]["priority"] == "stat"


async def test_metadata_is_a_capability_statement_of_what_is_served(client):
    statement = await _get(client, "/metadata")
    assert statement["resourceType"] == "CapabilityStatement"
    served = {r["type"]: {p["name"] for p in r["searchParam"]} for r in statement["rest"][0]["resource"]}
    assert served["Observation"] >= {"patient", "code", "date"}
    assert set(served) == {"Patient", "Device", "Observation", "Communication", "Flag"}


@pytest.mark.parametrize(
    ("url", "status", "words"),
    [
        ("/Observation?_count=abc", 400, "_count"),
        ("/Observation?_count=5000", 400, "0..1000"),
        ("/Observation?_offset=-1", 400, "_offset"),
        ("/Observation?date=xx2026-03-02", 400, "prefixes"),
        ("/Observation?date=ge2026-03-02T10:00:00", 400, "time zone"),
        ("/Observation?date=ge2026-13-45", 400, "not a FHIR date"),
        ("/Observation?colour=red", 400, "'colour' is not supported"),
        ("/Patient?code=8867-4", 400, "'code' is not supported"),
        ("/Observation?patient=", 400, "empty"),
        ("/Observation?_format=xml", 400, "JSON"),
        ("/Observation/obs-missing", 404, "not known"),
        ("/Medication", 404, "not served"),
    ],
)
async def test_bad_requests_are_operation_outcomes(client, url, status, words):
    outcome = await _get(client, url, status)
    assert outcome["resourceType"] == "OperationOutcome"
    assert words in outcome["issue"][0]["diagnostics"]


async def test_mounted_under_fhir_links_keep_the_prefix_and_new_records_show(db: Path, tmp_path: Path):
    async with SqliteStorage(db) as storage:
        console = web.Application()
        console.add_subapp("/fhir", fhir_app(storage))
        async with TestClient(TestServer(console, host="127.0.0.1")) as client:
            page = await _get(client, "/fhir/Observation?_count=4")
            links = {link["relation"]: link["url"] for link in page["link"]}
            assert "/fhir/Observation?" in links["next"]
            assert "/fhir/Observation/" in page["entry"][0]["fullUrl"]
            # A second home's records arrive: the next search includes them.
            other = Day(hub="hub-li", resident="mr-li")
            other.every_meter(0)
            await storage.store_batch([EnvelopeToStore("hub-li", 1, tuple(stored(r) for r in other.records))])
            assert (await _get(client, "/fhir/Observation?_count=0"))["total"] == 18


async def test_a_record_that_cannot_be_mapped_is_a_500_operation_outcome(tmp_path: Path):
    day = Day(resident="bad\x0bname")  # a resident id no FHIR string can carry
    day.every_meter(0)
    await store(tmp_path / "platform.db", [day])
    async with (
        SqliteStorage(tmp_path / "platform.db") as storage,
        TestClient(TestServer(fhir_app(storage), host="127.0.0.1")) as client,
    ):
        outcome = await _get(client, "/Observation", 500)
        assert "cannot carry" in outcome["issue"][0]["diagnostics"]
        assert (await _get(client, "/Patient/pat-x", 500))["issue"][0]["code"] == "exception"
