"""Issue 15.2 (cause 1): an ingest worker caches hub verify keys, so what it reads from the database per frame does not
depend on how many hubs are enrolled; enrolments made while it runs are seen on the hub's first frame.

Database reads are counted as rows returned by the storage's hub-registry reads (queries, not time).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiomqtt
import nacl.signing
import pytest

from community.hubkeys import HubKeyCache
from community.ingest import IngestWorker, WorkerSettings
from community.samples import T0, bp_record
from community.storage import Enrolment, HubKeyChanges, SqliteStorage
from community.wire import PlatformCodec
from gateway.clock import ManualClock
from gateway.wire import HubWire
from protocols.acks import Ack, Rejected
from protocols.errors import EnvelopeRejection
from protocols.keys import HubIdentity, HubPublicKey, PlatformIdentity
from sim.broker import MosquittoBroker, mosquitto_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
]

BOUND = 30  # seconds: an upper bound for awaiting events, never a sleep
REFRESH_S = 60.0  # the cache's refresh interval on the test's manual clock: it refreshes only when the test says


class CountingStorage(SqliteStorage):
    """SQLite storage that counts the rows its hub-registry reads return."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.registry_rows = 0

    async def hubs(self) -> dict[str, nacl.signing.VerifyKey]:
        every = await super().hubs()
        self.registry_rows += len(every)
        return every

    async def hub_key(self, hub: str) -> nacl.signing.VerifyKey | None:
        key = await super().hub_key(hub)
        self.registry_rows += 1
        return key

    async def hub_keys(self, hubs: Sequence[str]) -> dict[str, nacl.signing.VerifyKey]:
        keys = await super().hub_keys(hubs)  # a batch's new hubs, read before it is opened (HubKeyCache.prefetch)
        self.registry_rows += len(keys)
        return keys

    async def hub_key_changes(self, since: int | None) -> HubKeyChanges:
        changes = await super().hub_key_changes(since)
        self.registry_rows += 1 + len(changes.keys)
        return changes


def bulk_hubs(count: int) -> list[Enrolment]:
    """``count`` enrolled hubs besides the one under test (keys from fixed seeds: fast and repeatable)."""
    return [
        Enrolment(
            HubPublicKey(
                f"bulk-{n:06d}", nacl.signing.SigningKey(hashlib.sha256(n.to_bytes(4, "big")).digest()).verify_key
            )
        )
        for n in range(count)
    ]


async def next_ack(client: aiomqtt.Client, wire: HubWire) -> Ack:
    async with asyncio.timeout(BOUND):
        async for message in client.messages:
            return wire.open_ack(bytes(message.payload))
    raise AssertionError("the ack subscription ended")


class World:
    """A worker over counting storage, the platform's keys, the cache's manual clock, and an MQTT client."""

    def __init__(
        self, storage: CountingStorage, platform: PlatformIdentity, clock: ManualClock, client: aiomqtt.Client
    ) -> None:
        self.storage = storage
        self.platform = platform
        self.clock = clock
        self.client = client

    async def send(self, wire: HubWire, *seqs: int) -> Ack:
        """Publish one frame of envelopes ``seqs`` on ``wire``'s hub's topic and return the ack it gets."""
        await self.client.subscribe(wire.ack_topic(), qos=1)
        frame = wire.encode_frame([wire.seal(seq, [bp_record(wire.hub_id, seq)], T0) for seq in seqs])
        await self.client.publish(wire.up_topic(), frame, qos=1)
        return await next_ack(self.client, wire)


@pytest.fixture
def run_world(tmp_path, mosquitto: MosquittoBroker):
    """``async with run_world(name, enrolled=N)``: a worker with N bulk hubs enrolled before it starts."""

    def start(name: str, *, enrolled: int) -> contextlib.AbstractAsyncContextManager[World]:
        return _world(tmp_path / name, mosquitto, enrolled)

    return start


@contextlib.asynccontextmanager
async def _world(path: Path, mosquitto: MosquittoBroker, enrolled: int) -> AsyncIterator[World]:
    platform = PlatformIdentity.generate()
    clock = ManualClock()
    async with CountingStorage(path / "platform.db") as storage:
        await storage.enroll_hubs(bulk_hubs(enrolled))
        cache = HubKeyCache(storage, refresh_s=REFRESH_S, monotonic=clock.monotonic)
        settings = WorkerSettings(mosquitto.host, mosquitto.port, client_id=f"ingest-{path.name}")
        async with IngestWorker(settings, storage, PlatformCodec(platform), hub_keys=cache) as worker:
            async with asyncio.timeout(BOUND):
                await worker.connected.wait()
            async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
                yield World(storage, platform, clock, client)


@pytest.mark.parametrize("refresh_every_frame", [False, True])
async def test_rows_read_per_frame_do_not_depend_on_how_many_hubs_are_enrolled(run_world, refresh_every_frame):
    reads: dict[int, list[int]] = {}
    for enrolled in (10, 20_000):
        async with run_world(f"hubs-{enrolled}", enrolled=enrolled) as world:
            hub = HubIdentity.generate("hub-under-test")
            await world.storage.enroll_hub(hub.public)
            wire = HubWire(hub, world.platform.public)
            per_frame = []
            for frame in range(4):
                if refresh_every_frame:
                    world.clock.advance(REFRESH_S)
                before = world.storage.registry_rows
                ack = await world.send(wire, 2 * frame + 1, 2 * frame + 2)
                assert ack.stored == (2 * frame + 1, 2 * frame + 2)
                per_frame.append(world.storage.registry_rows - before)
            reads[enrolled] = per_frame
    assert reads[10] == reads[20_000]
    # The first frame reads the registry's generation and the hub's row; later ones nothing, or the generation
    # alone when a refresh is due.
    assert reads[10] == ([2, 1, 1, 1] if refresh_every_frame else [2, 0, 0, 0])


async def test_a_hub_enrolled_after_the_worker_started_is_accepted_on_its_first_frame(run_world):
    async with run_world("late", enrolled=3) as world:
        first = HubIdentity.generate("hub-first")
        await world.storage.enroll_hub(first.public)
        assert (await world.send(HubWire(first, world.platform.public), 1)).stored == (1,)  # the cache is warm
        late = HubIdentity.generate("hub-late")
        await world.storage.enroll_hub(late.public)  # no refresh is due on the cache's clock
        ack = await world.send(HubWire(late, world.platform.public), 1)
        assert (ack.stored, ack.rejected) == ((1,), ())


async def test_a_re_enrolled_hubs_new_key_is_used_and_its_old_key_refused_after_a_refresh(run_world):
    async with run_world("rekey", enrolled=3) as world:
        old = HubIdentity.generate("hub-a")
        await world.storage.enroll_hub(old.public)
        old_wire = HubWire(old, world.platform.public)
        assert (await world.send(old_wire, 1)).stored == (1,)
        new = HubIdentity.generate("hub-a")  # the hub was replaced and enrolled again
        await world.storage.enroll_hub(new.public)
        ack = await world.send(HubWire(new, world.platform.public), 2)  # before any refresh: the cache had the old key
        assert (ack.stored, ack.rejected) == ((2,), ())
        ack = await world.send(old_wire, 3)
        assert ack.rejected == (Rejected(3, EnvelopeRejection.BAD_SIGNATURE),)


async def test_an_old_key_still_cached_stops_being_accepted_at_the_next_refresh(run_world):
    async with run_world("revoke", enrolled=3) as world:
        old = HubIdentity.generate("hub-a")
        await world.storage.enroll_hub(old.public)
        old_wire = HubWire(old, world.platform.public)
        assert (await world.send(old_wire, 1)).stored == (1,)
        await world.storage.enroll_hub(HubIdentity.generate("hub-a").public)  # the old key leaked: replaced
        world.clock.advance(REFRESH_S)
        ack = await world.send(old_wire, 2)
        assert (ack.stored, ack.rejected) == ((), (Rejected(2, EnvelopeRejection.BAD_SIGNATURE),))


async def test_a_hub_refused_as_unknown_is_accepted_on_its_first_frame_after_enrolment(run_world):
    async with run_world("unknown", enrolled=3) as world:
        hub = HubIdentity.generate("hub-c")
        wire = HubWire(hub, world.platform.public)
        assert (await world.send(wire, 1)).rejected == (Rejected(1, EnvelopeRejection.UNKNOWN_HUB),)
        before = world.storage.registry_rows
        assert (await world.send(wire, 1)).rejected == (Rejected(1, EnvelopeRejection.UNKNOWN_HUB),)
        assert world.storage.registry_rows - before == 1  # remembered as unknown: the generation alone is read
        await world.storage.enroll_hub(hub.public)
        ack = await world.send(wire, 1)
        assert (ack.stored, ack.rejected) == ((1,), ())
