"""The hub uplink's whole delivery test suite (``tests/gateway/test_uplink.py``) against NATS's MQTT listener, as it
runs against Mosquitto and the in-memory broker (issue 15 item 3): every test of that file is collected here with a
``network`` fixture that is a real nats-server node with JetStream and MQTT."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType

import aiomqtt
import pytest
from nats_server import NatsNode, nats_server_path

from gateway.transport import MqttConnector

pytestmark = pytest.mark.integration

_ids = itertools.count()


def _suite() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "gateway" / "test_uplink.py"
    spec = importlib.util.spec_from_file_location("carehub_uplink_suite", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_s = _suite()
wires = _s.wires  # the suite's keys fixture
globals().update({name: value for name, value in vars(_s).items() if name.startswith("test_") and callable(value)})


@pytest.fixture
async def network(tmp_path: Path) -> AsyncIterator[object]:
    if nats_server_path() is None:
        pytest.skip("nats-server is not installed (scripts/test installs it)")
    async with NatsNode(tmp_path / "nats") as node:

        def client(prefix: str) -> Callable[[], aiomqtt.Client]:
            def make() -> aiomqtt.Client:
                return aiomqtt.Client(node.host, node.mqtt_port, identifier=f"{prefix}-{next(_ids)}", timeout=5)

            return make

        yield _s.Network("nats", MqttConnector(client("hub")), MqttConnector(client("platform")), node.stop, node.start)
