"""`carehub doctor` shows the home's time zone, the envelopes the platform refused, and fails (exit status 1) on a
device that failed its installation test or a pendant that can no longer call for help (issue 16.5, §9.6)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from hub_files import new_hub
from provision_kit import write_test_report
from typer.testing import CliRunner

from carehub.cli import build_app
from gateway.config import DeviceKind, load_config
from gateway.core.pendant_link import cursor_key
from gateway.outbox import open_outbox
from gateway.provision.doctor import Status, run_doctor
from gateway.provision.files import HubPaths
from gateway.provision.steps import add_device
from gateway.uplink import REFUSED_CURSOR_PREFIX
from protocols.errors import EnvelopeRejection
from protocols.keys import save_pendant_key
from protocols.pendant import COUNTER_CEILING, REKEY_DUE_AT, PendantCounterState, key_id

CUFF = "C0:00:00:00:0D:01"
PENDANT = "C0:00:00:00:0D:0A"


def checks_of(paths: HubPaths) -> dict[str, tuple[Status, str, str]]:
    result = CliRunner().invoke(build_app(), ["doctor", "--config", str(paths.config), "--json", "--timeout", "0.5"])
    checks = {c["check"]: (Status(c["status"]), c["detail"], c["fix"]) for c in json.loads(result.output)}
    failed = any(status is Status.FAIL for status, _, _ in checks.values())
    assert result.exit_code == (1 if failed else 0), result.output
    return checks


async def test_the_zone_is_shown_and_a_guessed_zone_is_a_warning_with_the_configs_note(tmp_path: Path) -> None:
    paths = new_hub(tmp_path)
    lines = [line for line in paths.config.read_text(encoding="utf-8").splitlines() if not line.startswith("timezone")]
    unset = "\n".join(lines) + "\n"
    paths.config.write_text(unset.replace("[hub]\n", '[hub]\ntimezone = "Asia/Shanghai"\n', 1), encoding="utf-8")
    named = {c.name: c for c in await run_doctor(paths.config, broker_limit_s=0.2)}["time zone"]
    assert (named.status, named.detail) == (Status.OK, "Asia/Shanghai (from hub.toml)")
    paths.config.write_text(unset, encoding="utf-8")
    config = load_config(paths.config)
    guessed = {c.name: c for c in await run_doctor(paths.config, broker_limit_s=0.2)}["time zone"]
    assert guessed.status is Status.WARN
    assert config.timezone_note in guessed.detail
    assert config.timezone.key in guessed.detail
    assert "[hub] timezone" in guessed.fix


async def test_envelopes_the_platform_refused_are_counted_per_reason(tmp_path: Path) -> None:
    paths = new_hub(tmp_path)
    clean = {c.name: c for c in await run_doctor(paths.config, broker_limit_s=0.2)}["refused envelopes"]
    assert clean.status is Status.OK
    async with open_outbox(load_config(paths.config).storage_path) as outbox:
        await outbox.set_cursor(REFUSED_CURSOR_PREFIX + EnvelopeRejection.UNKNOWN_HUB.value, 5)
        await outbox.set_cursor(REFUSED_CURSOR_PREFIX + EnvelopeRejection.MALFORMED.value, 1)
    refused = {c.name: c for c in await run_doctor(paths.config, broker_limit_s=0.2)}["refused envelopes"]
    assert refused.status is Status.WARN
    assert refused.detail == "the platform refused 6 envelopes for good: unknown_hub 5, malformed 1"
    assert "carehub provision enroll" in refused.fix


def test_a_device_that_failed_its_installation_test_fails_the_doctor(tmp_path: Path) -> None:
    paths = new_hub(tmp_path)
    add_device(paths, address=CUFF, kind=DeviceKind.BLOOD_PRESSURE, resident="r1")
    write_test_report(
        paths, {"address": CUFF, "ok": False, "detail": "no reading arrived: measure once during the test"}
    )
    status, detail, fix = checks_of(paths)[f"device {CUFF}"]
    assert status is Status.FAIL
    assert "FAILED" in detail
    assert fix == "no reading arrived: measure once during the test"


def test_a_pendant_that_needs_a_new_key_is_shown_and_an_exhausted_one_fails(tmp_path: Path) -> None:
    paths = new_hub(tmp_path)
    key = bytes(range(32))
    key_file = paths.config.parent / "pendant.key"
    save_pendant_key(key_file, PENDANT, key)
    add_device(paths, address=PENDANT, kind=DeviceKind.PENDANT, resident="r1", pendant_key_file=key_file)
    storage = load_config(paths.config).storage_path

    async def store(counter: int) -> None:
        async with open_outbox(storage) as outbox:
            await outbox.set_cursor(cursor_key(PENDANT), bytes(PendantCounterState(key_id(key), counter)))

    asyncio.run(store(REKEY_DUE_AT + 3))
    status, detail, fix = checks_of(paths)[f"device {PENDANT}"]
    assert status is Status.WARN
    assert "needs re-keying" in detail
    assert "new key" in fix
    asyncio.run(store(COUNTER_CEILING))
    status, detail, _ = checks_of(paths)[f"device {PENDANT}"]
    assert status is Status.FAIL
    assert "CANNOT CALL FOR HELP" in detail
