"""The hub's uplink over TLS to a real Mosquitto TLS listener: the broker's certificate is checked against the
configured CA and the broker's address (a certificate for another name, or from another CA, is refused)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from community.ingest import IngestWorker, WorkerSettings
from community.samples import bp_measurement
from community.storage import SqliteStorage
from community.wire import PlatformCodec
from gateway.app import open_gateway
from gateway.ble import Reading
from gateway.clock import ManualClock
from gateway.config import GatewayConfig, parse_config, render_config
from gateway.feedback import RecordingFeedback
from gateway.provision.doctor import check_broker
from gateway.uplink import UplinkSettings, mqtt_client
from protocols.gatt import BloodPressureMeasurement
from protocols.keys import HubIdentity, PlatformIdentity, save_hub_identity, save_platform_public_keys
from sim.broker import MosquittoBroker, free_port, mosquitto_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed (scripts/test installs it)"),
]

HUB = "tls-hub"
METER = "C0:00:00:00:03:01"
NOW = dt.datetime(2026, 11, 30, 10, 0, tzinfo=dt.UTC)
BP_UUID = BloodPressureMeasurement.UUID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


@dataclass(frozen=True)
class Authority:
    """A throwaway certificate authority."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    path: Path

    @classmethod
    def create(cls, directory: Path, name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
            .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        path = directory / f"{name}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(cert, key, path)

    def issue(self, directory: Path, san: x509.GeneralName) -> tuple[Path, Path]:
        """A server certificate for ``san``; returns (certificate, key) files."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("broker"))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
            .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        cert_path, key_path = directory / "broker.pem", directory / "broker.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        return cert_path, key_path


@dataclass
class TlsBroker:
    broker: MosquittoBroker
    tls_port: int


async def _tls_broker(directory: Path, authority: Authority, san: x509.GeneralName) -> TlsBroker:
    cert, key = authority.issue(directory, san)
    tls_port = free_port()
    # The plain listener (the platform's) comes first; these lines add a TLS listener for the hub.
    lines = [f"listener {tls_port} 127.0.0.1", f"cafile {authority.path}", f"certfile {cert}", f"keyfile {key}"]
    return TlsBroker(MosquittoBroker(directory / "broker", extra_lines=lines), tls_port)


def _hub_config(directory: Path, tls_port: int, ca_file: Path) -> GatewayConfig:
    data: dict[str, object] = {
        "hub": {"id": HUB, "key_file": "hub.key"},
        "platform": {"public_key_file": "platform.pub"},
        "broker": {"url": f"mqtts://127.0.0.1:{tls_port}", "ca_file": str(ca_file)},
        "storage": {"path": "outbox.sqlite"},
        "residents": [{"id": "r1", "language": "en"}],
        "devices": [{"address": METER, "kind": "blood_pressure", "resident": "r1"}],
    }
    return parse_config(render_config(data), directory / "hub.toml")


@pytest.fixture
def home(tmp_path: Path) -> tuple[Path, PlatformIdentity, HubIdentity]:
    platform, hub = PlatformIdentity.generate(), HubIdentity.generate(HUB)
    save_platform_public_keys(tmp_path / "platform.pub", platform.public)
    save_hub_identity(tmp_path / "hub.key", hub)
    return tmp_path, platform, hub


async def test_readings_reach_the_platform_over_tls(home: tuple[Path, PlatformIdentity, HubIdentity]) -> None:
    directory, platform, hub = home
    ca = Authority.create(directory, "carehub-test-ca")
    tls = await _tls_broker(directory, ca, x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    config = _hub_config(directory, tls.tls_port, ca.path)
    async with tls.broker as broker, SqliteStorage(directory / "platform.db") as storage:
        await storage.enroll_hub(hub.public)
        async with IngestWorker(WorkerSettings(broker.host, broker.port), storage, PlatformCodec(platform)) as worker:
            await worker.connected.wait()
            assert (await check_broker(config)).status.value == "ok"
            async with open_gateway(config, feedback=RecordingFeedback(), ble=False, clock=ManualClock(NOW)) as gw:
                device = config.devices[0]
                raws = [bytes(bp_measurement(n)) for n in range(5)]
                await asyncio.gather(*(gw.hub.store_readings([Reading(device, BP_UUID, raw, NOW)]) for raw in raws))
                async with asyncio.timeout(30):
                    while (await gw.outbox.stats()).rows:
                        gw.uplink.acked.clear()
                        await gw.uplink.acked.wait()
                assert gw.uplink.metrics.connects == 1
        stored = [r for r in await storage.readings(HUB) if r.kind == "measurement"]
        assert sorted(bytes.fromhex(str(r.body["raw"])) for r in stored) == sorted(raws)


@pytest.mark.parametrize("wrong", ["another CA", "another name"])
async def test_a_broker_certificate_that_does_not_check_out_is_refused(
    home: tuple[Path, PlatformIdentity, HubIdentity], wrong: str
) -> None:
    directory, _, _ = home
    ca = Authority.create(directory, "carehub-test-ca")
    if wrong == "another CA":
        trusted = Authority.create(directory, "someone-else-ca").path
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    else:
        trusted = ca.path
        san = x509.DNSName("broker.elsewhere.example")
    tls = await _tls_broker(directory, ca, san)
    config = _hub_config(directory, tls.tls_port, trusted)
    async with tls.broker:
        check = await check_broker(config)
        assert check.status.value == "fail"
        assert "certificate" in check.detail
        with pytest.raises(aiomqtt.MqttError, match="certificate"):
            async with mqtt_client(UplinkSettings.from_config(config)):  # the client the uplink connects with
                pass
