"""`carehub doctor` names a multi-user scale that keeps refusing its UDS consent code (issue 14 item 6; the
``consent:<address>`` cursor the BLE sessions keep, `gateway.ble_steps`) with the command that pairs it again with
the right code."""

from __future__ import annotations

import json
from pathlib import Path

from test_radio_doctor import hub

from gateway.ble_steps import consent_cursor_key
from gateway.config import DeviceKind, load_config
from gateway.outbox import open_outbox
from gateway.provision.doctor import Status, run_doctor
from gateway.provision.steps import add_device

SCALE = "C0:00:00:00:0A:52"


async def _device_check(config: Path) -> tuple[Status, str, str]:
    checks = {c.name: c for c in await run_doctor(config, broker_limit_s=0.2)}
    check = checks[f"device {SCALE}"]
    return check.status, check.detail, check.fix


async def test_a_scale_refusing_its_consent_code_fails_its_check_with_the_fix(tmp_path: Path) -> None:
    paths = hub(tmp_path)
    add_device(paths, address=SCALE, kind=DeviceKind.SCALE, resident="r1", user_id=1, consent_code=4321)
    paths.reports.mkdir(parents=True, exist_ok=True)
    report = {"finished_at": "2026-12-03T09:00:00+00:00", "devices": [{"address": SCALE, "ok": True, "battery": 90}]}
    (paths.reports / "latest.json").write_text(json.dumps(report), encoding="utf-8")
    config = load_config(paths.config)
    assert config.devices[0].consent_code == 4321
    async with open_outbox(config.storage_path) as outbox:
        await outbox.set_cursor(consent_cursor_key(SCALE), 2)
    status, detail, fix = await _device_check(paths.config)
    assert status is Status.FAIL
    assert "refused the consent for user 1 2 time(s) in a row (a wrong consent code)" in detail
    assert f"carehub provision pair {SCALE} --resident r1 --kind scale --user 1 --consent-code NNNN" in fix

    async with open_outbox(config.storage_path) as outbox:
        await outbox.set_cursor(consent_cursor_key(SCALE), 0)  # the scale accepted the consent since
    status, detail, _ = await _device_check(paths.config)
    assert status is Status.OK
    assert "consent" not in detail
