"""The installer PIN (one-time, constant-time, rate-limited) and the web API's guard and error answers."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.config import DeviceKind
from gateway.provision.errors import LockedOutError, NotInitialisedError, WrongPinError
from gateway.provision.files import HubPaths
from gateway.provision.pin import PinGate, issue_pin
from gateway.provision.steps import add_device, init_hub, set_resident
from gateway.provision.web import WebSettings, make_app
from protocols.keys import PlatformIdentity


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wrong(pin: str) -> str:
    return "000000" if pin != "000000" else "111111"


def lock_out(gate: PinGate, pin: str, client: str) -> None:
    """Five wrong PINs from ``client``: four are refused as wrong, the fifth locks it out."""
    for _ in range(4):
        with pytest.raises(WrongPinError):
            gate.check(wrong(pin), client)
    with pytest.raises(LockedOutError):
        gate.check(wrong(pin), client)


def test_pin_is_one_time_and_stored_hashed(tmp_path: Path) -> None:
    paths = HubPaths.for_config(tmp_path / "hub.toml")
    pin = issue_pin(paths)
    assert len(pin) == 6
    assert pin.isdigit()
    assert pin not in paths.pin.read_text()
    assert paths.pin.stat().st_mode & 0o077 == 0
    gate = PinGate(paths)
    gate.check(pin)
    with pytest.raises(NotInitialisedError):
        gate.check(pin)


def test_five_wrong_pins_in_a_minute_lock_out_even_the_right_one(tmp_path: Path) -> None:
    paths = HubPaths.for_config(tmp_path / "hub.toml")
    pin = issue_pin(paths)
    clock = FakeClock()
    gate = PinGate(paths, clock=clock)
    for left in (4, 3, 2, 1):
        with pytest.raises(WrongPinError, match="wrong PIN") as info:
            gate.check(wrong(pin))
        assert f"{left} tries left" in info.value.fix
    with pytest.raises(LockedOutError) as locked:
        gate.check(wrong(pin))
    assert locked.value.retry_after_s == 300
    clock.now += 299
    with pytest.raises(LockedOutError):
        gate.check(pin)
    clock.now += 1
    gate.check(pin)


def test_wrong_pins_spread_over_minutes_do_not_lock(tmp_path: Path) -> None:
    paths = HubPaths.for_config(tmp_path / "hub.toml")
    pin = issue_pin(paths)
    clock = FakeClock()
    gate = PinGate(paths, clock=clock)
    for _ in range(8):
        with pytest.raises(WrongPinError):
            gate.check(wrong(pin))
        clock.now += 20  # at most three failures inside any 60 s window
    gate.check(pin)


def test_expired_pin_is_refused(tmp_path: Path) -> None:
    paths = HubPaths.for_config(tmp_path / "hub.toml")
    pin = issue_pin(paths, now=0.0)
    with pytest.raises(NotInitialisedError):
        PinGate(paths).check(pin)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[TestClient, HubPaths, FakeClock]]:
    paths = HubPaths.for_config(tmp_path / "hub" / "hub.toml")
    init_hub(
        paths,
        hub_id="hub-0001",
        platform=PlatformIdentity.generate().public,
        broker_url="mqtt://b",
        username=None,
        password=None,
    )
    set_resident(paths, "r1", name="Wang Fang")
    clock = FakeClock()
    app = make_app(WebSettings(paths), gate=PinGate(paths, clock=clock), radio=(None, None))
    async with TestClient(TestServer(app)) as c:
        yield c, paths, clock


async def test_api_needs_a_session(client) -> None:
    c, _, _ = client
    response = await c.get("/api/state")
    assert response.status == 401
    body = await response.json()
    assert "carehub provision pin" in body["fix"]


async def test_login_rate_limited_then_session_works(client) -> None:
    c, paths, _ = client
    pin = issue_pin(paths)
    for _ in range(4):
        assert (await c.post("/api/login", json={"pin": wrong(pin)})).status == 401
    locked = await c.post("/api/login", json={"pin": wrong(pin)})
    assert locked.status == 429
    assert locked.headers["Retry-After"] == "300"
    assert (await c.post("/api/login", json={"pin": pin})).status == 429


async def test_session_state_and_threshold_typo_answer(client) -> None:
    c, paths, _ = client
    pin = issue_pin(paths)
    login = await c.post("/api/login", json={"pin": pin})
    assert login.status == 200
    assert "HttpOnly" in login.headers["Set-Cookie"]
    assert "SameSite=Strict" in login.headers["Set-Cookie"]
    token = {"X-CSRF-Token": (await login.json())["csrf"]}
    state = await (await c.get("/api/state", headers=token)).json()
    assert state["hub_id"] == "hub-0001"
    assert [r["id"] for r in state["residents"]] == ["r1"]
    before = paths.config.read_bytes()
    bad = await c.post(
        "/api/thresholds", json={"resident": "r1", "set": ["bp.systolic.critcal_high=175"]}, headers=token
    )
    assert bad.status == 400
    body = await bad.json()
    assert body["error"] == "bp.systolic.critcal_high is not a threshold key"
    assert "did you mean bp.systolic.critical_high?" in body["fix"]
    assert paths.config.read_bytes() == before
    good = await c.post(
        "/api/thresholds",
        json={"resident": "r1", "profiles": ["copd"], "set": ["spo2.low.critical=82"]},
        headers=token,
    )
    assert (await good.json())["changed"]["spo2.low.critical"] == 82.0
    report = await c.get("/api/report", headers=token)
    assert report.status == 404


async def test_pair_refuses_a_malformed_address_and_another_residents_device_at_once(client) -> None:
    """Issue 16.4 from the page: with radio=(None, None) any radio use would fail differently, so a 400 naming the
    address proves the check ran first."""
    c, paths, _ = client
    pin = issue_pin(paths)
    login = await c.post("/api/login", json={"pin": pin})
    token = {"X-CSRF-Token": (await login.json())["csrf"]}
    bad = await c.post("/api/pair", json={"address": "hello", "resident": "r1"}, headers=token)
    assert bad.status == 400
    assert (await bad.json())["error"] == "'hello' is not a Bluetooth address"
    set_resident(paths, "r2", name="Li Na")
    add_device(paths, address="C0:00:00:00:00:01", kind=DeviceKind.SCALE, resident="r1")
    taken = await c.post("/api/pair", json={"address": "C0:00:00:00:00:01", "resident": "r2"}, headers=token)
    assert taken.status == 400
    assert "--move" in (await taken.json())["fix"]


async def test_page_has_a_strict_policy_and_no_external_assets(client) -> None:
    c, _, _ = client
    response = await c.get("/")
    text = await response.text()
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "http://" not in text
    assert "https://" not in text
    assert 'name="viewport"' in text


async def test_forged_requests_from_another_origin_are_refused(client) -> None:
    """Issue 17.6: a text/plain form posted from another port of the same host changed a resident's thresholds
    with the session cookie alone (SameSite=Strict still sends it: same site)."""
    c, paths, _ = client
    pin = issue_pin(paths)
    login = await c.post("/api/login", json={"pin": pin})
    token = {"X-CSRF-Token": (await login.json())["csrf"]}
    before = paths.config.read_bytes()
    form = await c.post(
        "/api/thresholds",
        data='{"resident": "r1", "set": ["bp.systolic.critical_high=175"]}',
        headers={"Content-Type": "text/plain", **token},
    )
    assert form.status == 415
    elsewhere = await c.post(
        "/api/thresholds",
        json={"resident": "r1", "set": ["bp.systolic.critical_high=175"]},
        headers={"Origin": "http://127.0.0.1:1", **token},
    )
    assert elsewhere.status == 403
    tokenless = await c.post("/api/thresholds", json={"resident": "r1", "set": ["bp.systolic.critical_high=175"]})
    assert tokenless.status == 403
    assert (await c.get("/api/state")).status == 403
    assert paths.config.read_bytes() == before
    good = await c.post(
        "/api/thresholds", json={"resident": "r1", "set": ["bp.systolic.critical_high=175"]}, headers=token
    )
    assert good.status == 200


def test_a_strangers_wrong_pins_do_not_lock_the_installer_out(tmp_path: Path) -> None:
    """Issue 17.6: the lockout was global, so any LAN device could keep the installer locked out forever."""
    paths = HubPaths.for_config(tmp_path / "hub.toml")
    pin = issue_pin(paths)
    clock = FakeClock()
    gate = PinGate(paths, clock=clock)
    lock_out(gate, pin, "192.168.1.66")
    gate.check(pin, "192.168.1.20")


def test_a_lockout_survives_a_restart_of_the_web_server(tmp_path: Path) -> None:
    """Issue 17.6: the lockout was held in memory, so restarting the page cleared it."""
    paths = HubPaths.for_config(tmp_path / "hub.toml")
    pin = issue_pin(paths)
    clock = FakeClock()
    first = PinGate(paths, clock=clock)
    lock_out(first, pin, "10.0.0.9")
    assert stat.S_IMODE(paths.pin.with_name("pin-lockout").stat().st_mode) == 0o600
    restarted = PinGate(paths, clock=clock)
    clock.now += 100
    with pytest.raises(LockedOutError) as locked:
        restarted.check(pin, "10.0.0.9")
    assert locked.value.retry_after_s == 200
    clock.now -= 10**6  # the wall clock set back a long way: still at most the lockout from now
    with pytest.raises(LockedOutError) as again:
        restarted.check(pin, "10.0.0.9")
    assert again.value.retry_after_s <= 300


def test_too_many_wrong_pins_from_everywhere_revoke_the_pin(tmp_path: Path) -> None:
    """Per-client lockouts alone would let a device that keeps changing its address guess on."""
    paths = HubPaths.for_config(tmp_path / "hub.toml")
    pin = issue_pin(paths)
    gate = PinGate(paths, clock=FakeClock())
    for i in range(19):
        with pytest.raises(WrongPinError):
            gate.check(wrong(pin), f"10.0.1.{i}")
    with pytest.raises(NotInitialisedError, match="revoked"):
        gate.check(wrong(pin), "10.0.1.99")
    with pytest.raises(NotInitialisedError):
        gate.check(pin, "10.0.1.100")
