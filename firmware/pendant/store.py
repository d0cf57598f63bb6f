# Flash store: the provisioned identity (pendant id, 32-byte key) and the event counter.
#
# Files under `root` (littlefs on the board):
#
#   pendant.key   magic b"PK" | version u8 | id length u8 | id | key (32) | counter floor u32 | check (4)
#   ctr0, ctr1    magic b"PC" | counter limit u32 | flags u8 | check (4)          (two alternating slots)
#
# `check` is the first 4 bytes of SHA-256 over everything before it. A slot's limit L means "counters below L may
# have been sent". Counters are reserved in blocks of BLOCK *before* use (write-ahead): when the next counter reaches
# the limit, the new limit next + BLOCK is written to the *other* slot first, then the counter is handed out. So:
#
# - a crash (or battery pulled) at any point never lets a counter be sent twice: on boot the counter restarts at the
#   highest surviving limit, past everything reserved (at most BLOCK values are skipped);
# - a crash while writing a slot tears only that slot; the other still holds the previous limit, and nothing from the
#   block being reserved was used yet;
# - one slot corrupt or missing (bit rot could have hit the newer one): restart MARGIN past the surviving one;
# - both slots lost: restart LOST_JUMP past the floor in the key file, and write that floor back into the key file
#   first, so a second total loss jumps again from there;
# - key file missing or corrupt: not provisioned. Events are refused (the hub would reject them anyway) and the
#   pendant shows the "not provisioned" pattern. The key file is replaced by write-new-then-rename, and a surviving
#   pendant.key.new is used when pendant.key is gone (a crash between the two steps on a FAT file system).
#
# Counter ceiling (docs/protocol.md §9.6): ordinary counters stop at frames.COUNTER_CEILING - 1; the ceiling itself
# is reserved for the key's one REKEY frame (rekey_counter()), so no limit ever exceeds COUNTER_CEILING + 1 and no
# counter 2**32-1 is ever sent. Past REKEY_FROM, provision() with a new key starts the counter again at 1.

import hashlib
import os
import struct

from frames import COUNTER_CEILING, check_id
from micropython import const

BLOCK = const(16)  # counters reserved per flash write
MARGIN = const(2 * BLOCK)  # jump past the surviving slot when the other is corrupt
LOST_JUMP = const(1 << 20)  # jump past the key file's floor when both slots are lost
REKEY_FROM = const(0x80000000)  # a new key restarts the counter from here on (protocols.pendant.REKEY_DUE_AT)
_LIMIT_MAX = const(0xFFFFFFFF)  # COUNTER_CEILING + 1: every counter, the REKEY one included, may have been sent
_KEY_LEN = const(32)
_CHECK_LEN = const(4)

FLAG_BATTERY_LOW_SENT = const(0x01)

_KEY_FILE = "pendant.key"
_SLOT_FILES = ("ctr0", "ctr1")
_KEY_MAGIC = b"PK\x01"
_SLOT_MAGIC = b"PC"
# magic "PC" | limit u32 | flags u8   (7 bytes, then check)
_SLOT = "<2sIB"
_SLOT_LEN = const(7)


class CounterExhausted(Exception):
    """The ordinary counters are used up: send the REKEY frame (rekey_counter()); re-provision with a new key."""


def _check(body: bytes) -> bytes:
    digest: bytes = hashlib.sha256(body).digest()
    return digest[:_CHECK_LEN]


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            data: bytes = f.read()
            return data
    except OSError:
        return None


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _sealed(body: bytes) -> bytes:
    return body + _check(body)


def _unseal(data: bytes | None) -> bytes | None:
    if data is None or len(data) <= _CHECK_LEN:
        return None
    body = data[:-_CHECK_LEN]
    return body if _check(body) == data[-_CHECK_LEN:] else None


def _key_record(pendant_id: bytes, key: bytes, floor: int) -> bytes:
    return _sealed(_KEY_MAGIC + bytes((len(pendant_id),)) + pendant_id + key + struct.pack("<I", floor))


def _parse_key(data: bytes | None) -> tuple[bytes, bytes, int] | None:
    body = _unseal(data)
    if body is None or body[:3] != _KEY_MAGIC or len(body) < 4:
        return None
    n = body[3]
    if len(body) != 4 + n + _KEY_LEN + 4 or n == 0:
        return None
    return (bytes(body[4 : 4 + n]), bytes(body[4 + n : 4 + n + _KEY_LEN]), struct.unpack("<I", body[-4:])[0])


def _parse_slot(data: bytes | None) -> tuple[int, int] | None:
    body = _unseal(data)
    if body is None or len(body) != _SLOT_LEN:
        return None
    magic, limit, flags = struct.unpack(_SLOT, body)
    return (limit, flags) if magic == _SLOT_MAGIC else None


def _replace(root: str, name: str, data: bytes) -> None:
    path = root + "/" + name
    _write(path + ".new", data)
    try:
        os.rename(path + ".new", path)
    except OSError:  # FAT will not rename over an existing file
        os.remove(path)
        os.rename(path + ".new", path)


def provision(root: str, pendant_id: bytes, key: bytes, first_counter: int = 1) -> None:
    """Write the identity and start the counter at `first_counter`, or past any counter reserved here.

    The counter never goes back, with one exception (docs/protocol.md §9.6): once it has passed REKEY_FROM (2**31,
    where the hub asks for a re-key), a *new* key (not the stored one, or none readable) starts it again at
    `first_counter`. Nothing sent under the old key verifies under the new one, so that replays nothing; with the
    same key the counter only goes up. Run on the pendant at pairing, e.g. through `mpremote exec`
    (firmware/README.md).
    """
    if len(key) != _KEY_LEN:
        raise ValueError("a pendant key has 32 bytes")
    if not check_id(pendant_id):
        raise ValueError("a pendant id is 1..32 of A-Z a-z 0-9 . _ : -")
    if not 1 <= first_counter < COUNTER_CEILING:
        raise ValueError("first_counter must be below the counter ceiling")
    old = _parse_key(_read(root + "/" + _KEY_FILE))
    if old is None:
        old = _parse_key(_read(root + "/" + _KEY_FILE + ".new"))
    start = first_counter if old is None else max(first_counter, old[2])
    for name in _SLOT_FILES:
        slot = _parse_slot(_read(root + "/" + name))
        if slot is not None:
            start = max(start, slot[0])
    if start >= REKEY_FROM and (old is None or old[1] != key):
        start = first_counter
    _replace(root, _KEY_FILE, _key_record(pendant_id, key, start))
    for name in _SLOT_FILES:
        _write(root + "/" + name, _sealed(struct.pack(_SLOT, _SLOT_MAGIC, start, 0)))


class Store:
    """The pendant's persistent state. Construct once per boot; recovery happens in the constructor.

    Attributes:
        pendant_id: the id (ASCII bytes), or None when not provisioned.
        key: the 32-byte key, or None when not provisioned.
        recovered: True when the counter store was found damaged and the counter jumped ahead.
    """

    def __init__(self, root: str) -> None:
        self._root = root
        self.pendant_id: bytes | None = None
        self.key: bytes | None = None
        self.recovered = False
        self._next = 0
        self._limit = 0
        self._flags = 0
        self._slot = 0  # the slot holding the current limit; the next reservation goes to the other one
        ident = _parse_key(_read(root + "/" + _KEY_FILE))
        if ident is None:
            ident = _parse_key(_read(root + "/" + _KEY_FILE + ".new"))
        if ident is None:
            return
        self.pendant_id, self.key, floor = ident
        good = []  # (limit, flags, slot index) of each slot that checks out
        for i in (0, 1):
            slot = _parse_slot(_read(root + "/" + _SLOT_FILES[i]))
            if slot is not None:
                good.append((slot[0], slot[1], i))
        if good:
            best = max(good)
            self._limit, self._flags, self._slot = best
            if len(good) == 1:
                self._limit = min(best[0] + MARGIN, _LIMIT_MAX)
                self.recovered = True
        else:
            self._limit = min(floor + LOST_JUMP, _LIMIT_MAX)
            self.recovered = True
            _replace(root, _KEY_FILE, _key_record(self.pendant_id, self.key, self._limit))
        self._limit = min(max(self._limit, floor, 1), _LIMIT_MAX)
        self._next = self._limit
        if self.recovered:
            self._persist(self._limit)

    @property
    def provisioned(self) -> bool:
        return self.key is not None

    @property
    def last_issued(self) -> int:
        """An upper bound of every counter this pendant may have sent (0 if none)."""
        return self._next - 1

    @property
    def flags(self) -> int:
        return self._flags

    def set_flags(self, flags: int) -> None:
        """Persist the flag byte (e.g. FLAG_BATTERY_LOW_SENT) with the current limit."""
        if flags != self._flags:
            self._flags = flags
            self._persist(self._limit)

    @property
    def exhausted(self) -> bool:
        """No ordinary counter is left: only the REKEY frame can be sent (rekey_counter())."""
        return self._next >= COUNTER_CEILING

    def next_counter(self) -> int:
        """A counter never handed out before, on this pendant, across reboots. Persisted before it is returned.

        Raises:
            CounterExhausted: the next counter would reach the ceiling (reserved for the REKEY frame).
        """
        if self._next >= COUNTER_CEILING:
            raise CounterExhausted()
        if self._next >= self._limit:
            self._persist(min(self._next + BLOCK, COUNTER_CEILING))
        counter = self._next
        self._next += 1
        return counter

    def rekey_counter(self) -> int:
        """COUNTER_CEILING, for the REKEY frame; from then on the store is exhausted. Idempotent (the frame has fixed
        bytes, so sending it again after a reboot is a repeat), persisted before it is returned."""
        if self._limit < _LIMIT_MAX:
            self._persist(_LIMIT_MAX)
        self._next = _LIMIT_MAX
        return COUNTER_CEILING

    def _persist(self, limit: int) -> None:
        other = 1 - self._slot
        _write(self._root + "/" + _SLOT_FILES[other], _sealed(struct.pack(_SLOT, _SLOT_MAGIC, limit, self._flags)))
        self._slot = other
        self._limit = limit
