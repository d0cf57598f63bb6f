"""The installation report of a hub on a broker cluster (issue 15 item 3) names every node the hub tries and the node
each acknowledgement came through, not only the first node of ``[broker] urls``.

Real parts: the reference platform on Mosquitto (the cluster's live node), a first node nobody listens on (a node that
is down), the carehub radio relay with a simulated cuff, and the hub under test (`open_hub_under_test`) whose uplink
moves from the dead node to the live one.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from provision_kit import BOUND, CUFF, Home, Platform, installation_test_prompting

from gateway.config import DeviceKind, load_config
from gateway.provision.files import HubPaths
from gateway.provision.radio import open_radio, pair_device
from gateway.provision.steps import add_device, init_hub, set_resident
from gateway.runner import summary
from protocols.keys import load_hub_identity


def _dead_port() -> int:
    """A loopback port nobody listens on (bound and released): a cluster node that is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_the_report_lists_the_cluster_and_the_node_that_acknowledged(
    tmp_path: Path, platform: Platform, home: Home
) -> None:
    dead = f"mqtt://127.0.0.1:{_dead_port()}"
    paths = HubPaths.for_config(tmp_path / "hub" / "hub.toml")
    init_hub(
        paths,
        hub_id="hub-0001",
        platform=platform.identity.public,
        broker_url=[dead, platform.broker_url],
        username=None,
        password=None,
        link=home.link,
    )
    set_resident(paths, "r1", name="Wang Fang")
    await platform.storage.enroll_hub(load_hub_identity(paths.hub_key).public, ["r1"])
    home.cuff.wake()
    async with open_radio(home.link, keystore=paths.bonds) as (scanner, client):
        paired = await pair_device(CUFF, scanner_backend=scanner, client_backend=client, give_up_after=BOUND)
        add_device(paths, address=paired.address, kind=DeviceKind.BLOOD_PRESSURE, resident="r1")
        config = load_config(paths.config)
        assert f"broker {dead}, {platform.broker_url}" in summary(config, paths.config)  # `hub run --check`
        test = await installation_test_prompting(config, scanner, client)
        await home.cuff.measure(128, 82)
        async with asyncio.timeout(BOUND * 2):
            report = await test
    assert report.passed
    live = f"{platform.broker.host}:{platform.broker.port}"
    assert report.broker == f"{dead}, {platform.broker_url}"
    (outcome,) = report.devices
    assert outcome.broker_node == live
    assert report.nodes_used() == (live,)
    text = report.to_text()
    assert f"broker: {dead}, {platform.broker_url}" in text
    assert f"acknowledged through broker node: {live}" in text
