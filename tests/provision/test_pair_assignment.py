"""`carehub provision pair` checks what the installer typed before any radio work (issue 16.4): a malformed address,
a device of another resident without --move, a User ID outside the Bluetooth SIG's 0..254; --move gives a device to
another resident. Over the simulated radio."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hub_files import new_hub
from provision_kit import CUFF, Home
from typer.testing import CliRunner, Result

from carehub.provision_cli import app
from gateway.config import load_config
from gateway.provision.steps import set_resident


async def pair(config: Path, *args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, app, ["pair", *args, "--config", str(config), "--timeout", "5"])


async def test_pair_checks_the_assignment_first_and_moves_a_device_only_when_told(tmp_path: Path, home: Home) -> None:
    paths = new_hub(tmp_path, link=home.link)
    set_resident(paths, "r2", name="Li Wei")
    home.cuff.wake()
    first = await pair(paths.config, CUFF, "--resident", "r1", "--kind", "blood_pressure", "--user", "0")
    assert first.exit_code == 0, first.output
    assert first.output.rstrip().endswith("; 1 device now")
    assert [(d.resident, d.user_id) for d in load_config(paths.config).devices] == [("r1", 0)]

    refused = await pair(paths.config, CUFF, "--resident", "r2", "--kind", "blood_pressure")
    assert refused.exit_code == 2
    assert f"{CUFF} is paired for resident 'r1', not 'r2'" in refused.output
    assert "--move" in refused.output
    assert "refused to pair" not in refused.output  # no radio work was done
    assert [d.resident for d in load_config(paths.config).devices] == ["r1"]

    moved = await pair(paths.config, CUFF, "--resident", "r2", "--kind", "blood_pressure", "--move")
    assert moved.exit_code == 0, moved.output
    assert moved.output.rstrip().endswith("; 1 device now")
    assert [d.resident for d in load_config(paths.config).devices] == ["r2"]


async def test_typing_errors_end_pair_at_once_with_status_2(tmp_path: Path, relay_link: str) -> None:
    # Nothing advertises on this link: a check done after the radio would say "nothing is advertising" instead.
    paths = new_hub(tmp_path, link=relay_link)
    for args, says in [
        (["C0:00:00:00:00:0"], "is not a Bluetooth address"),
        (["not-an-address"], "is not a Bluetooth address"),
        ([CUFF, "--user", "255"], "user 255 is not a meter User ID"),
        ([CUFF, "--user", "-1"], "user -1 is not a meter User ID"),
        ([CUFF, "--pendant-key", "00"], "--pendant-key is not 32 bytes of hex"),
    ]:
        result = await pair(paths.config, *args, "--resident", "r1")
        assert result.exit_code == 2, (args, result.output)
        assert says in result.output
        assert "nothing is advertising" not in result.output
    unknown = await pair(paths.config, CUFF, "--resident", "r9")
    assert unknown.exit_code == 2
    assert "nothing is advertising" not in unknown.output
    assert load_config(paths.config).devices == ()
