"""carehub's NATS cluster configs (community.brokerconf_nats) on real nats-server processes: hubs may publish and
subscribe only on their own subjects, QoS 1 subscriptions deliver, wrong passwords are refused, and a 3-node cluster
written for TLS forms its routes and carries a hub's frame from one node to a worker on another."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiomqtt
import nats
import nats.errors
import nats.js.errors
import pytest
from nats_server import nats_server_path
from nats_server import running_configs as running

from community.brokerconf import TlsListener
from community.brokerconf_nats import IngestBuffer, NatsNode, parse_version, write_nats_config
from community.tls import SiteAuthority
from sim.broker import free_port

pytestmark = pytest.mark.skipif(nats_server_path() is None, reason="nats-server is not installed (scripts/test)")
BOUND = 30  # seconds: an upper bound for awaiting events, never a sleep
PASSWORDS = {"platform": "pw-platform", "hub-a": "pw-hub-a", "hub-b": "pw-hub-b"}


def node(name: str) -> NatsNode:
    return NatsNode(name, "127.0.0.1", free_port(), free_port(), free_port())


async def test_hubs_are_confined_to_their_own_subjects(tmp_path: Path) -> None:
    n1 = node("n1")
    files = write_nats_config(tmp_path, ["hub-a", "hub-b"], [n1], passwords=PASSWORDS, store_dir=tmp_path / "js")
    assert files.configs["n1"].stat().st_mode & 0o777 == 0o600
    assert files.credentials.stat().st_mode & 0o777 == 0o600
    assert "pw-hub-a" not in files.configs["n1"].read_text()  # only bcrypt hashes in the config
    async with running([files.configs["n1"]]):
        nc = await nats.connect(f"nats://127.0.0.1:{n1.client_port}", user="platform", password=PASSWORDS["platform"])
        try:
            got: list[str] = []
            arrived = asyncio.Event()

            async def cb(msg: nats.aio.msg.Msg) -> None:
                got.append(msg.subject)
                arrived.set()

            await nc.subscribe("carehub.v1.>", cb=cb)
            await nc.flush()
            async with aiomqtt.Client("127.0.0.1", n1.mqtt_port, username="hub-a", password=PASSWORDS["hub-a"]) as hub:
                (granted,) = await hub.subscribe("carehub/v1/hub-a/down", qos=1)
                assert granted.value == 1  # QoS 1 granted ($MQTT.sub.> is allowed)
                (refused,) = await hub.subscribe("carehub/v1/hub-b/down", qos=1)
                assert refused.is_failure
                await hub.publish("carehub/v1/hub-b/up", b"forged", qos=1)  # dropped by the server
                await hub.publish("carehub/v1/hub-a/up", b"frame", qos=1)
                async with asyncio.timeout(BOUND):
                    await arrived.wait()
                # A worker's down-message reaches the hub's QoS 1 subscription.
                await nc.publish("carehub.v1.hub-a.down", b"down")
                async with asyncio.timeout(BOUND):
                    message = await anext(aiter(hub.messages))
                assert bytes(message.payload) == b"down"
            assert got[0] == "carehub.v1.hub-a.up"
            assert "carehub.v1.hub-b.up" not in got
        finally:
            await nc.close()
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", n1.mqtt_port, username="hub-a", password=PASSWORDS["hub-b"]):
                pass


async def test_a_three_node_tls_cluster_forms_and_routes_a_hubs_frame(tmp_path: Path) -> None:
    ca = SiteAuthority.create(tmp_path / "ca", "carehub test district")
    cert = ca.issue_broker(["127.0.0.1", "localhost"])
    tls = TlsListener(ca.cert_file, cert.cert_file, cert.key_file)
    nodes = [node(f"n{i}") for i in (1, 2, 3)]
    files = write_nats_config(tmp_path / "conf", ["hub-a"], nodes, passwords=PASSWORDS, tls=tls, store_dir=tmp_path)
    # Each node its own store (they share a machine here).
    for name, path in files.configs.items():
        path.write_text(path.read_text().replace(f'store_dir: "{tmp_path}"', f'store_dir: "{tmp_path / name}"'))
    context = ssl.create_default_context(cafile=str(ca.cert_file))
    async with running(list(files.configs.values())):
        nc = await nats.connect(
            f"tls://127.0.0.1:{nodes[0].client_port}", user="platform", password=PASSWORDS["platform"], tls=context
        )
        try:
            got = asyncio.Event()

            async def cb(_msg: nats.aio.msg.Msg) -> None:
                got.set()

            await nc.subscribe("carehub.v1.hub-a.up", cb=cb)
            await nc.flush()
            # A new cluster elects its JetStream leader after the routes are up; MQTT QoS 1 needs JetStream (its
            # streams, replicated), so wait until the cluster answers JetStream requests (each try is a request).
            js = nc.jetstream(timeout=2)
            async with asyncio.timeout(BOUND):
                while True:
                    try:
                        await js.account_info()
                        break
                    except (nats.errors.TimeoutError, nats.js.errors.APIError, nats.errors.NoRespondersError):
                        continue
            hub_tls = aiomqtt.TLSParameters(ca_certs=str(ca.cert_file))
            async with aiomqtt.Client(
                "127.0.0.1",
                nodes[2].mqtt_port,
                username="hub-a",
                password=PASSWORDS["hub-a"],
                tls_params=hub_tls,
                timeout=BOUND,  # the first QoS 1 publish creates the MQTT streams on the cluster
            ) as hub:
                await hub.publish("carehub/v1/hub-a/up", b"frame", qos=1)
                async with asyncio.timeout(BOUND):
                    await got.wait()
        finally:
            await nc.close()


@pytest.mark.parametrize(
    ("spec", "problem"),
    [("n1", "expected name=host"), ("n1=h:1:2", "all three ports"), ("n1=h:a:b:c", "numbers"), ("n 1=h", "name")],
)
def test_node_specs_are_checked(spec: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        NatsNode.parse(spec)


def test_a_network_address_without_tls_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must use TLS"):
        write_nats_config(tmp_path, ["hub-a"], [NatsNode("n1", "10.0.0.1")])


def test_broker_config_writes_a_cluster_and_refuses_bad_nodes_in_one_line(tmp_path: Path) -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    def carehub(*args: str) -> subprocess.CompletedProcess[str]:
        program = [sys.executable, "-c", "from carehub.cli import main; main()"]
        return subprocess.run([*program, *args], capture_output=True, text=True, timeout=60, check=False)

    out = tmp_path / "nats"
    nodes = ["--nats-node", "n1=127.0.0.1:4222:6222:8883", "--nats-node", "n2=127.0.0.1:4223:6223:8884"]
    done = carehub("platform", "broker-config", "--out", str(out), "--hub", "hub-a", *nodes)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["credentials.toml", "nats-n1.conf", "nats-n2.conf"]
    assert "nats-route://127.0.0.1:6223" in (out / "nats-n1.conf").read_text()
    for bad in ("n1", "n1=10.0.0.1", "n1=127.0.0.1:1:2"):
        refused = carehub("platform", "broker-config", "--out", str(out), "--hub", "hub-a", "--nats-node", bad)
        assert refused.returncode == 2
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr


def test_the_ingest_buffer_holds_every_hubs_window_within_bounds() -> None:
    assert IngestBuffer.for_hubs(10) == IngestBuffer(10_000, 128 * 1024 * 1024)  # the server's defaults at least
    assert IngestBuffer.for_hubs(10_000) == IngestBuffer(240_000, 10_000 * 64 * 1024)
    assert IngestBuffer.for_hubs(200_000) == IngestBuffer(4_800_000, 4 * 1024 * 1024 * 1024)  # memory bounded
    assert parse_version("nats-server: v2.15.1") == (2, 15, 1)
    assert parse_version("2.11") == (2, 11)
    with pytest.raises(ValueError, match="not a nats-server version"):
        parse_version("latest")


def test_ingest_limits_are_written_only_for_a_server_that_takes_them(tmp_path: Path) -> None:
    """2.11 added the stream ingest limits and 2.15 a stream's limit of 1,000 consumers (each hub's QoS 1 subscriptions
    are two); an older server refuses the keys, and with them the whole config."""
    import subprocess  # noqa: PLC0415

    exe = nats_server_path()
    assert exe is not None
    local = parse_version(subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout)
    n1 = node("n1")
    for version, written in (((2, 15, 1), True), ((2, 11), True), ((2, 9, 10), False), (None, False)):
        out = tmp_path / f"v{version}"
        files = write_nats_config(out, ["hub-a"], [n1], passwords=PASSWORDS, server_version=version, store_dir=out)
        text = files.configs["n1"].read_text()
        assert ("max_buffered_msgs: 10000" in text and "max_buffered_size: 134217728" in text) is written, text
        assert ("default_max_consumers: -1" in text) is (version is not None and version >= (2, 15)), text
        assert "consumer_memory_storage: true" in text
        checked = subprocess.run(
            [exe, "-c", str(files.configs["n1"]), "-t"], check=False, capture_output=True, text=True
        )
        if written and local < (2, 11):
            assert checked.returncode != 0, checked  # what writing them for every server would do
            assert "max_buffered_msgs" in checked.stdout + checked.stderr
        else:
            assert checked.returncode == 0, checked.stdout + checked.stderr


def test_broker_config_takes_the_nodes_version(tmp_path: Path) -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    def carehub(*args: str) -> subprocess.CompletedProcess[str]:
        program = [sys.executable, "-c", "from carehub.cli import main; main()"]
        return subprocess.run([*program, *args], capture_output=True, text=True, timeout=60, check=False)

    common = ("platform", "broker-config", "--out", str(tmp_path), "--hub", "hub-a", "--nats-node", "n1=127.0.0.1")
    done = carehub(*common, "--nats-version", "2.15.1")
    assert done.returncode == 0, done.stderr
    assert "nats-server 2.15.1, with stream ingest limits" in done.stdout
    assert "max_buffered_msgs: 10000" in (tmp_path / "nats-n1.conf").read_text()
    older = carehub(*common, "--nats-version", "2.9.10")
    assert "nats-server 2.9.10, without stream ingest limits" in older.stdout
    assert "max_buffered_msgs" not in (tmp_path / "nats-n1.conf").read_text()
    refused = carehub(*common, "--nats-version", "latest")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert "--nats-version" in refused.stderr
