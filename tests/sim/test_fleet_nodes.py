"""``carehub sim fleet`` over several broker nodes (issue 15 item 3): ``--broker`` given once per node, the hubs
spread over the nodes round-robin (hub n on node n mod N), as a district's hubs are spread over a cluster's MQTT
listeners. The real run uses one Mosquitto with two listeners as the two "nodes" (one broker behind both, so the
platform worker on the first sees every hub); Mosquitto's log says on which listener each connection arrived."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_fleet import carehub

from carehub.bench_platform import platform_worker, write_platform_config
from sim.broker import MosquittoBroker, free_port, mosquitto_available
from sim.fleet import FleetOptions

HUBS = 10


def test_the_processes_are_a_multiple_of_the_nodes(tmp_path: Path) -> None:
    """Each fleet process connects its hubs to one node, so the processes are a multiple of the nodes (at most one
    per hub): hub n, in process n mod K, is then on node n mod N."""
    nodes = ("mqtt://127.0.0.1:1", "mqtt://127.0.0.1:2", "mqtt://127.0.0.1:3")
    options = FleetOptions(config=tmp_path, hubs=HUBS, broker=nodes)
    assert options.brokers == nodes
    assert options.processes_for(3) == 3
    assert FleetOptions(config=tmp_path, hubs=HUBS, processes=4, broker=nodes).processes_for(3) == 6
    assert FleetOptions(config=tmp_path, hubs=2, broker=nodes).processes_for(3) == 2  # one hub per process
    assert FleetOptions(config=tmp_path, hubs=HUBS, broker=nodes[0]).brokers == nodes[:1]
    assert FleetOptions(config=tmp_path, hubs=HUBS).processes_for(1) == 1


def test_a_node_given_twice_fails_in_one_line(tmp_path: Path) -> None:
    config = write_platform_config(tmp_path / "platform", "mqtt://127.0.0.1:1883")
    node = f"mqtt://127.0.0.1:{free_port()}"
    result = carehub("sim", "fleet", "--config", config, "--broker", node, "--broker", node, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "given twice" in lines[0]


@pytest.mark.integration
@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed (scripts/test installs it)")
async def test_the_hubs_are_spread_over_the_nodes_round_robin(tmp_path: Path) -> None:
    second = free_port()
    async with MosquittoBroker(tmp_path / "mosquitto", extra_lines=[f"listener {second} 127.0.0.1"]) as broker:
        nodes = (broker.url, f"mqtt://127.0.0.1:{second}")
        config = write_platform_config(tmp_path / "platform", broker.url)
        async with platform_worker(config):
            result = carehub(
                "sim", "fleet", "--config", config, "--hubs", str(HUBS), "--backlog", "3", "--panics", "1",
                "--broker", nodes[0], "--broker", nodes[1], "--timeout", "120", "--json",
            )  # fmt: skip
        log = broker.log_text()
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["lost"], report["duplicated"], report["unexpected"]) == (0, 0, 0)
    assert report["stored"] == HUBS * 3 + 1
    assert report["processes"] == 3  # two bulk processes, one per node, and the pressing hub's probe process
    assert report["probe_processes"] == 1
    assert report["hubs_per_node"] == [[f"127.0.0.1:{broker.port}", HUBS // 2], [f"127.0.0.1:{second}", HUBS // 2]]
    on_second = re.findall(rf"New connection from \S+ on port {second}\b", log)
    assert len(on_second) >= HUBS // 2  # every hub of the second node connected through it (more after a resend)
