"""The whole installer workflow through the CLI, from a blank hub, against the simulated home and the reference
platform: init from a signed bundle, enroll, add a resident, scan, pair a cuff and a pendant, set the doctor's
thresholds, run the installation test through the real gateway, then `carehub doctor`.

CLI commands run on their own event loop (in a worker thread, as `carehub` would in its own process); the home's
devices and the platform run on the test's loop and meet the hub over the radio relay and Mosquitto.
"""

from __future__ import annotations

import asyncio
import functools
import json
import stat
from pathlib import Path

import typer
from provision_kit import BOUND, CUFF, PENDANT, Home, Platform, invoke, ok, pendant_pairing, write_bundle

from carehub.provision_cli import app, doctor_command
from gateway.config import DeviceKind, load_config
from gateway.provision.testrun import REPORT_DOMAIN
from protocols.keys import load_hub_identity, verify_detached

cli = typer.Typer()
cli.add_typer(app, name="provision")
cli.command("doctor")(doctor_command)


run = functools.partial(invoke, cli)


async def test_blank_hub_to_signed_report(tmp_path: Path, platform: Platform, home: Home) -> None:
    config = tmp_path / "hub" / "hub.toml"
    c = ("--config", str(config))
    bundle = write_bundle(platform, tmp_path / "bundle.json", "hub-0001")

    out = ok(
        await run(
            "provision",
            "init",
            *c,
            "--bundle",
            str(bundle),
            "--link",
            home.link,
            "--platform-key-id",
            platform.identity.public.key_id,
        )
    )
    assert "created identity" in out
    assert stat.S_IMODE((config.parent / "keys" / "hub.key").stat().st_mode) == 0o600
    # Idempotent: the same init again keeps the identity.
    assert "kept the existing identity" in ok(await run("provision", "init", *c, "--bundle", str(bundle)))

    ok(await run("provision", "enroll", *c, "--platform-config", str(platform.config)))
    assert "hub-0001" in await platform.storage.hubs()
    ok(await run("provision", "resident", "r1", *c, "--name", "Wang Fang", "--language", "zh"))

    home.cuff.wake()  # "hold the Bluetooth button until P shows"
    home.pendant.wake()
    out = ok(await run("provision", "scan", *c, "--seconds", "1.5"))
    for expected in (CUFF, "blood_pressure", PENDANT, "pendant"):
        assert expected in out

    out = ok(await run("provision", "pair", CUFF, *c, "--resident", "r1", "--kind", "blood_pressure", "--user", "1"))
    assert out.rstrip().endswith("; 1 device now")
    out = ok(await run("provision", "pair", PENDANT, *c, *pendant_pairing()))
    assert out.rstrip().endswith("; 2 devices now")
    cfg = load_config(config)
    assert [(d.address, d.kind, d.user_id) for d in cfg.devices] == [
        (CUFF, DeviceKind.BLOOD_PRESSURE, 1),
        (PENDANT, DeviceKind.PENDANT, None),
    ]

    ok(
        await run(
            "provision",
            "thresholds",
            *c,
            "--resident",
            "r1",
            "--profile",
            "hypertension",
            "--set",
            "bp.systolic.critical_high=175",
        )
    )
    assert dict(load_config(config).resident("r1").thresholds) == {"bp.systolic.critical_high": 175.0}

    test = asyncio.create_task(run("provision", "test", *c, "--installer", "Li Wei", "--timeout", str(BOUND)))
    await home.cuff.measure(128, 82, 70)
    await home.pendant.press()
    out = ok(await test)
    assert "PASSED" in out

    report = json.loads((config.parent / "reports" / "latest.json").read_text())
    assert report["passed"] is True
    assert [d["address"] for d in report["devices"]] == [CUFF, PENDANT]
    assert all(d["ok"] and d["delivery_s"] is not None for d in report["devices"])
    assert report["residents"][0]["differs_from_default"]["bp.systolic.critical_high"] == 175.0
    identity = load_hub_identity(config.parent / "keys" / "hub.key")
    body = {k: v for k, v in report.items() if k != "signature"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    verify_detached(identity.verify_key, REPORT_DOMAIN, canonical, bytes.fromhex(report["signature"]))
    stored = await platform.storage.readings("hub-0001")
    assert any(r.kind == "measurement" and r.device == CUFF for r in stored)

    out = ok(await run("doctor", *c, "--json"))
    checks = {c["check"]: c for c in json.loads(out)}
    assert checks["broker"]["status"] == "ok"
    assert checks["outbox"]["status"] == "ok"
    assert checks[f"device {CUFF}"]["status"] == "ok"
