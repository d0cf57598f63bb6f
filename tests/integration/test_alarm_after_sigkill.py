"""Invariant 4: an alarm raised while the platform is unreachable survives a SIGKILL of the hub and is delivered
by the next run of the hub, once the broker is back."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from community.ingest import IngestWorker, WorkerSettings
from community.storage import SqliteStorage
from community.wire import PlatformCodec
from gateway.app import open_gateway
from gateway.config import parse_config
from gateway.feedback import RecordingFeedback
from protocols.keys import (
    HubIdentity,
    PlatformIdentity,
    save_hub_identity,
    save_platform_public_keys,
)
from protocols.record import AlarmBody, AlarmTier
from sim.broker import MosquittoBroker, free_port, mosquitto_available

pytestmark = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed")

CONFIG = """
[hub]
id = "kill-hub"
key_file = "hub.key"
[platform]
public_key_file = "platform.pub"
[broker]
url = "mqtt://127.0.0.1:{port}"
reconnect_max_s = 1
[storage]
path = "outbox.sqlite"
[[residents]]
id = "r1"
[[devices]]
address = "C0:11:00:00:00:02"
kind = "glucose"
resident = "r1"
"""

# The first run: a level 2 hypo (45 mg/dL) arrives while no broker is up; once the hub says it is stored, the test
# kills it.
FIRST_RUN = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime
    from pathlib import Path
    from gateway.app import open_gateway
    from gateway.ble import Reading
    from gateway.config import load_config
    from gateway.feedback import RecordingFeedback
    from protocols import gatt
    from protocols.datetime_ import DateTime
    from protocols.ieee11073 import MderFloat

    async def main() -> None:
        config = load_config(Path(sys.argv[1]))
        raw = bytes(gatt.GlucoseMeasurement(
            sequence_number=7, base_time=DateTime(2026, 11, 25, 3, 10, 0),
            concentration=MderFloat.from_value(45e-5), type=1, sample_location=1))
        recorder = RecordingFeedback()
        async with open_gateway(config, feedback=recorder, ble=False) as gw:
            device = config.devices[0]
            await gw.hub.store_readings([Reading(device, 0x2A18, raw, datetime.now(UTC))])
            print("STORED", ",".join(m or "" for m in recorder.messages()), flush=True)
            await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def test_alarm_stored_before_a_sigkill_reaches_the_platform_after_restart(tmp_path: Path) -> None:
    hub = HubIdentity.generate("kill-hub")
    platform = PlatformIdentity.generate()
    save_hub_identity(tmp_path / "hub.key", hub)
    save_platform_public_keys(tmp_path / "platform.pub", platform.public)
    port = free_port()
    (tmp_path / "hub.toml").write_text(CONFIG.format(port=port), encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FIRST_RUN, str(tmp_path / "hub.toml"), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("STORED"), line
        assert "glucose_hypo_critical" in line  # the resident was told at once, with no network
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
    (tmp_path / "broker").mkdir()
    async with (
        MosquittoBroker(tmp_path / "broker", port=port) as broker,
        SqliteStorage(tmp_path / "platform.sqlite") as storage,
    ):
        await storage.enroll_hub(hub.public)
        settings = WorkerSettings(broker.host, broker.port, client_id="kill-test-platform")
        async with IngestWorker(settings, storage, PlatformCodec(platform)) as worker:
            config = parse_config(CONFIG.format(port=port), tmp_path / "hub.toml")
            async with open_gateway(config, feedback=RecordingFeedback(), ble=False), asyncio.timeout(30):
                record = await worker.alarms.get()
                while not (isinstance(record.body, AlarmBody) and record.body.tier is AlarmTier.CRITICAL):
                    record = await worker.alarms.get()
            kinds = [r.kind for r in await storage.readings("kill-hub")]
    assert record.body.condition == "glucose.low"
    assert kinds.count("measurement") == 1
