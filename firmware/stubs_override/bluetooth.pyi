# Local override of micropython-esp32-stubs' bluetooth.pyi, covering the API the pendant uses. Fixes, checked against
# the MicroPython documentation (docs/library/bluetooth.rst) and ports/esp32 behaviour:
# - connection and attribute handles are ints, not memoryviews (gatts_*, gap_disconnect, register_services);
# - gatts_indicate takes an optional data argument (MicroPython >= 1.20);
# - gatts_set_buffer takes the attribute's value handle (the stub names a memoryview conn_handle);
# - gap_advertise accepts None as the interval to stop advertising;
# - the IRQ handler may return a value (the _IRQ_GET_SECRET / _IRQ_SET_SECRET answers);
# - config(**kwargs) and config(name) as two overloads that mypy can tell apart.
from collections.abc import Callable
from typing import Any, Final, overload

from _typeshed import ReadableBuffer

FLAG_READ: Final[int]
FLAG_WRITE: Final[int]
FLAG_NOTIFY: Final[int]
FLAG_INDICATE: Final[int]
FLAG_WRITE_NO_RESPONSE: Final[int]

class UUID:
    def __init__(self, value: int | str | ReadableBuffer, /) -> None: ...

_Characteristic = tuple[UUID, int]
_Service = tuple[UUID, tuple[_Characteristic, ...]]

class BLE:
    def __init__(self) -> None: ...
    @overload
    def active(self) -> bool: ...
    @overload
    def active(self, active: bool, /) -> None: ...
    @overload
    def config(self, param: str, /) -> Any: ...
    @overload
    def config(self, **kwargs: Any) -> None: ...
    def irq(self, handler: Callable[[int, tuple[Any, ...]], object], /) -> None: ...
    def gatts_register_services(self, services_definition: tuple[_Service, ...], /) -> tuple[tuple[int, ...], ...]: ...
    def gatts_read(self, value_handle: int, /) -> bytes: ...
    def gatts_set_buffer(self, value_handle: int, len: int, append: bool = False, /) -> None: ...
    def gatts_write(self, value_handle: int, data: ReadableBuffer, send_update: bool = False, /) -> None: ...
    def gatts_notify(self, conn_handle: int, value_handle: int, data: ReadableBuffer | None = None, /) -> None: ...
    def gatts_indicate(self, conn_handle: int, value_handle: int, data: ReadableBuffer | None = None, /) -> None: ...
    def gap_advertise(
        self,
        interval_us: int | None,
        adv_data: ReadableBuffer | None = None,
        /,
        *,
        resp_data: ReadableBuffer | None = None,
        connectable: bool = True,
    ) -> None: ...
    def gap_disconnect(self, conn_handle: int, /) -> bool: ...
