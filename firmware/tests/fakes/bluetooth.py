# Fake `bluetooth` for the unix port: a GATT server whose central (the hub) is driven by the test. It records
# configuration, advertising, attribute values and indications, and calls the firmware's IRQ handler the way
# MicroPython's stack does. Tests only.
#
# No flash I/O inside the IRQ: while the firmware's handler runs, `open` (every file write on the board goes through
# it) raises OSError(EIO) and the attempt is recorded in `irq_file_access`. On a board a flash write in the BLE IRQ
# stalls the host stack; here it fails the test that caused it.

import asyncio
import builtins

FLAG_READ = 0x0002
FLAG_WRITE = 0x0008
FLAG_INDICATE = 0x0020

_IRQ_CENTRAL_CONNECT = 1
_IRQ_CENTRAL_DISCONNECT = 2
_IRQ_GATTS_WRITE = 3
_IRQ_GATTS_INDICATE_DONE = 20
_IRQ_ENCRYPTION_UPDATE = 28
_IRQ_GET_SECRET = 29
_IRQ_SET_SECRET = 30

last = None  # the most recent BLE(), for tests
in_irq = False  # True while the firmware's IRQ handler runs
irq_file_access = []  # (event, file name) of every open() attempted inside the IRQ handler


def _guarded_open(real):
    def open_outside_irq(name, *args, **kwargs):
        if in_irq:
            irq_file_access.append((_irq_event, name))
            raise OSError(5)  # EIO: flash I/O inside the BLE IRQ
        return real(name, *args, **kwargs)

    return open_outside_irq


_irq_event = 0
builtins.open = _guarded_open(builtins.open)  # once: a module body runs at its first import only
_DEFAULT_ATTR_LEN = 20  # MicroPython keeps this many bytes of a value a central writes, unless gatts_set_buffer()


class UUID:
    def __init__(self, value) -> None:
        self.value = str(value).lower()

    def __eq__(self, other) -> bool:
        return isinstance(other, UUID) and other.value == self.value

    def __str__(self) -> str:
        return self.value


class BLE:
    def __init__(self) -> None:
        global last
        last = self
        self.is_active = False
        self.settings = {}
        self.handler = None
        self.values = {}  # handle -> bytes
        self.by_uuid = {}  # uuid string -> handle
        self.flags = {}  # handle -> flags
        self.buffers = {}  # handle -> bytes kept of a central's write
        self.adverts = []  # (interval_us, adv_data) per gap_advertise call; interval None = stopped
        self.indications = []  # (conn, handle, value)
        self.indicated = asyncio.ThreadSafeFlag()
        self.refused = []  # connection handles the firmware disconnected
        self.auto_ack = True  # call INDICATE_DONE right after each indication
        self.advertising = None  # current interval_us or None

    # -- the MicroPython API ---------------------------------------------------------------------------------

    def active(self, on=None):
        if on is None:
            return self.is_active
        self.is_active = bool(on)
        return None

    def config(self, *args, **kwargs):
        if args:
            return self.settings[args[0]]
        self.settings.update(kwargs)
        return None

    def irq(self, handler) -> None:
        def in_irq_context(event, data):
            global in_irq, _irq_event
            outer, in_irq, _irq_event = in_irq, True, event
            try:
                return handler(event, data)
            finally:
                in_irq = outer

        self.handler = in_irq_context

    def gatts_register_services(self, services):
        result = []
        handle = 1
        for service_uuid, chars in services:
            handles = []
            for char_uuid, flags in chars:
                handle += 1
                self.by_uuid[str(char_uuid)] = handle
                self.flags[handle] = flags
                self.values[handle] = b""
                self.buffers[handle] = _DEFAULT_ATTR_LEN
                handles.append(handle)
                handle += 1
            result.append(tuple(handles))
        return tuple(result)

    def gatts_set_buffer(self, handle, length, append=False) -> None:
        self.buffers[handle] = length

    def gatts_write(self, handle, data, send_update=False) -> None:
        self.values[handle] = bytes(data)

    def gatts_read(self, handle):
        return self.values[handle]

    def gatts_indicate(self, conn, handle, data=None) -> None:
        if conn != self.conn:
            raise OSError(128)  # ENOTCONN
        value = self.values[handle] if data is None else bytes(data)
        self.indications.append((conn, handle, value))
        self.indicated.set()
        if self.auto_ack:
            self.handler(_IRQ_GATTS_INDICATE_DONE, (conn, handle, 0))

    def gap_advertise(self, interval_us, adv_data=None, resp_data=None, connectable=True) -> None:
        self.advertising = interval_us
        self.adverts.append((interval_us, None if adv_data is None else bytes(adv_data)))

    def gap_disconnect(self, conn) -> bool:
        if conn == self.conn:
            self.central_disconnect()
        else:
            self.refused.append(conn)
        return True

    # -- the test's side: the hub ------------------------------------------------------------------------------

    conn = None

    def central_connect(self, conn=64) -> None:
        if self.conn is None:
            self.conn = conn
            self.advertising = None  # the controller stops advertising on connection
        self.handler(_IRQ_CENTRAL_CONNECT, (conn, 0, b"\x11\x22\x33\x44\x55\x66"))

    def central_disconnect(self) -> None:
        conn, self.conn = self.conn, None
        self.handler(_IRQ_CENTRAL_DISCONNECT, (conn, 0, b"\x11\x22\x33\x44\x55\x66"))

    def central_write(self, uuid, data, conn=None) -> None:
        handle = self.by_uuid[uuid]
        self.values[handle] = bytes(data)[: self.buffers[handle]]  # longer writes are cut, as on a board
        self.handler(_IRQ_GATTS_WRITE, (self.conn if conn is None else conn, handle))

    def central_read(self, uuid):
        return self.values[self.by_uuid[uuid]]

    def encrypt(self, encrypted=True) -> None:
        self.handler(_IRQ_ENCRYPTION_UPDATE, (self.conn, encrypted, False, True, 16))
