"""A district's parts wired as docs/district.md says, on one machine (issue 15 items 3, 8, 10): the NATS node config
that `carehub platform broker-config --nats-node --tls-dir` writes, a real nats-server running it, a real
`carehub platform run` worker connecting with TLS and its own credentials (`[nats] ca_file`), and a hub on the TLS
MQTT listener with its password: its frame is stored and acked."""

from __future__ import annotations

from pathlib import Path

import aiomqtt
import pytest
from nats_server import nats_server_path
from nats_server import running_configs as running
from test_platform_supervision import enroll, frame, next_ack, spawn, stop, wait_ingesting

from community.brokerconf import TlsListener
from community.brokerconf_nats import NatsNode, write_nats_config
from community.config import load_platform_config
from community.samples import bp_record
from community.tls import SiteAuthority
from gateway.wire import HubWire
from protocols.keys import HubIdentity, PlatformIdentity, save_platform_identity
from sim.broker import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(nats_server_path() is None, reason="nats-server is not installed (scripts/test installs it)"),
]
PASSWORDS = {"platform": "worker-secret", "hub-a": "hub-secret"}


def platform_toml(tmp_path: Path, node: NatsNode, ca: Path) -> Path:
    cfg = tmp_path / "platform.toml"
    cfg.write_text(
        f'[nats]\nservers = ["nats://127.0.0.1:{node.client_port}"]\nusername = "platform"\n'
        f'password = "{PASSWORDS["platform"]}"\nca_file = "{ca}"\nbatch = 16\n'
        '[storage]\ndatabase = "platform.db"\n[keys]\nidentity = "keys/platform.key"\n'
    )
    return cfg


async def test_a_tls_node_a_worker_and_a_hub_as_the_district_guide_wires_them(tmp_path: Path) -> None:
    ca = SiteAuthority.create(tmp_path / "tls", "district CA")
    cert = ca.issue_broker(["127.0.0.1"])
    node = NatsNode("n1", "127.0.0.1", free_port(), free_port(), free_port())
    files = write_nats_config(
        tmp_path / "nats",
        ["hub-a"],
        [node],
        passwords=PASSWORDS,
        tls=TlsListener(ca.cert_file, cert.cert_file, cert.key_file),
        store_dir=tmp_path / "js",
    )
    platform, hub = PlatformIdentity.generate(), HubIdentity.generate("hub-a")
    (tmp_path / "keys").mkdir()
    save_platform_identity(tmp_path / "keys" / "platform.key", platform)
    cfg = platform_toml(tmp_path, node, ca.cert_file)
    nats = load_platform_config(cfg).nats
    assert nats is not None
    assert nats.ca_file == ca.cert_file
    await enroll(tmp_path / "platform.db", hub)
    async with running([files.configs["n1"]]):
        proc = await spawn(["platform", "run", "-c", str(cfg)])
        try:
            await wait_ingesting(proc)
            wire = HubWire(hub, platform.public)
            tls = aiomqtt.TLSParameters(ca_certs=str(ca.cert_file))
            async with aiomqtt.Client(
                "127.0.0.1", node.mqtt_port, username="hub-a", password=PASSWORDS["hub-a"], tls_params=tls
            ) as client:
                await client.subscribe("carehub/v1/hub-a/ack", qos=1)
                await client.publish("carehub/v1/hub-a/up", frame(wire, 1, [bp_record("hub-a", 1)]), qos=1)
                assert (await next_ack(client, wire)).stored == (1,)
        finally:
            await stop(proc)


def test_a_missing_ca_file_is_a_config_error(tmp_path: Path) -> None:
    node = NatsNode("n1", "127.0.0.1", 4222, 6222, 8883)
    cfg = platform_toml(tmp_path, node, tmp_path / "nope.pem")
    (tmp_path / "keys").mkdir()
    with pytest.raises(ValueError, match="ca_file"):
        load_platform_config(cfg)
