# The GATT server on the fake radio: service table, advertising, one connection, writes and bond secrets.
import asyncio

import ble_link
import bluetooth
import frames
import machine
from support import PID, Failed, Rig, check, equal, tmpdir, until


def test_service_and_bonding_config():
    r = Rig()
    cfg = r.fake.settings
    equal((cfg["bond"], cfg["le_secure"]), (True, True), "bonding with LE secure connections")
    check(cfg["mtu"] >= 30, "MTU too small for the frames")
    equal(r.fake.central_read(ble_link.INFO_UUID), frames.device_info(PID), "device info")
    flags = r.fake.flags
    equal(flags[r.fake.by_uuid[ble_link.EVENT_UUID]], 0x0002 | 0x0020, "event read+indicate")
    equal(flags[r.fake.by_uuid[ble_link.CONFIRM_UUID]], 0x0008, "confirm write")
    equal(flags[r.fake.by_uuid[ble_link.FEEDBACK_UUID]], 0x0008, "feedback write")


def test_write_buffers_hold_whole_frames():
    # Without gatts_set_buffer a board keeps 20 bytes of a write: every Confirm (21) and Feedback (24) would fail.
    r = Rig()
    r.fake.central_connect()
    frame = bytes(range(24))
    r.fake.central_write(ble_link.FEEDBACK_UUID, frame)
    equal(r.link.pop_write(), (ble_link.WRITE_FEEDBACK, frame), "whole feedback frame")
    r.fake.central_write(ble_link.CONFIRM_UUID, frame[:21])
    equal(r.link.pop_write(), (ble_link.WRITE_CONFIRM, frame[:21]), "whole confirm frame")


def test_advert_carries_service_uuid():
    adv = ble_link.advert(ble_link.SERVICE_UUID)
    check(len(adv) <= 31, "advert too long")
    equal(adv[3:5], b"\x11\x07", "complete 128-bit list")
    equal(bytes(reversed(adv[5:])).hex(), ble_link.SERVICE_UUID.replace("-", ""), "uuid little-endian")


def test_fast_and_slow_advertising():
    r = Rig()
    r.link.advertise(True)
    r.link.advertise(False)
    equal([i for i, _ in r.fake.adverts], [30_000, 1_000_000], "intervals")


def test_second_central_refused_and_foreign_writes_ignored():
    r = Rig()
    r.fake.central_connect(5)
    r.fake.handler(1, (6, 0, b"\x00" * 6))  # another central while connected
    equal(r.fake.refused, [6], "second central refused")
    r.fake.central_write(ble_link.CONFIRM_UUID, b"x", conn=6)
    equal(r.link.pop_write(), None, "write from a stranger's connection")
    r.fake.central_write(ble_link.CONFIRM_UUID, b"ok")
    equal(r.link.pop_write(), (ble_link.WRITE_CONFIRM, b"ok"), "confirm write queued")


def test_write_queue_bounded_keeps_newest():
    r = Rig()
    r.fake.central_connect()
    for i in range(10):
        r.fake.central_write(ble_link.FEEDBACK_UUID, bytes((i,)))
    got = []
    w = r.link.pop_write()
    while w is not None:
        got.append(w[1][0])
        w = r.link.pop_write()
    equal(got, [6, 7, 8, 9], "newest kept")


def test_indicate_without_connection_is_refused():
    r = Rig()
    equal(r.link.indicate(b"frame"), False, "no hub")
    equal(r.fake.central_read(ble_link.EVENT_UUID), b"frame", "value readable anyway")


def test_secrets_persist_and_survive_torn_file():
    root = tmpdir()
    s = ble_link.Secrets(root + "/bonds")
    s.set(1, b"peer-a", b"ltk-a")
    s.set(2, b"peer-a", b"irk-a")
    s.set(1, b"peer-b", b"ltk-b")
    equal(ble_link.Secrets(root + "/bonds").get(1, 0, b"peer-b"), None, "set() alone writes nothing")
    s.save()
    s2 = ble_link.Secrets(root + "/bonds")
    equal(s2.get(1, 0, b"peer-b"), b"ltk-b", "by key")
    equal(s2.get(1, 1, None), b"ltk-b", "by index")
    equal(s2.get(3, 0, None), None, "missing")
    equal(s2.set(1, b"peer-a", None), True, "deleted")
    equal(s2.set(1, b"peer-a", None), False, "nothing left to delete")
    s2.save()
    equal(ble_link.Secrets(root + "/bonds").get(1, 0, b"peer-a"), None, "deleted")
    with open(root + "/bonds", "ab") as f:
        f.write(b"\x01\x09abc")  # a torn record
    equal(ble_link.Secrets(root + "/bonds").get(1, 0, b"peer-b"), b"ltk-b", "good records kept")


def test_irq_secret_round_trip():
    r = Rig()
    r.fake.handler(30, (1, b"peer", b"value"))
    equal(r.fake.handler(29, (1, 0, b"peer")), b"value", "stack gets the bond key back")


def test_fake_radio_refuses_flash_io_inside_the_irq():
    # The guard the next tests rely on: a handler that opens a file while the stack is in its IRQ fails.
    del bluetooth.irq_file_access[:]
    fake = bluetooth.BLE()
    path = tmpdir() + "/x"

    def handler(event, data):
        with open(path, "wb") as f:
            f.write(b"x")

    fake.irq(handler)
    try:
        fake.handler(30, (1, b"k", b"v"))
        raise Failed("open() inside the IRQ went through")
    except OSError:
        pass
    equal(bluetooth.irq_file_access, [("ble 30", path)], "recorded")
    with open(path, "wb") as f:  # outside the IRQ, files work
        f.write(b"x")
    pin = machine.Pin(5, machine.Pin.IN, machine.Pin.PULL_UP)  # and a pin's IRQ handler is guarded the same way
    pin.irq(lambda p: handler(0, None))
    try:
        pin.drive(0)
        raise Failed("open() inside a pin IRQ went through")
    except OSError:
        pass
    equal(bluetooth.irq_file_access[-1], ("pin 5", path), "recorded")
    del bluetooth.irq_file_access[:]


async def test_bond_keys_reach_flash_from_the_keeper_task_not_the_irq():
    del bluetooth.irq_file_access[:]
    r = Rig()
    keeper = asyncio.create_task(r.link.keep_secrets())
    r.fake.central_connect()
    r.fake.handler(30, (1, b"peer", b"ltk"))  # what NimBLE does when pairing completes
    r.fake.handler(30, (2, b"peer", b"irk"))
    equal(bluetooth.irq_file_access, [], "the IRQ handler opened a file")
    equal(r.fake.handler(29, (1, 0, b"peer")), b"ltk", "answered from RAM at once")
    await until(lambda: ble_link.Secrets(r.root + "/bonds").get(2, 0, b"peer") == b"irk")
    equal(ble_link.Secrets(r.root + "/bonds").get(1, 0, b"peer"), b"ltk", "both records on flash")
    r.fake.handler(30, (1, b"peer", None))  # the hub unpaired
    await until(lambda: ble_link.Secrets(r.root + "/bonds").get(1, 0, b"peer") is None)
    keeper.cancel()
    equal(bluetooth.irq_file_access, [], "the IRQ handler opened a file")


async def test_bond_keys_from_the_last_moment_are_saved_before_sleep():
    from support import fast_timings

    del bluetooth.irq_file_access[:]
    r = Rig(timings=fast_timings(awake_ms=0))
    r.fake.central_connect()
    r.fake.handler(30, (1, b"peer", b"ltk"))
    await r.pendant.run(r.link)  # nothing to do: it returns (deep sleep next), flushing what RAM holds
    equal(ble_link.Secrets(r.root + "/bonds").get(1, 0, b"peer"), b"ltk", "saved before sleep")
    equal(bluetooth.irq_file_access, [], "the IRQ handler opened a file")


def test_no_attribute_needs_encryption_and_writes_always_succeed():
    # docs/protocol.md §9.4: the frames carry their own tags; a failed pairing must never stop a call for help.
    r = Rig()
    r.fake.central_connect()  # never encrypted
    equal(r.fake.central_read_att(ble_link.INFO_UUID), (0, frames.device_info(PID)), "device info")
    equal(r.fake.central_read_att(ble_link.EVENT_UUID), (0, b""), "event before any event")
    equal(r.fake.central_write(ble_link.CONFIRM_UUID, b"garbage"), 0, "a bad confirm still succeeds at the ATT layer")
    equal(r.fake.central_write(ble_link.FEEDBACK_UUID, bytes(24)), 0, "a bad feedback too")
    equal(r.fake.central_read_att(ble_link.CONFIRM_UUID)[0], bluetooth.ATT_READ_NOT_PERMITTED, "confirm is write-only")


def test_fake_radio_enforces_encryption_flags():
    # The guard the test above relies on: an attribute registered with an encryption flag is refused until encrypted.
    fake = bluetooth.BLE()
    fake.irq(lambda event, data: None)
    flags = bluetooth.FLAG_READ | bluetooth.FLAG_WRITE | bluetooth.FLAG_READ_ENCRYPTED | bluetooth.FLAG_WRITE_ENCRYPTED
    fake.gatts_register_services(((bluetooth.UUID("1234"), ((bluetooth.UUID("5678"), flags),)),))
    fake.central_connect()
    equal(fake.central_write("5678", b"x"), bluetooth.ATT_INSUFFICIENT_ENCRYPTION, "write refused")
    equal(fake.central_read_att("5678")[0], bluetooth.ATT_INSUFFICIENT_ENCRYPTION, "read refused")
    fake.encrypt()
    equal(fake.central_write("5678", b"x"), 0, "write after encryption")
    equal(fake.central_read_att("5678"), (0, b"x"), "read after encryption")
