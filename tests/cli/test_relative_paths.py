"""Issue 13.4: every path argument accepts a relative path.

``carehub doctor -c relative/hub.toml`` crashed with a traceback (``path.as_uri()`` on a relative path) once the hub
had an outbox. Each command that takes a path runs here as a real process in a scratch working directory, with
every path given relative to it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
from clirun import CAREHUB_HUB, carehub

from gateway.outbox import open_outbox

SCENARIO = """\
[home]
name = "relative paths"
date = 2026-11-24
timezone = "UTC"
seed = 1
jitter_seconds = 0
start = "06:00"
end = "06:02"

[[residents]]
id = "r1"
name = "R"
language = "en"

[[devices]]
id = "thermo-1"
kind = "thermometer"
address = "C0:11:00:00:00:06"
name = "ThermoSim"
resident = "r1"
memory_size = 5
advertise_seconds = 60

[[timeline]]
at = "06:01"
device = "thermo-1"
kind = "measure"
celsius = 36.8
"""


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch directory with a platform (``platform/``) and a hub set up from its bundle (``hub/``)."""
    cwd = tmp_path_factory.mktemp("relative")
    ok(carehub("platform", "keygen", "--out", "platform", cwd=cwd))
    (cwd / "platform" / "platform.toml").write_text(
        '[broker]\nurl = "mqtt://127.0.0.1:1"\n[storage]\ndatabase = "platform.db"\n'
        '[keys]\nidentity = "platform.key"\n',
        encoding="utf-8",
    )
    ok(
        carehub(
            "platform", "bundle", "-c", "platform/platform.toml", "--hub", "hub-1",
            "--broker-url", "mqtt://127.0.0.1:1", "--out", "bundle.json", "--password", "pw",
            cwd=cwd,
        )
    )  # fmt: skip
    out = ok(
        carehub("provision", "init", "-c", "hub/hub.toml", "--bundle", "bundle.json", "--link", "local:rel", cwd=cwd)
    )
    assert f"config {cwd / 'hub' / 'hub.toml'} is valid" in out
    return cwd


def test_platform_commands(home: Path) -> None:
    ok(carehub("platform", "broker-config", "--out", "broker", "--hub", "hub-1", cwd=home))
    assert (home / "broker" / "mosquitto.conf").is_file()
    ok(carehub("provision", "init", "-c", "hub2/hub.toml", "--hub-id", "hub-2", "--platform-keys",
               "platform/platform.pub", "--broker-url", "mqtt://127.0.0.1:1", cwd=home))  # fmt: skip
    ok(carehub("platform", "enroll", "-c", "platform/platform.toml", "--key-file", "hub2/keys/hub.pub", cwd=home))
    assert json.loads(ok(carehub("platform", "readings", "-c", "platform/platform.toml", "--json", cwd=home))) == []


def test_provision_steps(home: Path) -> None:
    ok(carehub("provision", "enroll", "-c", "hub/hub.toml", "--platform-config", "platform/platform.toml", cwd=home))
    ok(carehub("provision", "resident", "r1", "-c", "hub/hub.toml", "--name", "Wang Fang", cwd=home))
    ok(carehub("provision", "thresholds", "--resident", "r1", "-c", "hub/hub.toml", "--profile", "hypertension",
               cwd=home))  # fmt: skip
    ok(carehub("provision", "scan", "-c", "hub/hub.toml", "--seconds", "0.2", cwd=home))
    assert "installer PIN" in ok(carehub("provision", "pin", "-c", "hub/hub.toml", cwd=home))
    assert (home / "hub" / "provision" / "pin").is_file()
    assert "enroll" in ok(carehub("provision", "status", "-c", "hub/hub.toml", cwd=home))


def test_doctor_with_an_outbox(home: Path) -> None:
    async def create_outbox() -> None:
        async with open_outbox(home / "hub" / "data" / "outbox.db"):
            pass

    asyncio.run(create_outbox())
    result = carehub("doctor", "-c", "hub/hub.toml", "--json", "--timeout", "1", cwd=home)
    assert "Traceback" not in result.stderr
    assert result.returncode == 1, result.stderr  # the broker at 127.0.0.1:1 is not there; the rest is fine
    checks = {c["check"]: c for c in json.loads(result.stdout)}
    assert checks["outbox"]["status"] == "ok", checks["outbox"]
    assert checks["broker"]["status"] == "fail"
    assert str(home / "hub" / "hub.toml") in checks["config"]["detail"]


def test_daemon_check(home: Path) -> None:
    absolute = home / "hub" / "hub.toml"
    assert ok(carehub("gateway", "run", "-c", "hub/hub.toml", "--check", cwd=home)).startswith(f"ok {absolute}")
    daemon = carehub("-c", "hub/hub.toml", "--check", cwd=home, program=CAREHUB_HUB)
    assert ok(daemon).startswith(f"ok {absolute}: hub hub-1")


def test_sim_home_scenario_and_log(home: Path) -> None:
    (home / "scenario.toml").write_text(SCENARIO, encoding="utf-8")
    out = ok(carehub("sim", "home", "--scenario", "scenario.toml", "--log", "log.jsonl", "--speed", "600", cwd=home))
    assert "1 measurements produced" in out
    [line] = (home / "log.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["device"] == "thermo-1"
