"""broker-config output: $7$ hashes Mosquitto accepts, and an ACL confining each hub to its own topics."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import aiomqtt
import pytest

from community.brokerconf import (
    MAX_PAYLOAD_BYTES,
    MQTT_OVERHEAD_BYTES,
    acl_text,
    hash_password,
    platform_users,
    verify_password,
    write_broker_config,
)
from protocols.topics import MAX_UPLINK_BYTES
from sim.broker import BrokerSecurity, MosquittoBroker, mosquitto_available


def test_hash_round_trip():
    hashed = hash_password("s3cret", salt=b"\x00" * 12)
    assert hashed.startswith("$7$101$AAAAAAAAAAAAAAAA$")
    assert verify_password("s3cret", hashed)
    assert not verify_password("other", hashed)
    assert not verify_password("s3cret", "$6$garbage")


def test_acl_confines_hubs():
    text = acl_text(["hubA", "hubB"], "platform")
    blocks = {b.splitlines()[0]: b.splitlines()[1:] for b in text.split("\n\n") if b.startswith("user")}
    assert blocks["user hubA"] == [
        "topic write carehub/v1/hubA/up",
        "topic read carehub/v1/hubA/ack",
        "topic read carehub/v1/hubA/down",
        "topic write carehub/v1/hubA/alarm",
    ]
    assert "topic read carehub/v1/+/up" in blocks["user platform"]
    assert "topic read carehub/v1/+/alarm" in blocks["user platform"]
    with pytest.raises(ValueError, match="user name"):
        acl_text(["hub A"], "platform")


def test_files_are_private(tmp_path: Path):
    files = write_broker_config(tmp_path, ["hubA"], passwords={"hubA": "pw"})
    assert stat.S_IMODE(files.password_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.credentials.stat().st_mode) == 0o600
    assert files.passwords["hubA"] == "pw"
    assert files.passwords["platform"]
    assert f"acl_file {files.acl_file.resolve()}" in files.config.read_text()


@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed")
async def test_mosquitto_enforces_generated_acl(tmp_path: Path):
    files = write_broker_config(tmp_path / "conf", ["hubA", "hubB"])
    pw = files.passwords
    security = BrokerSecurity(files.password_file, files.acl_file)
    async with MosquittoBroker(tmp_path / "broker", security=security) as broker:
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client(broker.host, broker.port, username="hubA", password="wrong"):  # noqa: S106 - deliberately wrong
                pass
        async with (
            aiomqtt.Client(broker.host, broker.port, username="platform", password=pw["platform"]) as platform,
            aiomqtt.Client(broker.host, broker.port, username="hubA", password=pw["hubA"]) as hub_a,
        ):
            await platform.subscribe("$share/ingest/carehub/v1/+/up", qos=1)
            await hub_a.subscribe("carehub/v1/hubB/ack", qos=1)  # not allowed: never delivered
            await hub_a.subscribe("carehub/v1/hubA/ack", qos=1)
            await hub_a.publish("carehub/v1/hubB/up", b"pretending to be B", qos=1)
            await hub_a.publish("carehub/v1/hubA/up", b"A's own", qos=1)
            async with asyncio.timeout(5):
                message = await anext(aiter(platform.messages))
            # MQTT keeps per-publisher order, so B's topic would have arrived first had the ACL let it through.
            assert (str(message.topic), message.payload) == ("carehub/v1/hubA/up", b"A's own")
            await platform.publish("carehub/v1/hubB/ack", b"for B", qos=1)
            await platform.publish("carehub/v1/hubA/ack", b"for A", qos=1)
            async with asyncio.timeout(5):
                message = await anext(aiter(hub_a.messages))
            assert (str(message.topic), message.payload) == ("carehub/v1/hubA/ack", b"for A")


@pytest.mark.parametrize("port", [0, -1, 65536, 99999])
def test_ports_outside_1_to_65535_are_refused_before_anything_is_written(tmp_path: Path, port: int):
    with pytest.raises(ValueError, match="not a TCP port"):
        write_broker_config(tmp_path / "conf", ["hubA"], port=port)
    assert not (tmp_path / "conf").exists()


def test_config_binds_client_ids_to_users_and_bounds_sizes_by_the_protocol(tmp_path: Path):
    files = write_broker_config(tmp_path, ["hubA"], port=1884)
    lines = files.config.read_text().splitlines()
    assert "use_username_as_clientid true" in lines
    assert f"message_size_limit {MAX_UPLINK_BYTES}" in lines
    assert f"max_packet_size {MAX_UPLINK_BYTES + MQTT_OVERHEAD_BYTES}" in lines
    assert MAX_PAYLOAD_BYTES == MAX_UPLINK_BYTES  # the frame is the largest message; acks and downs are smaller


def test_each_ingest_worker_gets_a_user_of_its_own(tmp_path: Path):
    assert platform_users("platform") == ("platform",)
    assert platform_users("platform", 3) == ("platform-1", "platform-2", "platform-3")
    with pytest.raises(ValueError, match="at least one"):
        platform_users("platform", 0)
    files = write_broker_config(tmp_path, ["hubA"], workers=2)
    assert set(files.passwords) == {"platform-1", "platform-2", "hubA"}
    acl = files.acl_file.read_text()
    for user in ("platform-1", "platform-2"):
        assert f"user {user}\ntopic read carehub/v1/+/up\ntopic write carehub/v1/+/ack" in acl
