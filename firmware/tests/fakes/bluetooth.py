# Fake `bluetooth` for the unix port: a GATT server whose central (the hub) is driven by the test. It records
# configuration, advertising, attribute values and indications, and calls the firmware's IRQ handler the way
# MicroPython's stack does. Tests only. The handler runs under irqguard: no flash I/O inside it.

import asyncio

import irqguard

FLAG_READ = 0x0002
FLAG_WRITE = 0x0008
FLAG_INDICATE = 0x0020
# MicroPython's permission flags (docs: ubluetooth "Flags"); an attribute with one of these refuses a central that
# has not encrypted (or authenticated) the link, with the ATT error the stack sends.
FLAG_READ_ENCRYPTED = 0x0200
FLAG_READ_AUTHENTICATED = 0x0400
FLAG_WRITE_ENCRYPTED = 0x1000
FLAG_WRITE_AUTHENTICATED = 0x2000
ATT_READ_NOT_PERMITTED = 0x02
ATT_WRITE_NOT_PERMITTED = 0x03
ATT_INSUFFICIENT_AUTHENTICATION = 0x05
ATT_INSUFFICIENT_ENCRYPTION = 0x0F

_IRQ_CENTRAL_CONNECT = 1
_IRQ_CENTRAL_DISCONNECT = 2
_IRQ_GATTS_WRITE = 3
_IRQ_GATTS_INDICATE_DONE = 20
_IRQ_ENCRYPTION_UPDATE = 28
_IRQ_GET_SECRET = 29
_IRQ_SET_SECRET = 30

last = None  # the most recent BLE(), for tests
irq_file_access = irqguard.file_access  # ("ble <event>", file name) of every open() inside an IRQ handler
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
            return irqguard.call("ble %d" % event, handler, event, data)

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
        self.encrypted = False
        self.handler(_IRQ_CENTRAL_DISCONNECT, (conn, 0, b"\x11\x22\x33\x44\x55\x66"))

    encrypted = False

    def _refusal(self, flags, allowed, encrypted_flag, authenticated_flag, not_permitted) -> int:
        if not flags & allowed:
            return not_permitted
        if flags & authenticated_flag:
            return ATT_INSUFFICIENT_AUTHENTICATION  # "just works" pairing never authenticates
        if flags & encrypted_flag and not self.encrypted:
            return ATT_INSUFFICIENT_ENCRYPTION
        return 0

    def central_write(self, uuid, data, conn=None) -> int:
        """A Write Request from the hub; the ATT status the stack answers (0: success)."""
        handle = self.by_uuid[uuid]
        status = self._refusal(
            self.flags[handle], FLAG_WRITE, FLAG_WRITE_ENCRYPTED, FLAG_WRITE_AUTHENTICATED, ATT_WRITE_NOT_PERMITTED
        )
        if status:
            return status
        self.values[handle] = bytes(data)[: self.buffers[handle]]  # longer writes are cut, as on a board
        self.handler(_IRQ_GATTS_WRITE, (self.conn if conn is None else conn, handle))
        return 0  # MicroPython's stack accepts every permitted write; the firmware cannot answer with an error

    def central_read(self, uuid):
        return self.values[self.by_uuid[uuid]]

    def central_read_att(self, uuid):
        """A Read Request from the hub: (ATT status, value) as the stack answers it."""
        handle = self.by_uuid[uuid]
        status = self._refusal(
            self.flags[handle], FLAG_READ, FLAG_READ_ENCRYPTED, FLAG_READ_AUTHENTICATED, ATT_READ_NOT_PERMITTED
        )
        return (status, b"" if status else self.values[handle])

    def encrypt(self, encrypted=True) -> None:
        self.encrypted = bool(encrypted)
        self.handler(_IRQ_ENCRYPTION_UPDATE, (self.conn, encrypted, False, True, 16))
