"""`carehub provision pair --user N --consent-code C` with a multi-user UDS scale (issue 14 item 6), through the real
entry point over the simulated radio's relay: the right code is tried on the scale and saved with the user index; a
wrong code is one line, exit 1, nothing saved; a code without a user, or outside 0..9999, is refused before the
radio is used (exit 2)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from clirun import carehub, one_error_line
from relay_process import running_relay

import sim.ble
from gateway.config import DeviceKind, load_config
from gateway.provision.files import HubPaths
from gateway.provision.steps import init_hub, set_resident
from protocols.gatt.uds import UcpOpCode, UcpResponse, UcpResult
from protocols.keys import PlatformIdentity
from sim.clock import ManualClock
from sim.devices.options import DeviceOptions
from sim.devices.uds_scale import UdsScale

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BOUND = 60.0  # an upper bound on awaited events, never a sleep
SCALE = "C0:00:00:00:64:01"


@pytest.fixture
async def relay() -> AsyncIterator[str]:
    """``python -m sim.ble.relay --port 0``: its ``tcp:`` link, reachable from the carehub process."""
    async with running_relay(BOUND) as link:
        yield link


@contextlib.asynccontextmanager
async def family_scale(link: str) -> AsyncIterator[UdsScale]:
    options = DeviceOptions(id="scale", address=SCALE, name="Family scale", advertise_seconds=3600)
    scale = UdsScale(options, ManualClock(datetime(2024, 3, 4, 7, 0, tzinfo=UTC)), users={1: 1234, 2: 4321})
    async with sim.ble.open_peripheral_device(link, SCALE, "Family scale") as radio, scale.attach(radio):
        scale.wake()
        yield scale


def _hub(tmp_path: Path, link: str) -> HubPaths:
    paths = HubPaths.for_config(tmp_path / "hub" / "hub.toml")
    init_hub(
        paths,
        hub_id="hub-0001",
        platform=PlatformIdentity.generate().public,
        broker_url="mqtt://127.0.0.1:9",
        username=None,
        password=None,
        link=link,
    )
    set_resident(paths, "r1", name="Wang Fang")
    return paths


async def _pair(paths: HubPaths, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["provision", "pair", SCALE, "--resident", "r1", "--kind", "scale", "--timeout", "20"]
    return await asyncio.to_thread(carehub, *args, *extra, "--config", paths.config)


async def test_the_right_consent_code_is_tried_and_saved(tmp_path: Path, relay: str) -> None:
    paths = _hub(tmp_path, relay)
    async with family_scale(relay) as scale:
        result = await _pair(paths, "--user", "1", "--consent-code", "1234")
    assert result.returncode == 0, result.stderr
    assert f"paired {SCALE} (scale" in result.stdout
    assert scale.answers == [UcpResponse(UcpOpCode.CONSENT, UcpResult.SUCCESS)]
    (device,) = load_config(paths.config).devices
    assert (device.kind, device.user_id, device.consent_code) == (DeviceKind.SCALE, 1, 1234)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (("--user", "1", "--consent-code", "4321"), f"error: {SCALE} refused the consent code for user 1 (user not "),
        (("--user", "3", "--consent-code", "1234"), f"error: {SCALE} refused the consent code for user 3 (invalid "),
    ],
    ids=["wrong-code", "no-such-user"],
)
async def test_a_refused_consent_is_one_line_and_nothing_is_saved(
    tmp_path: Path, relay: str, extra: tuple[str, ...], words: str
) -> None:
    paths = _hub(tmp_path, relay)
    async with family_scale(relay):
        result = await _pair(paths, *extra)
    assert result.returncode == 1, result.stderr
    assert one_error_line(result).startswith(words)
    assert "nothing was saved" in result.stderr
    assert load_config(paths.config).devices == ()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (("--consent-code", "1234"), "error: a consent code belongs to one user of the scale"),
        (("--user", "1", "--consent-code", "10000"), "error: consent code 10000 is not 0 to 9999"),
        (("--user", "255", "--consent-code", "1"), "error: user 255"),
    ],
)
def test_a_bad_consent_code_is_refused_before_the_radio(tmp_path: Path, extra: tuple[str, ...], words: str) -> None:
    paths = _hub(tmp_path, "tcp:127.0.0.1:9")  # nothing listens there: the radio must not be reached
    result = carehub("provision", "pair", SCALE, "--resident", "r1", *extra, "--config", paths.config)
    assert result.returncode == 2, result.stderr
    assert one_error_line(result).startswith(words)
