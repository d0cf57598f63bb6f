"""Each ingest worker's cache of enrolled hubs' verify keys: the cost of an envelope does not grow with the registry.

An envelope names its signer inside its sealed content, so the worker learns which hub's key it needs only while
:func:`protocols.envelope.open_envelope` runs. It passes a :class:`KeyLookup` (a mapping over this cache that notes
which hub was asked for); when the hub was not cached, or its cached key did not verify, the worker asks the cache to
:meth:`HubKeyCache.reload` that one hub and, if that found a key it did not have, opens the envelope again.

What the cache reads from the database (:class:`HubKeySource`, implemented by the platform's storage):

* a miss: the one hub's row (:meth:`HubKeySource.hub_key`), so a hub enrolled after the worker started is accepted on
  its first frame. A hub found not enrolled is remembered in a bounded negative cache; while it is there, a frame it
  sends reads only the registry's generation (below), and once that moved, the hubs enrolled since: the hub's
  re-send after its enrolment is accepted at once (``unknown_hub`` is a refusal the hub retries);
* a cached key that does not verify the envelope: the one hub's row again, so a re-enrolled hub's new key is used on
  its first frame;
* at most once per ``refresh_s`` (:meth:`HubKeyCache.refresh_if_due`, called per frame): the registry's generation,
  and when it moved, the hubs enrolled since (:meth:`HubKeySource.hub_key_changes`, by index). A cached key that was
  replaced stops being accepted within ``refresh_s`` (a key replaced because it leaked; the hub's new key was
  accepted at once already), and a hub in the negative cache that was enrolled since is accepted.

Before a batch is opened, :meth:`HubKeyCache.prefetch` reads in ONE query the keys of the hubs whose topics its
frames arrived on and that are neither cached nor remembered as not enrolled (when the source can,
:class:`HubKeyBatchSource`): in a reconnect storm of 10,000 hubs each hub's first frame cost a row read and its first
envelope was opened twice (once to learn the signer, once with its key); now a batch of 16 new hubs costs one read.

So in steady state a frame reads no row at all, and each read above is one row (plus one per changed hub), with 10
hubs enrolled as with 200,000. Both caches are bounded (least recently used first out).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Final, Protocol, runtime_checkable

import nacl.signing

from community.storage import HubKeyChanges

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_NEGATIVE_CAPACITY",
    "DEFAULT_REFRESH_S",
    "HubKeyBatchSource",
    "HubKeyCache",
    "HubKeySource",
    "KeyLookup",
]

DEFAULT_REFRESH_S: Final = 1.0
"""How often a worker asks whether any hub was enrolled or re-enrolled (seconds)."""
DEFAULT_CAPACITY: Final = 262_144
"""Verify keys kept per worker (a district's 200,000 hubs fit; each is a few hundred bytes)."""
DEFAULT_NEGATIVE_CAPACITY: Final = 4_096
"""Hub ids remembered as not enrolled."""


class HubKeySource(Protocol):
    """Where enrolled hubs' keys are read from (the platform's storage)."""

    async def hub_key(self, hub: str) -> nacl.signing.VerifyKey | None:
        """One hub's verify key, ``None`` if it is not enrolled."""
        ...

    async def hub_key_changes(self, since: int | None) -> HubKeyChanges:
        """The registry's generation and the hubs (re-)enrolled after ``since`` (``None``: the generation alone)."""
        ...


@runtime_checkable
class HubKeyBatchSource(Protocol):
    """A registry that can also read many hubs' keys in one query (both storage engines)."""

    async def hub_keys(self, hubs: Sequence[str]) -> dict[str, nacl.signing.VerifyKey]:
        """The verify keys of those of ``hubs`` that are enrolled."""
        ...


class KeyLookup(Mapping[str, nacl.signing.VerifyKey]):
    """The cached keys as the mapping :func:`protocols.envelope.open_envelope` takes, noting the hub it asked for.

    Made per envelope (:meth:`HubKeyCache.lookup`); a lookup marks the hub as recently used.
    """

    __slots__ = ("_keys", "asked")

    def __init__(self, keys: OrderedDict[str, nacl.signing.VerifyKey]) -> None:
        self._keys = keys
        #: The hub id whose key was asked for last, ``None`` until one was.
        self.asked: str | None = None

    def __getitem__(self, hub: str) -> nacl.signing.VerifyKey:
        self.asked = hub
        key = self._keys[hub]
        self._keys.move_to_end(hub)
        return key

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


class HubKeyCache:
    """One worker's verify keys (see the module docstring).

    Args:
        source: the registry (the platform's storage).
        refresh_s: the longest time between two reads of the registry's generation; >= 0 (0: every frame).
        capacity: the most keys kept; >= 1.
        negative_capacity: the most hub ids kept as not enrolled; >= 0.
        monotonic: the clock ``refresh_s`` is measured on.
    """

    def __init__(
        self,
        source: HubKeySource,
        *,
        refresh_s: float = DEFAULT_REFRESH_S,
        capacity: int = DEFAULT_CAPACITY,
        negative_capacity: int = DEFAULT_NEGATIVE_CAPACITY,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if refresh_s < 0:
            raise ValueError(f"refresh_s must be >= 0, got {refresh_s}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if negative_capacity < 0:
            raise ValueError(f"negative_capacity must be >= 0, got {negative_capacity}")
        self._source = source
        self._refresh_s = refresh_s
        self._capacity = capacity
        self._negative_capacity = negative_capacity
        self._monotonic = monotonic
        self._keys: OrderedDict[str, nacl.signing.VerifyKey] = OrderedDict()
        self._unknown: OrderedDict[str, None] = OrderedDict()
        self._generation: int | None = None
        self._checked_at = 0.0

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def generation(self) -> int | None:
        """The registry generation the cache is up to date with (``None`` before the first refresh)."""
        return self._generation

    def lookup(self) -> KeyLookup:
        """A mapping over the cached keys for one :func:`protocols.envelope.open_envelope` call."""
        return KeyLookup(self._keys)

    def is_known_unknown(self, hub: str) -> bool:
        """Whether ``hub`` is remembered as not enrolled."""
        return hub in self._unknown

    async def refresh_if_due(self) -> None:
        """Catch up with enrolments when ``refresh_s`` has passed since the last look (or never looked).

        Raises:
            StorageError: the registry cannot be read (the frame is not handled; nothing is acked).
        """
        now = self._monotonic()
        if self._generation is not None and now - self._checked_at < self._refresh_s:
            return
        await self._refresh(now)

    async def _refresh(self, now: float) -> None:
        changes = await self._source.hub_key_changes(self._generation)
        self._checked_at = now
        for hub, key in changes.keys.items():
            # A cached key is replaced; a hub remembered as not enrolled is enrolled now; others load when they send.
            if hub in self._keys or hub in self._unknown:
                self._unknown.pop(hub, None)
                self._remember(hub, key)
        self._generation = changes.generation

    def _remember(self, hub: str, key: nacl.signing.VerifyKey) -> None:
        self._keys[hub] = key
        self._keys.move_to_end(hub)
        if len(self._keys) > self._capacity:
            self._keys.popitem(last=False)

    async def prefetch(self, hubs: Iterable[str]) -> None:
        """Read, in one query, the keys of those of ``hubs`` that are neither cached nor remembered as not enrolled
        (the hubs whose topics a batch's frames arrived on); nothing when the source reads one hub at a time.

        A hub found not enrolled is left to :meth:`reload` (which remembers it as such). What was read is dropped if
        the registry's generation moved while it was read (a re-enrolment in between could make it stale; the
        envelope's own miss reads the row again).

        Raises:
            StorageError: the registry cannot be read.
        """
        source = self._source
        if not isinstance(source, HubKeyBatchSource):
            return
        missing = sorted({h for h in hubs if h not in self._keys and h not in self._unknown})
        if not missing:
            return
        generation = self._generation
        found = await source.hub_keys(missing)
        if self._generation != generation:
            return
        for hub, key in found.items():
            if hub not in self._keys:  # another lane's reload may have cached it meanwhile; that read is as new
                self._remember(hub, key)

    async def reload(self, hub: str) -> bool:
        """Read ``hub``'s key after it was missing or did not verify; whether a key the cache lacked was found.

        For a hub remembered as not enrolled, only the registry's changes are read (one row while nothing changed).

        Raises:
            StorageError: the registry cannot be read.
        """
        if hub in self._unknown:
            self._unknown.move_to_end(hub)
            await self._refresh(self._monotonic())
            return hub in self._keys
        # What the failed open had, read before the await: another lane of the worker may cache this very key
        # while the row is read, and that must not turn "found" into "nothing new" (a refusal, unknown_hub).
        cached = self._keys.get(hub)
        key = await self._source.hub_key(hub)
        if key is None:
            self._keys.pop(hub, None)
            if self._negative_capacity:
                self._unknown[hub] = None
                if len(self._unknown) > self._negative_capacity:
                    self._unknown.popitem(last=False)
            return False
        self._remember(hub, key)
        return cached is None or bytes(cached) != bytes(key)
