"""Hub failover between NATS nodes, on real processes (issue 15 item 3): a 3-node TLS cluster as
`carehub platform broker-config --nats-node --tls-dir` writes it, a `carehub platform run` JetStream worker, and a
hub whose config lists the three nodes' MQTT listeners (``[broker] urls``, one CA, one password). The node the hub is
connected to is SIGKILLed mid-run: the hub goes on through another node over TLS, and every reading reaches the
platform exactly once."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from nats_server import NatsNode, nats_server_path
from test_platform_supervision import enroll, spawn, stop, wait_ingesting

from community.brokerconf import TlsListener
from community.brokerconf_nats import NatsNode as NodeSpec
from community.brokerconf_nats import write_nats_config
from community.samples import T0, bp_record
from community.storage import SqliteStorage
from community.tls import SiteAuthority
from gateway.config import parse_config
from gateway.outbox import Lane, Outbox, OutboxItem, open_outbox
from gateway.uplink import Uplink, UplinkSettings
from gateway.uplink_settings import NODE_CURSOR, NodeStatus
from gateway.wire import HubWire
from protocols.keys import HubIdentity, PlatformIdentity, save_platform_identity
from protocols.record import Record
from sim.broker import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(nats_server_path() is None, reason="nats-server is not installed (scripts/test installs it)"),
]

BOUND = 120  # seconds: an upper bound for awaiting events, never a sleep
PASSWORDS = {"platform": "pw-worker", "hub-a": "pw-hub-a"}


class _WrittenNode(NatsNode):
    """tests/nats_server's restartable process (start, SIGKILL, log) running a config broker-config wrote."""

    def __init__(self, workdir: Path, name: str, text: str) -> None:
        super().__init__(workdir, name)
        self._text = text

    def config_text(self) -> str:
        return self._text


def _rid(record: Record) -> str:
    return record.record_id.hex()


async def _put(ob: Outbox, wire: HubWire, records: list[Record]) -> None:
    seqs = await ob.allocate_seqs(len(records))
    await ob.put_many(
        [
            OutboxItem(seq, wire.seal(seq, [rec], T0), Lane.ROUTINE, rec.kind.value, (_rid(rec),), 0.0)
            for seq, rec in zip(seqs, records, strict=True)
        ]
    )


async def _until_rows(up: Uplink, ob: Outbox, most: int) -> None:
    """Return once the outbox holds at most ``most`` rows (each ack wakes the check)."""
    async with asyncio.timeout(BOUND):
        while True:
            up.acked.clear()
            if (await ob.stats()).rows <= most:
                return
            await up.acked.wait()


async def test_the_hub_fails_over_to_another_node_and_nothing_is_lost_or_doubled(tmp_path: Path) -> None:
    ca = SiteAuthority.create(tmp_path / "ca", "carehub test district")
    cert = ca.issue_broker(["127.0.0.1"])
    specs = [NodeSpec(f"n{i}", "127.0.0.1", free_port(), free_port(), free_port()) for i in (1, 2, 3)]
    files = write_nats_config(
        tmp_path / "conf",
        ["hub-a"],
        specs,
        passwords=PASSWORDS,
        tls=TlsListener(ca.cert_file, cert.cert_file, cert.key_file),
        store_dir=tmp_path / "js",
    )
    servers = [
        _WrittenNode(
            tmp_path / s.name,
            s.name,
            files.configs[s.name].read_text().replace(f'"{tmp_path / "js"}"', f'"{tmp_path / s.name / "js"}"'),
        )
        for s in specs
    ]
    platform, hub = PlatformIdentity.generate(), HubIdentity.generate("hub-a")
    wire = HubWire(hub, platform.public)
    save_platform_identity(tmp_path / "platform.key", platform)
    await enroll(tmp_path / "platform.db", hub)
    # The worker starts on n2 (it may reach all three): the node killed below is the hub's, not the worker's.
    nats_urls = ", ".join(f'"nats://127.0.0.1:{specs[i].client_port}"' for i in (1, 2, 0))
    worker_toml = tmp_path / "worker.toml"
    worker_toml.write_text(
        f'[nats]\nservers = [{nats_urls}]\nusername = "platform"\npassword = "{PASSWORDS["platform"]}"\n'
        f'ca_file = "{ca.cert_file}"\nreplicas = 3\nack_wait_s = 3\nbatch = 8\n'
        '[broker]\nclient_id = "carehub-platform-1"\n'
        '[storage]\ndatabase = "platform.db"\n[keys]\nidentity = "platform.key"\n'
    )
    # The hub's own config, as `carehub provision init` writes it from a bundle naming the three nodes.
    mqtt_urls = ", ".join(f'"mqtts://127.0.0.1:{s.mqtt_port}"' for s in specs)
    hub_toml = tmp_path / "hub.toml"
    hub_toml.write_text(
        '[hub]\nid = "hub-a"\nkey_file = "hub.key"\ntimezone = "UTC"\n[platform]\npublic_key_file = "platform.pub"\n'
        '[storage]\npath = "outbox.db"\n'
        f'[broker]\nurls = [{mqtt_urls}]\nusername = "hub-a"\npassword = "{PASSWORDS["hub-a"]}"\n'
        f'ca_file = "{ca.cert_file}"\nreconnect_max_s = 2\n'
    )
    config = parse_config(hub_toml.read_text(), hub_toml)
    settings = dataclasses.replace(UplinkSettings.from_config(config), frame_max_envelopes=8, ack_timeout=5.0)
    assert [str(n) for n in settings.nodes] == [f"127.0.0.1:{s.mqtt_port}" for s in specs]
    first, later = [bp_record("hub-a", n) for n in range(300)], [bp_record("hub-a", n) for n in range(300, 400)]

    try:
        await asyncio.gather(*(s.start() for s in servers))
        worker = await spawn(["platform", "run", "-c", str(worker_toml)])
        try:
            await wait_ingesting(worker)
            async with open_outbox(tmp_path / "outbox.db") as ob:
                await _put(ob, wire, first)
                async with Uplink(settings, ob, wire) as up:
                    async with asyncio.timeout(BOUND):
                        await up.connected.wait()
                    assert up.node == f"127.0.0.1:{specs[0].mqtt_port}"  # the first node listed
                    await _until_rows(up, ob, 200)  # a third delivered through n1
                    await servers[0].kill()  # SIGKILL the node the hub is on, mid-run
                    await _put(ob, wire, later)  # readings taken while the hub fails over
                    await _until_rows(up, ob, 0)
                    assert up.node in {f"127.0.0.1:{s.mqtt_port}" for s in specs[1:]}
                    assert up.metrics.connects >= 2
                    status = NodeStatus.from_cursor(await ob.get_cursor(NODE_CURSOR))
                    assert status is not None
                    assert (status.node, status.lost_at) == (up.node, None)
        finally:
            await stop(worker)
    finally:
        await asyncio.gather(*(s.stop() for s in servers))
    async with SqliteStorage(tmp_path / "platform.db") as storage:
        ids = [r.record_id for r in await storage.readings("hub-a")]
    assert len(ids) == len(set(ids))  # nothing doubled
    assert sorted(ids) == sorted(_rid(r) for r in first + later)  # nothing lost
