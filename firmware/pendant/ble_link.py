# The pendant's GATT server over MicroPython's low-level `bluetooth` API (the BLE object comes from hal.Board).
#
# Service (protocols.pendant, docs/protocol.md §9): Event (read, indicate), Confirm (write), Feedback (write),
# Device Info (read), Key Check (write, read, indicate: the hub's challenge at pairing, §9.7). Attribute permissions
# do not demand encryption: the frames carry their own HMAC tags, and a failed pairing must never stop a call for
# help from reaching the hub. Bonding is still requested (hal.ble_on) and
# the bond keys persist in the `bonds` file, so a bonded hub reconnects encrypted.
#
# Interrupts become asyncio state, as in aioble: _irq() only records what happened and sets a ThreadSafeFlag.
# Concurrency cases:
# - connect while advertising: advertising stops (the controller does that); `connected` flag set;
# - disconnect at any time (also mid-indication): conn cleared, flag set; the sender sees `connected` is False and
#   advertises fast again; the event stays pending, so it is indicated again after reconnecting;
# - a second central connecting while one is connected: refused (gap_disconnect), one hub per pendant;
# - writes arriving faster than the app reads them: queued up to _MAX_WRITES, oldest dropped (a newer Confirm
#   supersedes an older one; a newer Feedback supersedes an older one);
# - a write that arrives before the app waits: stays queued, the flag stays set, next_write() returns it at once;
# - an indication whose confirmation never comes (hub gone without a disconnect yet): the sender re-indicates
#   after its retry interval; INDICATE_DONE only clears `indicating`;
# - bond keys from the stack (_IRQ_SET_SECRET): kept in RAM by the IRQ, written to flash by keep_secrets() (a task),
#   never inside the IRQ; _IRQ_GET_SECRET answers from RAM.

import asyncio
import time

from hal import Radio, Uuid
from micropython import const

_TYPING = const(0)  # firmware/mypy.ini treats this as true: typing exists for mypy only, never on the pendant
if _TYPING:
    from typing import Any, Callable

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_GATTS_INDICATE_DONE = const(20)
_IRQ_ENCRYPTION_UPDATE = const(28)
_IRQ_GET_SECRET = const(29)
_IRQ_SET_SECRET = const(30)

_FLAG_READ = const(0x0002)
_FLAG_WRITE = const(0x0008)
_FLAG_INDICATE = const(0x0020)

_ADV_FAST_US = const(30_000)  # 30 ms while an event waits: the hub connects within a scan window
_ADV_SLOW_US = const(1_000_000)  # 1 s when idle: low duty cycle, the hub can still reach us for feedback
_MAX_WRITES = const(4)
_WRITE_BUFFER = const(32)  # the stack keeps 20 bytes of a written value by default; Confirm is 21, Feedback 24
_MAX_SECRETS = const(16)  # bond records kept (a few hubs, each a handful of key types)

SERVICE_UUID = "978716ca-37a7-4944-8e50-bcfb9fb6a9d0"
EVENT_UUID = "978716cb-37a7-4944-8e50-bcfb9fb6a9d0"
CONFIRM_UUID = "978716cc-37a7-4944-8e50-bcfb9fb6a9d0"
FEEDBACK_UUID = "978716cd-37a7-4944-8e50-bcfb9fb6a9d0"
INFO_UUID = "978716ce-37a7-4944-8e50-bcfb9fb6a9d0"
KEY_CHECK_UUID = "978716cf-37a7-4944-8e50-bcfb9fb6a9d0"

WRITE_CONFIRM = const(1)
WRITE_FEEDBACK = const(2)
WRITE_KEY_CHECK = const(3)


def _uuid128_le(text: str) -> bytes:
    raw = bytes.fromhex(text.replace("-", ""))
    return bytes(reversed(raw))


def advert(uuid_text: str) -> bytes:
    """Flags (LE general discoverable, no BR/EDR) and the complete list of 128-bit service UUIDs: 21 bytes."""
    return b"\x02\x01\x06" + b"\x11\x07" + _uuid128_le(uuid_text)


class Secrets:
    """Bond keys the BLE stack asks us to keep (type u8 | key len u8 | key | len u8 | value per record).

    The stack hands them over in an IRQ (_IRQ_SET_SECRET), where nothing may touch flash: a flash write there stalls
    the BLE host (connection supervision timeouts) and on a board can run while the flash cache is off. So, as
    micropython-lib's aioble does, set() only changes the records in RAM and raises `dirty`; the link's keeper task
    (Link.keep_secrets) writes the file from task context, and Pendant.run() flushes whatever is left before sleep.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._items: list[tuple[int, bytes, bytes]] = []  # (sec_type, key, value), oldest first
        self.dirty = asyncio.ThreadSafeFlag()  # set (from the IRQ) when RAM holds records the file does not
        self._unsaved = False
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return
        i = 0
        try:
            while i < len(data):
                sec_type, klen = data[i], data[i + 1]
                key = bytes(data[i + 2 : i + 2 + klen])
                vlen = data[i + 2 + klen]
                value = bytes(data[i + 3 + klen : i + 3 + klen + vlen])
                if len(value) != vlen:
                    break
                self._items.append((sec_type, key, value))
                i += 3 + klen + vlen
        except IndexError:
            pass  # a torn last record: keep what parsed, the hub re-pairs if its key was the torn one

    def get(self, sec_type: int, index: int, key: bytes | None) -> bytes | None:
        if key is None:
            matches = [item for item in self._items if item[0] == sec_type]
            return matches[index][2] if index < len(matches) else None
        for item in self._items:
            if item[0] == sec_type and item[1] == key:
                return item[2]
        return None

    def set(self, sec_type: int, key: bytes, value: bytes | None) -> bool:
        """Keep (or, with value None, forget) a secret in RAM; called from the IRQ, so no flash I/O here."""
        key = bytes(key)
        found = False
        kept = []
        for item in self._items:
            if item[0] == sec_type and item[1] == key:
                found = True
            else:
                kept.append(item)
        if value is None and not found:
            return False  # nothing to delete: the stack is told so, the file stays as it is
        if value is not None:
            kept.append((sec_type, key, bytes(value)))
        while len(kept) > _MAX_SECRETS:
            kept.pop(0)
        self._items = kept
        self._unsaved = True
        self.dirty.set()
        return True

    @property
    def unsaved(self) -> bool:
        return self._unsaved

    def save(self) -> None:
        """Write the records to flash if RAM changed since the last save (task context only, never the IRQ)."""
        if not self._unsaved:
            return
        self._unsaved = False  # an IRQ landing during the write sets it (and `dirty`) again: saved on the next turn
        with open(self._path, "wb") as f:
            for sec_type_, key_, value_ in self._items:
                f.write(bytes((sec_type_, len(key_))) + key_ + bytes((len(value_),)) + value_)


class Link:
    """The pendant's GATT server: advertising, one connection, indications and the hub's writes."""

    def __init__(
        self, ble: Radio, uuid: Callable[[str], Uuid], secrets: Secrets, info: bytes,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        # `on_change()` is called from the IRQ on connect and disconnect: it must only set a ThreadSafeFlag.
        self._ble = ble
        self._on_change = on_change
        self._secrets = secrets
        self.conn: int | None = None  # connection handle of the hub
        self.connections = 0  # hubs connected so far this wake (the sender indicates at once on a new one)
        self._event = b""  # the Event value (empty until the first event)
        self.encrypted = False
        self.indicating = False
        self.connect_flag = asyncio.ThreadSafeFlag()
        self.write_flag = asyncio.ThreadSafeFlag()
        self._writes: list[tuple[int, bytes]] = []  # (WRITE_CONFIRM | WRITE_FEEDBACK | WRITE_KEY_CHECK, bytes)
        self._adv = advert(SERVICE_UUID)
        ble.irq(self._irq)
        service = (
            uuid(SERVICE_UUID),
            (
                (uuid(EVENT_UUID), _FLAG_READ | _FLAG_INDICATE),
                (uuid(CONFIRM_UUID), _FLAG_WRITE),
                (uuid(FEEDBACK_UUID), _FLAG_WRITE),
                (uuid(INFO_UUID), _FLAG_READ),
                (uuid(KEY_CHECK_UUID), _FLAG_READ | _FLAG_WRITE | _FLAG_INDICATE),
            ),
        )
        ((self._h_event, self._h_confirm, self._h_feedback, self._h_info, self._h_key),) = (
            ble.gatts_register_services((service,))
        )
        ble.gatts_set_buffer(self._h_confirm, _WRITE_BUFFER)
        ble.gatts_set_buffer(self._h_feedback, _WRITE_BUFFER)
        ble.gatts_set_buffer(self._h_key, _WRITE_BUFFER)  # the answer (25 bytes) is written into the same buffer
        ble.gatts_write(self._h_info, info)

    def _irq(self, event: int, data: tuple[Any, ...]) -> object:
        if event == _IRQ_CENTRAL_CONNECT:
            conn = data[0]
            if self.conn is not None:
                self._ble.gap_disconnect(conn)
                return None
            self.conn = conn
            self.connections += 1
            self.encrypted = False
            self.connect_flag.set()
            if self._on_change is not None:
                self._on_change()
        elif event == _IRQ_CENTRAL_DISCONNECT:
            if data[0] == self.conn:
                self.conn = None
                self.indicating = False
                self.connect_flag.set()
                if self._on_change is not None:
                    self._on_change()
        elif event == _IRQ_GATTS_WRITE:
            conn, handle = data[0], data[1]
            if conn != self.conn:
                return None
            if handle == self._h_confirm:
                kind = WRITE_CONFIRM
            elif handle == self._h_feedback:
                kind = WRITE_FEEDBACK
            elif handle == self._h_key:
                kind = WRITE_KEY_CHECK
            else:
                return None
            if len(self._writes) >= _MAX_WRITES:
                self._writes.pop(0)
            self._writes.append((kind, bytes(self._ble.gatts_read(handle))))
            self.write_flag.set()
        elif event == _IRQ_GATTS_INDICATE_DONE:
            if data[0] == self.conn and data[1] == self._h_event:
                self.indicating = False
        elif event == _IRQ_ENCRYPTION_UPDATE:
            if data[0] == self.conn:
                self.encrypted = bool(data[1])
        elif event == _IRQ_GET_SECRET:
            return self._secrets.get(data[0], data[1], None if data[2] is None else bytes(data[2]))
        elif event == _IRQ_SET_SECRET:
            return self._secrets.set(data[0], data[1], data[2])
        return None

    @property
    def connected(self) -> bool:
        return self.conn is not None

    def advertise(self, fast: bool) -> None:
        """(Re)start connectable advertising; fast while an event waits, slow when idle."""
        if self.conn is None:
            self._ble.gap_advertise(_ADV_FAST_US if fast else _ADV_SLOW_US, self._adv)

    def stop_advertising(self) -> None:
        self._ble.gap_advertise(None)

    async def wait_connected(self, timeout_ms: int) -> bool:
        """True once a hub is connected (at once if it already is), False after `timeout_ms`."""
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        while self.conn is None:
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                return False
            try:  # the flag may be stale (an earlier disconnect): loop until connected or out of time
                await asyncio.wait_for_ms(self.connect_flag.wait(), left)
            except asyncio.TimeoutError:
                return self.conn is not None
        return True

    def set_event(self, frame: bytes) -> None:
        """Make `frame` the Event value (what a read returns); no indication."""
        if frame != self._event:
            self._event = frame
            self._ble.gatts_write(self._h_event, frame)

    def indicate(self, frame: bytes) -> bool:
        """Make `frame` the Event value and indicate it to the hub; False when no hub is connected."""
        self.set_event(frame)
        conn = self.conn
        if conn is None:
            return False
        self.indicating = True
        try:
            self._ble.gatts_indicate(conn, self._h_event)
        except OSError:  # the link went down between the check and the call; the disconnect IRQ follows
            self.indicating = False
            return False
        return True

    def answer_key_check(self, answer: bytes) -> None:
        """Make `answer` the Key Check value and indicate it. If the indication cannot go out now (the link dropped,
        or the stack refuses a second indication while an Event one is unconfirmed), the hub reads the value."""
        self._ble.gatts_write(self._h_key, answer)
        conn = self.conn
        if conn is None:
            return
        try:
            self._ble.gatts_indicate(conn, self._h_key)
        except OSError:
            pass

    async def keep_secrets(self) -> None:
        """The keeper task: whenever the IRQ changed the bond records in RAM, write them to flash (here, not there)."""
        while True:
            await self._secrets.dirty.wait()
            self._secrets.save()

    def save_secrets(self) -> None:
        """Write bond records still only in RAM (before deep sleep, which loses RAM)."""
        self._secrets.save()

    def pop_write(self) -> tuple[int, bytes] | None:
        """The oldest queued write from the hub, or None."""
        return self._writes.pop(0) if self._writes else None

    def disconnect(self) -> None:
        if self.conn is not None:
            self._ble.gap_disconnect(self.conn)
