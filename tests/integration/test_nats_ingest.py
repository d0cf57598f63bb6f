"""Hub outbox -> aiomqtt uplink -> NATS's MQTT listener -> JetStream -> NatsIngestWorker -> storage, acks back to
the hub's MQTT subscription: exactly once, on real nats-server processes (one node, and a 3-node cluster with a
node SIGKILLed mid-run), SQLite and PostgreSQL (issue 15 items 3 and 4)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats_server import NatsCluster, NatsNode, nats_server_path
from pg_server import PostgresServer
from test_platform_supervision import enroll, spawn, stop, wait_ingesting

from community.nats_config import UP_STREAM, NatsSettings
from community.nats_ingest import NatsIngestWorker, ensure_streams
from community.samples import T0, alarm_record, bp_record, panic_record
from community.storage import SqliteStorage, Storage, StorageError
from community.wire import PlatformCodec
from gateway.outbox import Lane, Outbox, OutboxItem, open_outbox
from gateway.uplink import Uplink, UplinkSettings
from gateway.wire import HubWire
from protocols.keys import HubIdentity, PlatformIdentity, save_platform_identity
from protocols.record import Record
from protocols.topics import encode_uplink

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(nats_server_path() is None, reason="nats-server is not installed (scripts/test installs it)"),
]

BOUND = 120  # seconds: an upper bound for awaiting events, never a sleep


@dataclass
class Keys:
    platform: PlatformIdentity
    hubs: dict[str, HubIdentity]

    def hub_wire(self, hub: str) -> HubWire:
        return HubWire(self.hubs[hub], self.platform.public)


@pytest.fixture
def keys() -> Keys:
    return Keys(PlatformIdentity.generate(), {h: HubIdentity.generate(h) for h in ("hub-a", "hub-b", "hub-c")})


Opener = Callable[[], AbstractAsyncContextManager[Storage]]


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    if request.param == "sqlite":
        return lambda: SqliteStorage(tmp_path / "platform.db")
    server: PostgresServer = request.getfixturevalue("pg_server")
    url = server.create_database()
    from community.storage_pg import PostgresStorage  # noqa: PLC0415

    return lambda: PostgresStorage(url)


def rid(record: Record) -> str:
    return record.record_id.hex()


async def put_records(ob: Outbox, wire: HubWire, records: list[Record], lane: Lane = Lane.ROUTINE) -> None:
    seqs = await ob.allocate_seqs(len(records))
    await ob.put_many(
        [
            OutboxItem(seq, wire.seal(seq, [rec], T0), lane, rec.kind.value, (rid(rec),), 0.0)
            for seq, rec in zip(seqs, records, strict=True)
        ]
    )


async def until(event: asyncio.Event, predicate: Callable[[], object]) -> None:
    async with asyncio.timeout(BOUND):
        while True:
            event.clear()
            result = predicate()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await event.wait()


async def empty(ob: Outbox) -> bool:
    return (await ob.stats()).rows == 0


def uplink_settings(node: NatsNode, hub: str, **kw: object) -> UplinkSettings:
    base: dict[str, object] = {"backoff_base": 0.05, "backoff_cap": 0.5, "ack_timeout": 5.0}
    base.update(kw)
    return UplinkSettings(hub_id=hub, host=node.host, port=node.mqtt_port, **base)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def worker_on(
    servers: list[str], storage: Storage, keys: Keys, name: str = "w1", **kw: object
) -> AsyncIterator[NatsIngestWorker]:
    settings = NatsSettings(servers=tuple(servers), client_name=name, fetch_wait_s=0.2, **kw)  # type: ignore[arg-type]
    async with NatsIngestWorker(settings, storage, PlatformCodec(keys.platform)) as worker:
        async with asyncio.timeout(BOUND):
            await worker.connected.wait()
        yield worker


async def test_hub_frames_through_jetstream_are_stored_once_and_acked(tmp_path, keys, opener):
    records = [bp_record("hub-a", n) for n in range(150)]
    alarm = alarm_record("hub-a", "alarm-1", 1000)
    wire = keys.hub_wire("hub-a")
    async with (
        NatsNode(tmp_path / "nats") as node,
        opener() as storage,
        open_outbox(tmp_path / "outbox.db") as ob,
    ):
        await storage.enroll_hub(keys.hubs["hub-a"].public)
        async with worker_on([node.url], storage, keys) as worker:
            await put_records(ob, wire, records)
            async with Uplink(uplink_settings(node, "hub-a", frame_max_envelopes=16), ob, wire) as up:
                await put_records(ob, wire, [alarm], Lane.PRIORITY)
                async with asyncio.timeout(BOUND):
                    await up.wait_acked(rid(alarm))
                    assert await worker.alarms.get() == alarm
                await until(up.acked, lambda: empty(ob))
            stored = [r.record_id for r in await storage.readings("hub-a")]
            assert sorted(stored) == sorted([rid(r) for r in records] + [rid(alarm)])
            assert worker.stats.envelopes_stored == len(records) + 1
            assert worker.stats.commits < worker.stats.frames  # batches of frames share a commit or more frames


async def test_three_node_cluster_loses_and_duplicates_nothing_when_a_node_is_sigkilled(tmp_path, keys):
    """Three hubs on two nodes' MQTT listeners, two workers (one connected to the third node first); that third
    node is SIGKILLed mid-run. The streams (3 replicas) keep their quorum, the worker fails over to a surviving node,
    frames it had fetched and not acked are delivered again: every record is stored once and every outbox drains.

    A frame a hub publishes while the routine stream elects a new leader (the killed node often led it: 2-8 s here)
    is PUBACKed by the MQTT listener and dropped, as NATS's MQTT-to-stream capture is not a JetStream publish
    (docs/platform-nats.md); only the hub's resend recovers it. The hubs resend after 2 s, and their ack wait is
    capped at 10 s (hub default 300 s): several frames expiring one after another each double the hub's wait
    (gateway.delivery_timing.ResendTimer), which once took it to 300 s within a second, beyond this test's bound."""
    per_hub = 120
    hubs = ("hub-a", "hub-b", "hub-c")
    records = {h: [bp_record(h, n) for n in range(per_hub)] for h in hubs}
    async with NatsCluster(tmp_path / "cluster") as cluster, SqliteStorage(tmp_path / "platform.db") as storage:
        for h in hubs:
            await storage.enroll_hub(keys.hubs[h].public)
        victim = cluster.nodes[0]
        async with contextlib.AsyncExitStack() as stack:
            workers = [
                await stack.enter_async_context(
                    worker_on([cluster.nodes[i].url for i in order], storage, keys, f"w{n}", replicas=3, ack_wait_s=3)
                )
                for n, order in enumerate(((0, 1, 2), (1, 2, 0)))
            ]
            tap = await stack.enter_async_context(_UplinkTap(cluster.nodes[2].url, PlatformCodec(keys.platform)))
            outboxes: dict[str, Outbox] = {}
            uplinks: dict[str, Uplink] = {}
            for i, h in enumerate(hubs):
                outboxes[h] = await stack.enter_async_context(open_outbox(tmp_path / f"{h}.db"))
                await put_records(outboxes[h], keys.hub_wire(h), records[h])
                node = cluster.nodes[1 + i % 2]
                settings = uplink_settings(node, h, frame_max_envelopes=8, ack_timeout=2.0, ack_timeout_cap=10.0)
                uplinks[h] = await stack.enter_async_context(Uplink(settings, outboxes[h], keys.hub_wire(h)))

            def stored_total() -> int:
                return sum(w.stats.envelopes_stored for w in workers)

            await until(workers[0].stored, lambda: stored_total() >= per_hub)
            assert stored_total() < len(hubs) * per_hub  # the kill is mid-run
            tap.killed_at = time.time()
            await victim.kill()
            try:
                for h in hubs:
                    await until(uplinks[h].acked, lambda h=h: empty(outboxes[h]))
            except TimeoutError:
                raise AssertionError(await tap.stall_report(uplinks, outboxes, workers, cluster)) from None
        ids = [(r.hub, r.record_id) for r in await storage.readings()]
        assert len(ids) == len(set(ids))  # nothing duplicated
        assert sorted(ids) == sorted((h, rid(r)) for h in hubs for r in records[h])  # nothing lost
        assert sum(w.stats.envelopes_stored for w in workers) == len(ids)


class _UplinkTap:
    """Every uplink frame published on the cluster (a core NATS subscriber on a node that stays up), to tell, if
    the test stalls, whether a hub's frames reached the cluster at all and whether the stream kept them."""

    def __init__(self, url: str, codec: PlatformCodec) -> None:
        self.url = url
        self.codec = codec
        self.seen: list[tuple[float, str, list[int]]] = []
        self.killed_at = 0.0
        self._nc: NatsClient | None = None

    async def __aenter__(self) -> _UplinkTap:
        self._nc = await nats.connect(self.url)
        await self._nc.subscribe("carehub.v1.*.up", cb=self._on_frame)
        await self._nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._nc is not None:
            await self._nc.close()

    async def _on_frame(self, msg: Msg) -> None:
        seqs = [p[1] for raw in self.codec.split_frame(msg.data) if (p := self.codec.peek(raw)) is not None]
        self.seen.append((time.time(), msg.subject.split(".")[2], seqs))

    async def stall_report(
        self,
        uplinks: dict[str, Uplink],
        outboxes: dict[str, Outbox],
        workers: list[NatsIngestWorker],
        cluster: NatsCluster,
    ) -> str:
        lines = []
        for h, u in uplinks.items():
            lines.append(f"{h}: rows={(await outboxes[h].stats()).rows} node={u.node} {u.metrics}")
            lines.append(f"  in flight {sorted(u.inflight_seqs)}")
            missing = set(u.inflight_seqs)
            lines += [
                f"  published {at - self.killed_at:+.3f} s after the kill: {seqs}"
                for at, hub, seqs in self.seen
                if hub == h and missing & set(seqs)
            ]
        lines += [f"{w.settings.client_name}: {w.stats}" for w in workers]
        assert self._nc is not None
        js = self._nc.jetstream(timeout=5)
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            lines.append(f"stream: {(await js.stream_info(UP_STREAM)).state}")
        for n in cluster.nodes:
            log = [line for line in n.log_text().splitlines() if "leader" in line]
            lines.append(f"--- {n.name} leader changes:\n" + "\n".join(log[-20:]))
        return "\n".join(lines)


async def test_panic_is_stored_and_acked_while_5000_routine_envelopes_wait(tmp_path, keys):
    """5,000 routine envelopes of another hub wait in the routine stream (published before any worker runs, as
    after a broker restart); hub-a's real uplink publishes a panic on its alarm topic. The worker acks the panic
    through the alarm stream's own consumer before it has acked even half of the backlog: ack order recorded by an
    MQTT client subscribed to every hub's ack topic."""
    n_routine = 5000
    panic = panic_record("hub-a", "pendant-1", 1, "panic-1", 9000)
    backlog_wire = keys.hub_wire("hub-b")
    backlog = [bp_record("hub-b", n) for n in range(n_routine)]
    async with (
        NatsNode(tmp_path / "nats") as node,
        SqliteStorage(tmp_path / "platform.db") as storage,
        open_outbox(tmp_path / "outbox.db") as ob,
    ):
        for h in ("hub-a", "hub-b"):
            await storage.enroll_hub(keys.hubs[h].public)
        settings = NatsSettings(servers=(node.url,), batch=4, alarm_batch=4, max_ack_pending=8, fetch_wait_s=0.2)
        nc = await nats.connect(node.url)
        try:
            await ensure_streams(nc.jetstream(), settings)
            seen = _Counter()
            await nc.subscribe("carehub.v1.*.*", cb=seen.count)
            async with aiomqtt.Client(node.host, node.mqtt_port, identifier="acks-watch") as watch:
                await watch.subscribe("carehub/v1/+/ack", qos=1)
                frames = [
                    encode_uplink([backlog_wire.seal(i + j + 1, [r], T0) for j, r in enumerate(backlog[i : i + 64])])
                    for i in range(0, n_routine, 64)
                ]
                async with aiomqtt.Client(node.host, node.mqtt_port, identifier="carehub-hub-hub-b") as hub_b:
                    for frame in frames:
                        await hub_b.publish("carehub/v1/hub-b/up", frame, qos=1)
                await seen.reach(len(frames))
                async with Uplink(uplink_settings(node, "hub-a"), ob, keys.hub_wire("hub-a")) as up:
                    await put_records(ob, keys.hub_wire("hub-a"), [panic], Lane.PRIORITY)
                    await seen.reach(len(frames) + 1)
                    info = await nc.jetstream().stream_info("CAREHUB_UP")
                    assert info.state.messages == len(frames)  # the backlog waits in the stream
                    order: list[tuple[str, tuple[int, ...]]] = []
                    async with worker_on([node.url], storage, keys, batch=4, alarm_batch=4, max_ack_pending=8):
                        async with asyncio.timeout(BOUND):
                            async for message in watch.messages:
                                hub = str(message.topic).split("/")[2]
                                ack = keys.hub_wire(hub).open_ack(bytes(message.payload))
                                order.append((hub, ack.stored))
                                if sum(len(a) for h, a in order if h == "hub-b") == n_routine and any(
                                    h == "hub-a" for h, _ in order
                                ):
                                    break
                        await up.wait_acked(rid(panic))
            ids = [r.record_id for r in await storage.readings()]
        finally:
            await nc.close()
    panic_at = next(i for i, (h, _) in enumerate(order) if h == "hub-a")
    routine_before = sum(len(a) for h, a in order[:panic_at] if h == "hub-b")
    assert routine_before < n_routine // 2, f"the panic was acked after {routine_before} routine envelopes"
    assert sorted(ids) == sorted([rid(r) for r in backlog] + [rid(panic)])


class _Counter:
    """Counts messages seen on core NATS subjects; :meth:`reach` awaits a count."""

    def __init__(self) -> None:
        self.n = 0
        self.changed = asyncio.Event()

    async def count(self, msg: object) -> None:
        del msg
        self.n += 1
        self.changed.set()

    async def reach(self, n: int) -> None:
        await until(self.changed, lambda: self.n >= n)


class _FailingOnce(SqliteStorage):
    """The real SQLite storage whose first store_batch fails as a database outage would (nothing written)."""

    failed = False

    async def store_batch(self, envelopes, refused=()):  # type: ignore[no-untyped-def]
        if not self.failed:
            self.failed = True
            raise StorageError("disk I/O error (injected)")
        return await super().store_batch(envelopes, refused)


async def test_a_database_failure_naks_and_jetstream_delivers_the_frame_again(tmp_path, keys):
    """Nothing is acked (to the hub or to JetStream) when the commit fails; the nak'ed frame comes back from the
    stream, without the hub resending it, and is stored once."""
    wire = keys.hub_wire("hub-a")
    async with (
        NatsNode(tmp_path / "nats") as node,
        _FailingOnce(tmp_path / "platform.db") as storage,
        aiomqtt.Client(node.host, node.mqtt_port, identifier="carehub-hub-hub-a") as hub,
    ):
        await storage.enroll_hub(keys.hubs["hub-a"].public)
        async with worker_on([node.url], storage, keys) as worker:
            await hub.subscribe("carehub/v1/hub-a/ack", qos=1)
            records = [bp_record("hub-a", n) for n in range(3)]
            await hub.publish("carehub/v1/hub-a/up", wire.encode_frame([wire.seal(1, records, T0)]), qos=1)
            async with asyncio.timeout(BOUND):
                async for message in hub.messages:
                    assert wire.open_ack(bytes(message.payload)).stored == (1,)
                    break
            assert worker.stats.storage_errors == 1
            assert worker.stats.acks_sent == 1
        assert sorted(r.record_id for r in await storage.readings()) == sorted(rid(r) for r in records)


async def test_a_sigkilled_worker_process_loses_and_duplicates_nothing(tmp_path, keys):
    """Chaos on real processes: two ``carehub platform run`` workers on a 3-node cluster (one SQLite file), two hubs'
    real uplinks; once a third of the envelopes is acked, one worker process is SIGKILLed (whatever it had fetched
    and not acked comes back after ack_wait_s) and started again. Every record is stored exactly once and every
    outbox drains. (A NATS node SIGKILLed mid-run: test_three_node_cluster_... above.)"""
    per_hub = 400
    hubs = ("hub-a", "hub-b")
    records = {h: [bp_record(h, n) for n in range(per_hub)] for h in hubs}
    async with NatsCluster(tmp_path / "cluster") as cluster:
        await enroll(tmp_path / "platform.db", *(keys.hubs[h] for h in hubs))
        save_platform_identity(tmp_path / "platform.key", keys.platform)

        def config(name: str, order: tuple[int, ...]) -> Path:
            servers = ", ".join(f'"{cluster.nodes[i].url}"' for i in order)
            path = tmp_path / f"{name}.toml"
            path.write_text(
                f'[broker]\nclient_id = "{name}"\n'
                f"[nats]\nservers = [{servers}]\nreplicas = 3\nack_wait_s = 3\nbatch = 8\n"
                '[storage]\ndatabase = "platform.db"\n[keys]\nidentity = "platform.key"\n'
            )
            return path

        configs = [config("w0", (0, 1, 2)), config("w1", (1, 2, 0))]
        procs = [await spawn(["platform", "run", "-c", str(c)]) for c in configs]
        try:
            for proc in procs:
                await wait_ingesting(proc)
            async with contextlib.AsyncExitStack() as stack:
                watch = await stack.enter_async_context(
                    aiomqtt.Client(cluster.nodes[2].host, cluster.nodes[2].mqtt_port, identifier="ack-watch")
                )
                await watch.subscribe("carehub/v1/+/ack", qos=1)
                outboxes: dict[str, Outbox] = {}
                uplinks: dict[str, Uplink] = {}
                for i, h in enumerate(hubs):
                    outboxes[h] = await stack.enter_async_context(open_outbox(tmp_path / f"{h}.db"))
                    await put_records(outboxes[h], keys.hub_wire(h), records[h])
                    settings = uplink_settings(cluster.nodes[1 + i], h, frame_max_envelopes=8)
                    uplinks[h] = await stack.enter_async_context(Uplink(settings, outboxes[h], keys.hub_wire(h)))
                acked = 0
                async with asyncio.timeout(BOUND):
                    async for message in watch.messages:
                        hub = str(message.topic).split("/")[2]
                        acked += len(keys.hub_wire(hub).open_ack(bytes(message.payload)).stored)
                        if acked >= len(hubs) * per_hub // 3:
                            break
                await stop(procs[0])  # SIGKILL, mid-batch or not
                procs[0] = await spawn(["platform", "run", "-c", str(config("w0", (1, 2, 0)))])
                await wait_ingesting(procs[0])
                for h in hubs:
                    await until(uplinks[h].acked, lambda h=h: empty(outboxes[h]))
        finally:
            for proc in procs:
                await stop(proc)
    async with SqliteStorage(tmp_path / "platform.db") as storage:
        ids = [(r.hub, r.record_id) for r in await storage.readings()]
    assert len(ids) == len(set(ids))  # nothing duplicated
    assert sorted(ids) == sorted((h, rid(r)) for h in hubs for r in records[h])  # nothing lost
