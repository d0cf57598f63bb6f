"""Two lanes of one worker reloading the same hub's key at once (issue 15 item 6: a slow database is never a
refusal). Found by tests/integration/test_chaos_district.py: after a PostgreSQL restart a hub's routine frame and its
panic frame came back from the two streams together; both missed the cache; the alarm lane's read finished first
and cached the key, so the routine lane's read found the key "already cached" and its envelope was refused as
``unknown_hub``, named in the hub's ack."""

from __future__ import annotations

import asyncio

import nacl.signing

from community.hubkeys import HubKeyCache
from community.storage import HubKeyChanges


class _SlowRegistry:
    """A registry whose row reads wait until released (a database answering slowly), in the order released."""

    def __init__(self, keys: dict[str, nacl.signing.VerifyKey]) -> None:
        self.keys = keys
        self.gates: list[asyncio.Event] = []
        self.reading = asyncio.Event()

    async def hub_key(self, hub: str) -> nacl.signing.VerifyKey | None:
        gate = asyncio.Event()
        self.gates.append(gate)
        self.reading.set()
        await gate.wait()
        return self.keys.get(hub)

    async def hub_key_changes(self, since: int | None) -> HubKeyChanges:
        return HubKeyChanges(1, {})


async def test_a_reload_that_another_lane_finished_first_still_reports_the_key_found() -> None:
    key = nacl.signing.SigningKey.generate().verify_key
    registry = _SlowRegistry({"hub-a": key})
    cache = HubKeyCache(registry)
    routine = asyncio.create_task(cache.reload("hub-a"))  # both lanes missed the cache
    while len(registry.gates) < 1:
        registry.reading.clear()
        await registry.reading.wait()
    alarm = asyncio.create_task(cache.reload("hub-a"))
    while len(registry.gates) < 2:
        registry.reading.clear()
        await registry.reading.wait()
    registry.gates[1].set()  # the alarm lane's read answers first and caches the key
    assert await alarm is True
    registry.gates[0].set()
    assert await routine is True  # the routine lane must open its envelope again, not refuse it
    assert cache.lookup().get("hub-a") == key
