"""The platform's side of transport security (issue 15 item 8), through the ``carehub`` entry point and a real
Mosquitto: ``platform tls init`` makes the site CA and the broker's certificate, ``broker-config --tls-dir`` adds the
hubs' TLS listener (plaintext stays on loopback), ``bundle --broker-ca`` hands the CA to the hub, and ``provision
init --bundle`` pins it: the hub connects with it, and a hub pinned to another CA is refused."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from clirun import carehub, one_error_line

from community.tls import SiteAuthority
from gateway.config import load_config
from gateway.provision.doctor import check_broker
from sim.broker import MosquittoBroker, free_port, mosquitto_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed (scripts/test installs it)"),
]

HUB = "hub-tls-1"


class ConfiguredBroker(MosquittoBroker):
    """Mosquitto running exactly the config ``carehub platform broker-config`` wrote."""

    def __init__(self, workdir: Path, config: Path, port: int) -> None:
        super().__init__(workdir, port=port)
        self.config = config

    def config_text(self) -> str:
        return self.config.read_text(encoding="utf-8")


def _ok(*args: str | Path) -> str:
    result = carehub(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_tls_init_makes_a_ca_once_and_renews_the_broker_certificate(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    first = _ok("platform", "tls", "init", "--dir", tls, "--name", "broker.example.org", "--name", "192.0.2.7")
    assert "created a site CA" in first
    assert stat.S_IMODE((tls / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tls / "broker.key").stat().st_mode) == 0o600
    ca, broker = (tls / "ca.pem").read_bytes(), (tls / "broker.pem").read_bytes()
    again = _ok("platform", "tls", "init", "--dir", tls, "--name", "broker.example.org")
    assert "kept the site CA" in again
    assert (tls / "ca.pem").read_bytes() == ca  # hubs pin it: never replaced
    assert (tls / "broker.pem").read_bytes() != broker  # renewed
    shown = _ok("platform", "tls", "show", "--dir", tls)
    assert "broker.example.org" in shown
    assert "NOT issued" not in shown


def test_tls_mistakes_are_one_line(tmp_path: Path) -> None:
    bad_name = carehub("platform", "tls", "init", "--dir", tmp_path / "t", "--name", "not a host!")
    assert bad_name.returncode == 2
    assert "neither a host name nor an IP address" in one_error_line(bad_name)
    no_ca = carehub("platform", "tls", "show", "--dir", tmp_path / "none")
    assert no_ca.returncode == 2
    assert "cannot read the CA certificate" in one_error_line(no_ca)
    no_tls = carehub("platform", "broker-config", "--out", tmp_path / "b", "--hub", HUB, "--tls-dir", tmp_path / "x")
    assert no_tls.returncode == 2
    assert "run carehub platform tls init first" in one_error_line(no_tls)


def test_a_bundle_refuses_plain_mqtt_to_another_machine(tmp_path: Path) -> None:
    _ok("platform", "init", "--dir", tmp_path / "p")
    plain = carehub(
        "platform", "bundle", "-c", tmp_path / "p" / "platform.toml", "--hub", HUB,
        "--broker-url", "mqtt://10.1.2.3:1883", "--out", tmp_path / "b.json", "--password", "pw",
    )  # fmt: skip
    assert plain.returncode == 2
    assert "plain mqtt:// only to a loopback broker" in one_error_line(plain)
    assert not (tmp_path / "b.json").exists()


async def test_a_hub_enrolled_with_the_site_ca_connects_and_one_pinned_to_another_ca_is_refused(
    tmp_path: Path,
) -> None:
    platform, tls, conf = tmp_path / "platform", tmp_path / "platform" / "tls", tmp_path / "platform" / "broker"
    _ok("platform", "init", "--dir", platform)
    _ok("platform", "tls", "init", "--dir", tls, "--name", "127.0.0.1")
    port, tls_port = free_port(), free_port()
    _ok(
        "platform", "broker-config", "--out", conf, "--hub", HUB,
        "--port", str(port), "--tls-dir", tls, "--tls-port", str(tls_port),
    )  # fmt: skip
    text = (conf / "mosquitto.conf").read_text()
    assert f"listener {port} 127.0.0.1" in text  # plaintext for the platform's own workers only
    assert f"listener {tls_port} 0.0.0.0" in text
    bundle = tmp_path / "hub.bundle"
    _ok(
        "platform", "bundle", "-c", platform / "platform.toml", "--hub", HUB,
        "--broker-url", f"mqtts://127.0.0.1:{tls_port}", "--credentials", conf / "credentials.toml",
        "--broker-ca", tls / "ca.pem", "--out", bundle,
    )  # fmt: skip
    hub_toml = tmp_path / "hub" / "hub.toml"
    _ok("provision", "init", "--config", hub_toml, "--bundle", bundle)
    config = load_config(hub_toml)
    assert config.broker.ca_file == tmp_path / "hub" / "keys" / "broker-ca.pem"
    assert config.broker.ca_file.read_bytes() == (tls / "ca.pem").read_bytes()

    async with ConfiguredBroker(tmp_path / "run", conf / "mosquitto.conf", port):
        assert (await check_broker(config)).status.value == "ok"
        # Another district's CA (or a broker impersonating this one) is not trusted by the pinned hub.
        stranger = SiteAuthority.create(tmp_path / "stranger", "another site CA")
        config.broker.ca_file.write_bytes(stranger.cert_file.read_bytes())
        refused = await check_broker(config)
        assert refused.status.value == "fail"
        assert "certificate" in refused.detail
