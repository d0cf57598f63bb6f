"""A hub enrolled for a broker cluster (issue 15 item 3), through the ``carehub`` entry point and real Mosquitto
processes standing in for the nodes' MQTT listeners: ``platform bundle --broker-url`` once per node writes a version 2
bundle, ``provision init --bundle`` writes ``[broker] urls``, the hub's real uplink connects to the first node and,
when that broker is killed, skips the dead second node and carries on through the third; ``carehub doctor`` checks
every node and says which one the hub is on. (Failover on a real NATS cluster: tests/integration/test_nats_failover.)"""

from __future__ import annotations

import asyncio
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from clirun import carehub, one_error_line

from gateway.config import BrokerNode, load_config
from gateway.outbox import open_outbox
from gateway.uplink import Uplink, UplinkSettings
from gateway.wire import HubWire
from protocols.keys import load_hub_identity, load_platform_identity
from sim.broker import MosquittoBroker, free_port, mosquitto_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed (scripts/test installs it)"),
]
HUB = "hub-nodes-1"
BOUND = 60  # seconds: an upper bound for awaiting events, never a sleep


def _ok(*args: str | Path) -> str:
    result = carehub(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _broker_check(hub_toml: Path) -> dict[str, Any]:
    result = carehub("doctor", "--config", hub_toml, "--json", "--timeout", "5")
    found = {c["check"]: c for c in json.loads(result.stdout)}
    return found["broker"]


def _bundle(tmp_path: Path, *urls: str) -> Path:
    out = tmp_path / "hub.bundle"
    args: list[str | Path] = ["platform", "bundle", "-c", tmp_path / "p" / "platform.toml", "--hub", HUB]
    for url in urls:
        args += ["--broker-url", url]
    _ok(*args, "--password", "pw", "--out", out)
    return out


async def test_bundle_init_failover_and_doctor_for_a_cluster(tmp_path: Path) -> None:
    _ok("platform", "init", "--dir", tmp_path / "p")
    ports = [free_port() for _ in range(3)]
    urls = [f"mqtt://127.0.0.1:{p}" for p in ports]
    bundle = _bundle(tmp_path, *urls)
    fields = json.loads(bundle.read_text())
    assert (fields["carehub_enrollment"], fields["broker_urls"]) == (2, urls)
    hub_toml = tmp_path / "hub" / "hub.toml"
    _ok("provision", "init", "--config", hub_toml, "--bundle", bundle)
    assert tomllib.loads(hub_toml.read_text())["broker"]["urls"] == urls
    config = load_config(hub_toml)
    assert config.broker.nodes == tuple(BrokerNode("127.0.0.1", p) for p in ports)

    first, third = MosquittoBroker(tmp_path / "m1", port=ports[0]), MosquittoBroker(tmp_path / "m3", port=ports[2])
    async with first, third:
        before = _broker_check(hub_toml)
        assert before["status"] == "warn", before  # the second node is down; the hub can use the others
        assert "1 of 3 nodes failing" in before["detail"], before
        assert f"127.0.0.1:{ports[1]}" in before["detail"], before
        assert "has not connected yet" in before["detail"], before

        platform = load_platform_identity(tmp_path / "p" / "keys" / "platform.key")
        wire = HubWire(load_hub_identity(config.hub_key_file), platform.public)
        settings = UplinkSettings.from_config(config)
        async with open_outbox(config.storage_path) as ob, Uplink(settings, ob, wire) as up:
            async with asyncio.timeout(BOUND):
                await up.connected.wait()
            assert up.node == f"127.0.0.1:{ports[0]}"
            on_first = _broker_check(hub_toml)
            assert f"the hub's uplink is connected to 127.0.0.1:{ports[0]}" in on_first["detail"], on_first
            await first.stop()  # the node the hub is on goes away; the next one listed is down too
            async with asyncio.timeout(BOUND):
                await up.disconnected.wait()
                await up.connected.wait()
            assert up.node == f"127.0.0.1:{ports[2]}"
        after = _broker_check(hub_toml)
        assert after["status"] == "warn", after  # two of three down now
        assert f"the hub's uplink is connected to 127.0.0.1:{ports[2]}" in after["detail"], after
    gone = _broker_check(hub_toml)
    assert gone["status"] == "fail", gone


def test_one_url_still_makes_a_version_1_bundle_and_a_url_key(tmp_path: Path) -> None:
    _ok("platform", "init", "--dir", tmp_path / "p")
    bundle = _bundle(tmp_path, "mqtt://127.0.0.1:1883")
    fields = json.loads(bundle.read_text())
    assert (fields["carehub_enrollment"], fields["broker_url"]) == (1, "mqtt://127.0.0.1:1883")
    assert "broker_urls" not in fields
    hub_toml = tmp_path / "hub" / "hub.toml"
    _ok("provision", "init", "--config", hub_toml, "--bundle", bundle)
    broker = tomllib.loads(hub_toml.read_text())["broker"]
    assert (broker["url"], "urls" in broker) == ("mqtt://127.0.0.1:1883", False)


def test_bad_node_lists_are_one_line(tmp_path: Path) -> None:
    _ok("platform", "init", "--dir", tmp_path / "p")
    base: list[str | Path] = ["platform", "bundle", "-c", tmp_path / "p" / "platform.toml", "--hub", HUB]
    mixed = carehub(
        *base, "--broker-url", "mqtt://127.0.0.1:1", "--broker-url", "mqtts://127.0.0.1:2",
        "--password", "pw", "--out", tmp_path / "b.json",
    )  # fmt: skip
    assert mixed.returncode == 2
    assert "same scheme" in one_error_line(mixed)
    twice = carehub(
        *base, "--broker-url", "mqtt://127.0.0.1:1", "--broker-url", "mqtt://127.0.0.1:1",
        "--password", "pw", "--out", tmp_path / "b.json",
    )  # fmt: skip
    assert twice.returncode == 2
    assert "each broker node once" in one_error_line(twice)
    assert not (tmp_path / "b.json").exists()


def test_provision_init_without_a_bundle_takes_a_broker_url_per_node(tmp_path: Path) -> None:
    _ok("platform", "init", "--dir", tmp_path / "p")
    hub_toml = tmp_path / "hub" / "hub.toml"
    urls = ["mqtts://nats1.example:8883", "mqtts://nats2.example:8883"]
    _ok(
        "provision", "init", "--config", hub_toml, "--hub-id", HUB,
        "--platform-keys", tmp_path / "p" / "keys" / "platform.pub",
        "--broker-url", urls[0], "--broker-url", urls[1], "--password", "pw",
    )  # fmt: skip
    assert tomllib.loads(hub_toml.read_text())["broker"]["urls"] == urls
    assert [str(n) for n in load_config(hub_toml).broker.nodes] == ["nats1.example:8883", "nats2.example:8883"]
    mixed = carehub(
        "provision", "init", "--config", tmp_path / "other" / "hub.toml", "--hub-id", HUB,
        "--platform-keys", tmp_path / "p" / "keys" / "platform.pub",
        "--broker-url", urls[0], "--broker-url", "mqtt://127.0.0.1:1883", "--password", "pw",
    )  # fmt: skip
    assert mixed.returncode != 0
    assert "mix mqtt:// and mqtts://" in one_error_line(mixed)
