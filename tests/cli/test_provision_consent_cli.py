"""`carehub provision pair --user N --consent-code C` with a multi-user UDS scale (issue 14 item 6), through the real
entry point over the simulated radio's relay: the right code is tried on the scale and saved with the user index; a
wrong code is one line, exit 1, nothing saved; a code without a user, or outside 0..9999, is refused before the
radio is used (exit 2)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from clirun import carehub, one_error_line
from hub_files import awake_on, family_scale, new_hub

from gateway.config import DeviceKind, load_config
from gateway.provision.files import HubPaths
from protocols.gatt.uds import UcpOpCode, UcpResponse, UcpResult

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SCALE = "C0:00:00:00:64:01"


async def _pair(paths: HubPaths, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["provision", "pair", SCALE, "--resident", "r1", "--kind", "scale", "--timeout", "20"]
    return await asyncio.to_thread(carehub, *args, *extra, "--config", paths.config)


async def test_the_right_consent_code_is_tried_and_saved(tmp_path: Path, relay_link: str) -> None:
    paths = new_hub(tmp_path, relay_link)
    scale = family_scale(SCALE)
    async with awake_on(relay_link, scale):
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
    tmp_path: Path, relay_link: str, extra: tuple[str, ...], words: str
) -> None:
    paths = new_hub(tmp_path, relay_link)
    async with awake_on(relay_link, family_scale(SCALE)):
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
    paths = new_hub(tmp_path, "tcp:127.0.0.1:9")  # nothing listens there: the radio must not be reached
    result = carehub("provision", "pair", SCALE, "--resident", "r1", *extra, "--config", paths.config)
    assert result.returncode == 2, result.stderr
    assert one_error_line(result).startswith(words)
