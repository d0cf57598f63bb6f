"""The hub's uplink over TLS to a real Mosquitto TLS listener: the broker's certificate is checked against the
configured CA and the broker's address (a certificate for another name, or from another CA, is refused)."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from community.ingest import IngestWorker, WorkerSettings
from community.samples import bp_measurement
from community.storage import SqliteStorage
from community.tls import SiteAuthority
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


@dataclass
class TlsBroker:
    broker: MosquittoBroker
    tls_port: int


async def _tls_broker(directory: Path, authority: SiteAuthority, name: str) -> TlsBroker:
    """Mosquitto with a TLS listener whose certificate the site CA (`community.tls`) issued for ``name``."""
    issued = authority.issue_broker([name], directory / "broker-cert")
    tls_port = free_port()
    # The plain listener (the platform's) comes first; these lines add a TLS listener for the hub.
    lines = [
        f"listener {tls_port} 127.0.0.1",
        f"cafile {authority.cert_file}",
        f"certfile {issued.cert_file}",
        f"keyfile {issued.key_file}",
    ]
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
    ca = SiteAuthority.create(directory / "ca", "carehub-test-ca")
    tls = await _tls_broker(directory, ca, "127.0.0.1")
    config = _hub_config(directory, tls.tls_port, ca.cert_file)
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
    ca = SiteAuthority.create(directory / "ca", "carehub-test-ca")
    if wrong == "another CA":
        trusted, name = SiteAuthority.create(directory / "other-ca", "someone-else-ca").cert_file, "127.0.0.1"
    else:
        trusted, name = ca.cert_file, "broker.elsewhere.example"
    tls = await _tls_broker(directory, ca, name)
    config = _hub_config(directory, tls.tls_port, trusted)
    async with tls.broker:
        check = await check_broker(config)
        assert check.status.value == "fail"
        assert "certificate" in check.detail
        with pytest.raises(aiomqtt.MqttError, match="certificate"):
            async with mqtt_client(UplinkSettings.from_config(config)):  # the client the uplink connects with
                pass
