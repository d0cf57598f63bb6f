"""platform.toml selects the JetStream worker: a [nats] table or [broker] url = "nats://..." (issue 15 item 3)."""

from __future__ import annotations

import pytest

from community.config import PlatformConfigError, load_platform_config
from community.nats_config import NatsConfigError, NatsSettings

KEYS = '[storage]\ndatabase = "p.db"\n[keys]\nidentity = "k"\n'


def load(tmp_path, text: str):
    path = tmp_path / "platform.toml"
    path.write_text(text + KEYS, encoding="utf-8")
    return load_platform_config(path)


def test_a_nats_table_selects_jetstream_without_a_broker_section(tmp_path):
    cfg = load(
        tmp_path,
        '[nats]\nservers = ["nats://10.0.0.1:4222", "nats://10.0.0.2"]\nbatch = 32\nreplicas = 3\nack_wait_s = 10\n',
    )
    assert cfg.nats == NatsSettings(
        servers=("nats://10.0.0.1:4222", "nats://10.0.0.2"), batch=32, replicas=3, ack_wait_s=10
    )
    assert (cfg.host, cfg.port) == ("10.0.0.1", 4222)


def test_a_nats_broker_url_is_the_short_form(tmp_path):
    cfg = load(tmp_path, '[broker]\nurl = "nats://127.0.0.1:4333"\nclient_id = "w7"\n')
    assert cfg.nats is not None
    assert cfg.nats.servers == ("nats://127.0.0.1:4333",)
    assert cfg.nats.client_name == "w7"
    assert cfg.nats.alarm_durable == "ingest-alarm"


def test_a_broker_table_may_only_name_the_worker(tmp_path):
    cfg = load(tmp_path, '[broker]\nclient_id = "w2"\n[nats]\nservers = ["nats://127.0.0.1:4333"]\n')
    assert cfg.nats is not None
    assert (cfg.nats.servers, cfg.nats.client_name, cfg.port) == (("nats://127.0.0.1:4333",), "w2", 4333)


def test_an_mqtt_broker_stays_mosquitto(tmp_path):
    assert load(tmp_path, '[broker]\nurl = "mqtt://127.0.0.1:1883"\n').nats is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('servers = "nats://a"', r"\[nats\] servers must be a list"),
        ("batch = 5", r"\[nats\] servers must be a list"),
        ('servers = ["mqtt://a:1"]', "is not nats://host:port"),
        ('servers = ["nats://a"]\nbatch = 0', "batch and alarm_batch must be 1..1024"),
        ('servers = ["nats://a"]\nbatch = true', r"\[nats\] batch must be int"),
        ('servers = ["nats://a"]\nreplicas = 2', "replicas must be 1, 3 or 5"),
        ('servers = ["nats://a"]\nmax_ack_pending = 8', "max_ack_pending must be at least batch"),
        ('servers = ["nats://a"]\nspeed = 1', r"unknown key\(s\) speed"),
        ('servers = ["nats://a"]\ndurable = "a.b"', "durable 'a.b'"),
    ],
)
def test_bad_nats_settings_are_one_clear_error(tmp_path, table, message):
    with pytest.raises(PlatformConfigError, match=message):
        load(tmp_path, f"[nats]\n{table}\n")


def test_settings_are_validated_when_built_in_code():
    with pytest.raises(NatsConfigError, match="at least one"):
        NatsSettings(servers=())
