"""The hub daemon's start-up log names every broker node it will try (issue 15 item 3): a hub on a cluster
(``[broker] urls``) said only ``hub X running``, and ``--check`` showed only the first node. The daemon runs as the
service runs it (``python -m gateway``), on a simulated radio, with a broker cluster none of whose nodes is up (the
daemon starts anyway and keeps trying)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.runner import broker_nodes, summary
from protocols.keys import HubIdentity, PlatformIdentity, save_hub_identity, save_platform_public_keys

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

BOUND = 30.0  # seconds: an upper bound on the daemon's start-up, never a sleep
NODES = ("mqtt://127.0.0.1:9", "mqtt://127.0.0.2:9", "mqtt://127.0.0.3:9")


def _config(tmp_path: Path, urls: tuple[str, ...]) -> Path:
    save_hub_identity(tmp_path / "hub.key", HubIdentity.generate("cluster-hub"))
    save_platform_public_keys(tmp_path / "platform.pub", PlatformIdentity.generate().public)
    listed = ", ".join(f'"{u}"' for u in urls)
    lines = ["[hub]", 'id = "cluster-hub"', 'key_file = "hub.key"', "[platform]", 'public_key_file = "platform.pub"']
    lines += ["[broker]", f"urls = [{listed}]", "[storage]", 'path = "data/outbox.sqlite"']
    lines += ["[ble]", 'link = "local:startup-log"', "[[residents]]", 'id = "r1"', 'name = "Resident"']
    path = tmp_path / "hub.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_nodes_are_named_in_order(tmp_path: Path) -> None:
    path = _config(tmp_path, NODES)
    config = load_config(path)
    named = broker_nodes(config)
    assert named == f"{', '.join(NODES)} (a cluster of 3 nodes, tried in this order)"
    assert summary(config, path).endswith(f"broker {named}")
    (tmp_path / "one").mkdir()
    assert broker_nodes(load_config(_config(tmp_path / "one", NODES[:1]))) == NODES[0]  # one broker: its URL


async def test_the_daemon_logs_every_node_when_it_starts(tmp_path: Path) -> None:
    path = _config(tmp_path, NODES)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "--config", str(path), "--no-voice",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(BOUND):
            while not any("hub cluster-hub running" in line for line in seen):
                line = (await proc.stderr.readline()).decode()
                assert line, f"the daemon exited ({await proc.wait()}) before it ran: {seen}"
                seen.append(line)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(BOUND):
            await proc.stderr.read()
            await proc.wait()
    (running,) = [line for line in seen if "hub cluster-hub running" in line]
    assert f"broker {', '.join(NODES)} (a cluster of 3 nodes" in running
