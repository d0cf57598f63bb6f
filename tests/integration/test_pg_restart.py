"""A JetStream ingest worker on PostgreSQL through a database restart (issue 15 item 6: "transient failures
(database down) are never reported as refusals"): real nats-server, real PostgreSQL stopped with
``pg_ctl stop -m immediate``'s signal and started again on the same port and data directory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import pytest
from nats_server import NatsNode, nats_server_path
from pg_server import PostgresServer
from test_nats_ingest import BOUND, Keys, rid, until, worker_on

from community.metrics import Health, health_of
from community.samples import T0, bp_record
from community.storage_pg import PostgresStorage
from protocols.acks import Ack
from protocols.keys import HubIdentity, PlatformIdentity

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(nats_server_path() is None, reason="nats-server is not installed (scripts/test installs it)"),
]


@pytest.fixture
def keys() -> Keys:
    return Keys(PlatformIdentity.generate(), {"hub-a": HubIdentity.generate("hub-a")})


async def test_a_postgresql_restart_is_waited_out_never_refused(
    tmp_path: Path, keys: Keys, own_pg_server: PostgresServer
) -> None:
    """The database goes down (immediate shutdown: every connection of the pool is cut) while frames arrive: the
    worker acks nothing, refuses nothing, reports not-ready on /healthz; once the database is back the very same
    pool serves again, the frames held in the stream are stored once and acked, and the worker is ready again."""
    wire = keys.hub_wire("hub-a")
    url = own_pg_server.create_database()
    first = [bp_record("hub-a", n) for n in range(3)]
    during = [bp_record("hub-a", n) for n in range(3, 9)]
    async with (
        NatsNode(tmp_path / "nats") as node,
        PostgresStorage(url, timeout_s=2.0) as storage,
        aiomqtt.Client(node.host, node.mqtt_port, identifier="carehub-hub-hub-a") as hub,
    ):
        await storage.enroll_hub(keys.hubs["hub-a"].public)
        async with worker_on([node.url], storage, keys) as worker:
            await hub.subscribe("carehub/v1/hub-a/ack", qos=1)
            acks = hub.messages

            async def next_ack() -> Ack:
                async with asyncio.timeout(BOUND):
                    message = await anext(aiter(acks))
                return wire.open_ack(bytes(message.payload))

            await hub.publish("carehub/v1/hub-a/up", wire.encode_frame([wire.seal(1, first, T0)]), qos=1)
            assert (await next_ack()).stored == (1,)
            assert health_of(worker) == Health(True, "ok")

            await asyncio.to_thread(own_pg_server.stop, immediate=True)
            frames = [wire.encode_frame([wire.seal(2 + i, [r], T0)]) for i, r in enumerate(during)]
            for frame in frames:
                await hub.publish("carehub/v1/hub-a/up", frame, qos=1)
            async with asyncio.timeout(BOUND):
                await worker.database_down.wait()
            assert health_of(worker) == Health(False, "database unavailable")
            assert worker.stats.storage_errors >= 1
            assert worker.stats.acks_sent == 1
            assert worker.stats.rejections == {}

            await asyncio.to_thread(own_pg_server.start)
            acked: set[int] = set()
            while len(acked) < len(during):
                ack = await next_ack()
                assert ack.rejected == ()  # a database outage is never a refusal
                acked.update(ack.stored)
            assert acked == set(range(2, 2 + len(during)))
            await until(worker.stored, lambda: not worker.database_down.is_set())
            assert health_of(worker) == Health(True, "ok")
        stored = [r.record_id for r in await storage.readings("hub-a")]
        assert sorted(stored) == sorted(rid(r) for r in first + during)  # once each
        assert await storage.quarantine() == []
        assert await storage.rejections() == {}
