"""`carehub provision pair` with a meter that shows a 6-digit PIN (issue 14 item 3), through the real entry point over
the simulated radio's relay: ``--passkey`` bonds it and saves it; a wrong PIN or none is one line, a non-zero exit,
nothing saved and no bond kept; a PIN that is not six digits is refused before the radio is used (exit 2); on a
terminal the installer is asked for the PIN when the meter asks."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
from pathlib import Path

import pytest
from clirun import CAREHUB, carehub, environment, one_error_line
from hub_files import awake_on, bonded_peers, new_hub, passkey_cuff

from gateway.config import DeviceKind, load_config
from gateway.provision.files import HubPaths

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BOUND = 60.0  # an upper bound on awaited events, never a sleep
CUFF = "C0:00:00:00:63:01"
PIN = 519_370


async def _pair(paths: HubPaths, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["provision", "pair", CUFF, "--resident", "r1", "--kind", "blood_pressure", "--timeout", "20"]
    return await asyncio.to_thread(carehub, *args, *extra, "--config", paths.config)


async def test_the_pin_given_bonds_the_meter_and_saves_it(tmp_path: Path, relay_link: str) -> None:
    paths = new_hub(tmp_path, relay_link)
    cuff = passkey_cuff(CUFF, PIN)
    async with awake_on(relay_link, cuff):
        result = await _pair(paths, "--passkey", f"{PIN:06d}")
    assert result.returncode == 0, result.stderr
    assert f"paired {CUFF} (blood_pressure" in result.stdout
    assert cuff.shown == [PIN]
    assert [(d.address, d.kind) for d in load_config(paths.config).devices] == [(CUFF, DeviceKind.BLOOD_PRESSURE)]
    assert len(bonded_peers(paths)) == 1


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (("--passkey", f"{PIN + 1:06d}"), f"error: {CUFF} refused the PIN {PIN + 1:06d}. Fix: type the 6 digits"),
        ((), f"error: {CUFF} shows a 6-digit PIN and asked for it, but none was given. Fix: pair again with --passkey"),
    ],
    ids=["wrong", "none"],
)
async def test_a_wrong_or_missing_pin_is_one_line_and_nothing_is_kept(
    tmp_path: Path, relay_link: str, extra: tuple[str, ...], words: str
) -> None:
    paths = new_hub(tmp_path, relay_link)
    async with awake_on(relay_link, passkey_cuff(CUFF, PIN)):
        result = await _pair(paths, *extra)  # standard input is not a terminal: nobody to ask
    assert result.returncode == 1, result.stderr
    assert one_error_line(result).startswith(words)
    assert "nothing was saved" in result.stderr
    assert load_config(paths.config).devices == ()
    assert bonded_peers(paths) == []


def test_a_pin_that_is_not_six_digits_is_refused_before_the_radio(tmp_path: Path) -> None:
    paths = new_hub(tmp_path, "tcp:127.0.0.1:9")  # nothing listens there: the radio must not be reached
    for bad in ("12345", "1234567", "12a456"):
        result = carehub(
            "provision", "pair", CUFF, "--resident", "r1", "--passkey", bad, "--config", paths.config
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        line = one_error_line(result)
        assert line.startswith("error: --passkey: the PIN must be the 6 digits the meter shows"), line


async def test_on_a_terminal_the_installer_is_asked_for_the_pin(tmp_path: Path, relay_link: str) -> None:
    paths = new_hub(tmp_path, relay_link)
    master, slave = pty.openpty()
    args = ["provision", "pair", CUFF, "--resident", "r1", "--timeout", "20", "--config", str(paths.config)]
    cuff = passkey_cuff(CUFF, PIN)
    try:
        async with awake_on(relay_link, cuff):
            process = await asyncio.create_subprocess_exec(
                *CAREHUB,
                *args,
                stdin=slave,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=environment(),
            )
            assert process.stderr is not None
            prompt = b""
            async with asyncio.timeout(BOUND):
                while b"type it" not in prompt:  # the prompt appears once the meter asks
                    chunk = await process.stderr.read(200)
                    assert chunk, f"carehub ended before asking: {prompt!r}"
                    prompt += chunk
            os.write(master, f"{PIN:06d}\n".encode())
            async with asyncio.timeout(BOUND):
                stdout, stderr = await process.communicate()
    finally:
        os.close(master)
        os.close(slave)
    assert process.returncode == 0, (prompt + stderr).decode()
    assert f"{CUFF} shows a 6-digit PIN; type it" in prompt.decode()
    assert f"paired {CUFF}" in stdout.decode()
    assert cuff.shown == [PIN]
    assert [d.address for d in load_config(paths.config).devices] == [CUFF]
