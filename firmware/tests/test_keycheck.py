# The Key Check characteristic (docs/protocol.md §9.7): the hub's challenge at pairing is answered with a tag under
# the pendant's key and id, indicated and left readable; a malformed challenge is ignored; nothing else changes.
import asyncio

import ble_link
import frames
from support import KEY, PID, Rig, check, equal, sign, until

CHALLENGE = b"\x01" + bytes(range(0xA0, 0xA8))


async def _answered(r, challenge, before):
    r.fake.central_write(ble_link.KEY_CHECK_UUID, challenge)
    await until(lambda: not r.link._writes)  # the receiver took the write and acted in the same step
    return r.fake.indications[before:]


def test_key_check_characteristic_registered():
    r = Rig()
    flags = r.fake.flags[r.fake.by_uuid[ble_link.KEY_CHECK_UUID]]
    equal(flags, 0x0002 | 0x0008 | 0x0020, "key check read+write+indicate")
    equal(r.fake.central_read(ble_link.KEY_CHECK_UUID), b"", "no answer before a challenge")


async def test_challenge_answered_with_tag_under_the_key():
    r = Rig()
    task = asyncio.create_task(r.pendant.run(r.link))
    r.fake.central_connect()
    new = await _answered(r, CHALLENGE, len(r.fake.indications))
    want = sign(b"K", CHALLENGE)
    handle = r.fake.by_uuid[ble_link.KEY_CHECK_UUID]
    equal([(h, v) for _, h, v in new], [(handle, want)], "answer indicated on Key Check")
    equal(r.fake.central_read(ble_link.KEY_CHECK_UUID), want, "answer readable")
    check(want != sign(b"K", CHALLENGE, key=bytes(32)), "another key gives another answer")
    check(want != sign(b"E", CHALLENGE), "the label keeps the answer from being any other frame's tag")
    equal(r.pendant.pending, [], "a challenge queues no event")
    task.cancel()


async def test_malformed_challenges_ignored():
    r = Rig()
    task = asyncio.create_task(r.pendant.run(r.link))
    r.fake.central_connect()
    for bad in (b"", CHALLENGE[:-1], CHALLENGE + b"\x00", b"\x02" + CHALLENGE[1:]):
        new = await _answered(r, bad, len(r.fake.indications))
        equal(new, [], "nothing indicated for %r" % bad)
    # the stack keeps whatever the central wrote as the value; the pendant answered nothing
    equal(r.pendant.on_write(ble_link.WRITE_KEY_CHECK, b"\x02" + CHALLENGE[1:]), False, "not acted on")
    task.cancel()


def test_key_answer_frame():
    equal(frames.key_answer(KEY, PID, CHALLENGE), sign(b"K", CHALLENGE), "version | nonce | tag")
    equal(frames.key_answer(KEY, PID, CHALLENGE[:8]), None, "short")


async def test_refused_indication_leaves_the_answer_readable():
    # NimBLE allows one unconfirmed indication per link: while an Event indication waits, the answer is still set.
    r = Rig()
    r.fake.auto_ack = False
    task = asyncio.create_task(r.pendant.run(r.link))
    r.fake.central_connect()
    real = r.fake.gatts_indicate

    def busy(conn, handle, data=None):
        if handle == r.fake.by_uuid[ble_link.KEY_CHECK_UUID]:
            raise OSError(114)  # EALREADY
        return real(conn, handle, data)

    r.fake.gatts_indicate = busy
    new = await _answered(r, CHALLENGE, len(r.fake.indications))
    equal(new, [], "no indication went out")
    equal(r.fake.central_read(ble_link.KEY_CHECK_UUID), sign(b"K", CHALLENGE), "answer readable")
    task.cancel()
