"""``carehub platform run`` as a real process on a NATS JetStream node (issue 15 item 3): a ``[nats]`` table in
platform.toml selects the JetStream worker; a hub's frame published on NATS's MQTT listener is stored and acked, an
alarm frame on the hub's alarm topic too (item 4)."""

from __future__ import annotations

from pathlib import Path

import aiomqtt
import pytest
from nats_server import NatsNode, nats_server_path
from test_platform_supervision import enroll, frame, next_ack, spawn, stop, wait_ingesting

from community.samples import alarm_record, bp_record
from community.storage import SqliteStorage
from gateway.wire import HubWire
from protocols.keys import HubIdentity, PlatformIdentity, save_platform_identity

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(nats_server_path() is None, reason="nats-server is not installed (scripts/test installs it)"),
]


def write_config(tmp_path: Path, node: NatsNode, platform: PlatformIdentity) -> Path:
    (tmp_path / "keys").mkdir()
    save_platform_identity(tmp_path / "keys" / "platform.key", platform)
    cfg = tmp_path / "platform.toml"
    cfg.write_text(
        f'[nats]\nservers = ["{node.url}"]\nbatch = 16\n'
        '[storage]\ndatabase = "platform.db"\n'
        '[keys]\nidentity = "keys/platform.key"\n'
    )
    return cfg


async def test_platform_run_with_a_nats_table_stores_and_acks_through_jetstream(tmp_path: Path) -> None:
    platform, hub = PlatformIdentity.generate(), HubIdentity.generate("hub-a")
    async with NatsNode(tmp_path / "nats") as node:
        cfg = write_config(tmp_path, node, platform)
        await enroll(tmp_path / "platform.db", hub)
        proc = await spawn(["platform", "run", "-c", str(cfg)])
        try:
            await wait_ingesting(proc)
            wire = HubWire(hub, platform.public)
            async with aiomqtt.Client(node.host, node.mqtt_port, identifier="carehub-hub-hub-a") as client:
                await client.subscribe("carehub/v1/hub-a/ack", qos=1)
                await client.publish("carehub/v1/hub-a/up", frame(wire, 1, [bp_record("hub-a", 1)]), qos=1)
                assert (await next_ack(client, wire)).stored == (1,)
                alarm = alarm_record("hub-a", "alarm-1", 2)
                await client.publish("carehub/v1/hub-a/alarm", frame(wire, 2, [alarm]), qos=1)
                assert (await next_ack(client, wire)).stored == (2,)
        finally:
            await stop(proc)
    async with SqliteStorage(tmp_path / "platform.db") as storage:
        kinds = sorted(r.kind for r in await storage.readings("hub-a"))
    assert kinds == ["alarm", "measurement"]
