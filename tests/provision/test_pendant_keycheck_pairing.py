"""Pairing a pendant proves its key (issue 16 item 3, docs/protocol.md §9.7): over the simulated radio, the hub
challenges the simulated pendant through `carehub provision pair`; a mistyped key, a pendant provisioned under
another id, or a pendant paired without its key is refused with one line and nothing is saved."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hub_files import new_hub
from provision_kit import PENDANT, PENDANT_KEY, Home, pendant_pairing
from typer.testing import CliRunner, Result

from carehub.provision_cli import app
from gateway.config import DeviceKind, load_config
from gateway.provision import radio
from gateway.provision.files import HubPaths
from gateway.provision.radio import open_radio
from protocols.keys import load_pendant_key
from sim.devices.options import DeviceOptions
from sim.devices.pendant import Pendant
from sim.devices.pendant_state import Written

WRONG_KEY = bytes(range(1, 33))  # one digit off in every byte: a mistyped card


async def pair(config: Path, *args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, app, ["pair", *args, "--config", str(config), "--timeout", "5"])


def one_error_line(result: Result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error")]
    assert len(errors) == 1, result.output
    return errors[0]


def nothing_saved(paths: HubPaths, address: str) -> None:
    assert load_config(paths.config).devices == ()
    assert not paths.pendant_key(address).exists()


async def test_a_mistyped_pendant_key_is_refused_at_pairing(tmp_path: Path, home: Home) -> None:
    paths = new_hub(tmp_path, link=home.link)
    home.pendant.wake()
    result = await pair(paths.config, PENDANT, *pendant_pairing(WRONG_KEY))
    assert result.exit_code == 1, result.output
    line = one_error_line(result)
    assert "the pendant's key does not match" in line
    assert "mpremote" in line  # how to load the right one
    nothing_saved(paths, PENDANT)
    # the pendant answered a challenge (it was asked), it did not reject the write
    assert not [r for r in home.pendant.rejected if r.characteristic is Written.KEY_CHECK]


async def test_the_right_key_is_proved_and_saved_and_kept_for_pairing_again(tmp_path: Path, home: Home) -> None:
    paths = new_hub(tmp_path, link=home.link)
    home.pendant.wake()
    result = await pair(paths.config, PENDANT, *pendant_pairing(PENDANT_KEY))
    assert result.exit_code == 0, result.output
    assert [(d.address, d.kind) for d in load_config(paths.config).devices] == [(PENDANT, DeviceKind.PENDANT)]
    assert load_pendant_key(paths.pendant_key(PENDANT)) == (PENDANT, PENDANT_KEY)
    # again without --pendant-key: the key the hub keeps is challenged, and proved
    home.pendant.wake()
    again = await pair(paths.config, PENDANT, "--resident", "r1")
    assert again.exit_code == 0, again.output
    # the pendant was re-keyed meanwhile: pairing again with the kept key is refused, the kept key unchanged
    await home.pendant.reprovision(WRONG_KEY)
    home.pendant.wake()
    stale = await pair(paths.config, PENDANT, "--resident", "r1")
    assert "the pendant's key does not match" in one_error_line(stale)
    assert load_pendant_key(paths.pendant_key(PENDANT)) == (PENDANT, PENDANT_KEY)


async def test_a_pendant_is_not_paired_without_its_key(tmp_path: Path, home: Home) -> None:
    paths = new_hub(tmp_path, link=home.link)
    home.pendant.wake()
    for args in ([PENDANT, "--kind", "pendant"], [PENDANT]):  # known as a pendant before or only after bonding
        result = await pair(paths.config, *args, "--resident", "r1")
        assert result.exit_code != 0, result.output
        line = one_error_line(result)
        assert "a pendant is paired with the key loaded into it" in line
        assert "--pendant-key" in line
        assert f"b'{PENDANT}'" in line  # the mpremote line with the id the hub verifies against
        nothing_saved(paths, PENDANT)


async def test_a_pendant_provisioned_under_another_id_is_refused(tmp_path: Path, home: Home) -> None:
    # The old firmware/README.md provisioned ID=pendant-0001; the hub verifies every frame against the address.
    address = "C0:00:00:00:00:0B"
    stray = Pendant(
        DeviceOptions(id="pendant-2", address=address, name="Pendant", key=PENDANT_KEY),
        home.clock,
        pendant_id="pendant-0001",
    )
    await home.attach(stray)
    paths = new_hub(tmp_path, link=home.link)
    stray.wake()
    result = await pair(paths.config, address, *pendant_pairing(PENDANT_KEY))
    assert result.exit_code == 1, result.output
    line = one_error_line(result)
    assert "provisioned with the id 'pendant-0001'" in line
    assert f"b'{address}'" in line  # the mpremote line with the right id
    nothing_saved(paths, address)


async def test_an_answer_whose_indication_is_lost_is_read(
    tmp_path: Path, home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NimBLE refuses a second indication while an Event one is unconfirmed (docs/protocol.md §9.7): the firmware
    # then only sets the value, and the hub reads it once its wait for the indication is over.
    async def no_indication(_answer: bytes) -> None:
        return None

    monkeypatch.setattr(home.pendant, "_indicate_answer", no_indication)
    monkeypatch.setattr(radio, "_ANSWER_WAIT_S", 0.0)
    paths = new_hub(tmp_path, link=home.link)
    home.pendant.wake()
    async with open_radio(home.link, keystore=paths.bonds) as (scanner, client):
        paired = await radio.pair_device(
            PENDANT,
            expect=DeviceKind.PENDANT,
            scanner_backend=scanner,
            client_backend=client,
            give_up_after=5,
            pendant_key=PENDANT_KEY,
        )
        assert paired.key_checked
        home.pendant.wake()
        with pytest.raises(radio.PendantKeyMismatchError, match="the pendant's key does not match"):
            await radio.pair_device(
                PENDANT, scanner_backend=scanner, client_backend=client, give_up_after=5, pendant_key=WRONG_KEY
            )
