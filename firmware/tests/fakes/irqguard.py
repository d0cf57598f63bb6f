# Tests only: no flash I/O inside an interrupt handler. While a fake runs one of the firmware's IRQ handlers (the BLE
# radio's, a pin's), `open` (every file write on the board goes through it) raises OSError(EIO) and the attempt is
# recorded in `file_access` as (irq, file name). On a board a flash write in an IRQ stalls the BLE host or runs with
# the flash cache off; here it fails the test that caused it.
import builtins

running = None  # the IRQ being handled ("ble 30", "pin 33"), or None
file_access = []


def _guarded(real):
    def open_outside_irq(name, *args, **kwargs):
        if running is not None:
            file_access.append((running, name))
            raise OSError(5)  # EIO: flash I/O inside an IRQ handler
        return real(name, *args, **kwargs)

    return open_outside_irq


builtins.open = _guarded(builtins.open)  # once: a module body runs at its first import only


def call(irq, handler, *args):
    """Run `handler(*args)` as the IRQ named `irq`; what it returns."""
    global running
    outer, running = running, irq
    try:
        return handler(*args)
    finally:
        running = outer
