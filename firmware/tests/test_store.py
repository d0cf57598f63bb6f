# Counter and key persistence across simulated reboots, crashes and corruption.
import os

import frames
import store
from support import KEY, PID, check, equal, tmpdir


def _reboot(root):
    return store.Store(root)


def _corrupt(root, name):
    path = root + "/" + name
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[3] ^= 0x40
    with open(path, "wb") as f:
        f.write(data)


def test_not_provisioned_when_empty():
    s = store.Store(tmpdir())
    check(not s.provisioned, "provisioned without a key")


def test_provision_and_counters_unique_across_reboots():
    root = tmpdir()
    store.provision(root, PID, KEY)
    seen = set()
    last = 0
    for boot in range(5):
        s = _reboot(root)
        equal(s.pendant_id, PID, "id")
        equal(s.key, KEY, "key")
        for _ in range(7 + boot * 5):  # crosses block boundaries at different points
            c = s.next_counter()
            check(c not in seen and c > last, "counter reused or not increasing", c)
            seen.add(c)
            last = c
    check(min(seen) == 1, "first counter is 1")


def test_crash_after_reservation_skips_at_most_a_block():
    root = tmpdir()
    store.provision(root, PID, KEY)
    s = _reboot(root)
    used = [s.next_counter() for _ in range(3)]  # reserved 1..16, used 1..3, then the battery is pulled
    s2 = _reboot(root)
    c = s2.next_counter()
    check(c > used[-1], "reuse after crash", c)
    check(c <= used[-1] + store.BLOCK, "skipped more than a block", c)


def test_torn_slot_write_recovers_ahead():
    root = tmpdir()
    store.provision(root, PID, KEY)
    s = _reboot(root)
    used = [s.next_counter() for _ in range(40)]
    # The slot written last is torn (half written when power failed).
    newest = store._SLOT_FILES[s._slot]
    with open(root + "/" + newest, "wb") as f:
        f.write(b"PC\x01")
    s2 = _reboot(root)
    check(s2.recovered, "not flagged recovered")
    c = s2.next_counter()
    check(c > used[-1], "reused a counter after a torn slot", c, used[-1])


def test_corrupt_newest_slot_jumps_past_everything_used():
    root = tmpdir()
    store.provision(root, PID, KEY)
    s = _reboot(root)
    used = [s.next_counter() for _ in range(store.BLOCK * 3)]  # the newest slot covers the last block
    _corrupt(root, store._SLOT_FILES[s._slot])
    s2 = _reboot(root)
    check(s2.next_counter() > used[-1], "reused after bit rot in the newest slot")
    # Recovery was persisted: a further reboot does not go back.
    s3 = _reboot(root)
    check(s3.next_counter() > used[-1], "recovery not persisted")


def test_both_slots_lost_jumps_from_floor_and_persists_it():
    root = tmpdir()
    store.provision(root, PID, KEY)
    s = _reboot(root)
    used = [s.next_counter() for _ in range(100)]
    for name in store._SLOT_FILES:
        os.remove(root + "/" + name)
    s2 = _reboot(root)
    check(s2.recovered and s2.provisioned, "still provisioned, recovered")
    first = s2.next_counter()
    check(first > used[-1], "reused after losing both slots")
    check(first >= store.LOST_JUMP, "jump too small", first)
    more = [s2.next_counter() for _ in range(50)]
    # A second total loss jumps again, from the floor the first one wrote.
    for name in store._SLOT_FILES:
        _corrupt(root, name)
    s3 = _reboot(root)
    check(s3.next_counter() > more[-1], "second total loss reused a counter")


def test_corrupt_key_file_means_not_provisioned():
    root = tmpdir()
    store.provision(root, PID, KEY)
    _corrupt(root, store._KEY_FILE)
    s = _reboot(root)
    check(not s.provisioned, "corrupt key accepted")
    equal(s.key, None, "key")


def test_key_survives_crash_between_write_and_rename():
    root = tmpdir()
    store.provision(root, PID, KEY)
    os.rename(root + "/" + store._KEY_FILE, root + "/" + store._KEY_FILE + ".new")
    s = _reboot(root)
    equal(s.key, KEY, "key from the new file")


def test_reprovision_never_goes_back():
    root = tmpdir()
    store.provision(root, PID, KEY)
    s = _reboot(root)
    used = [s.next_counter() for _ in range(20)]
    store.provision(root, PID, bytes(32))  # re-paired with a new key, asked to start at 1
    s2 = _reboot(root)
    equal(s2.key, bytes(32), "new key")
    check(s2.next_counter() > used[-1], "re-provisioning reused a counter")


def test_provision_validates():
    root = tmpdir()
    for pid, key in ((PID, b"short"), (b"bad id!", KEY), (b"", KEY)):
        try:
            store.provision(root, pid, key)
        except ValueError:
            continue
        raise AssertionError("accepted %r" % (pid,))


def test_flags_persist():
    root = tmpdir()
    store.provision(root, PID, KEY)
    s = _reboot(root)
    s.set_flags(store.FLAG_BATTERY_LOW_SENT)
    c = s.next_counter()
    s2 = _reboot(root)
    equal(s2.flags, store.FLAG_BATTERY_LOW_SENT, "flags")
    check(s2.next_counter() > c, "flags write moved the counter back")


def test_counters_stop_below_the_ceiling_which_only_rekey_uses():
    root = tmpdir()
    top = frames.COUNTER_CEILING
    store.provision(root, PID, KEY, first_counter=top - 3)
    s = _reboot(root)
    equal([s.next_counter() for _ in range(3)], [top - 3, top - 2, top - 1], "last ordinary counters")
    check(s.exhausted, "exhausted at the ceiling")
    try:
        s.next_counter()
        raise AssertionError("a counter at or above the ceiling was handed out")
    except store.CounterExhausted:
        pass
    equal(s.rekey_counter(), top, "the ceiling is the REKEY counter")
    equal(s.last_issued, top, "REKEY counted as sent")
    equal(s.rekey_counter(), top, "idempotent")
    s2 = _reboot(root)  # after a reboot: still exhausted, the REKEY counter may have been sent
    check(s2.exhausted, "still exhausted after a reboot")
    equal(s2.last_issued, top, "never above the ceiling")
    equal(s2.rekey_counter(), top, "the same REKEY counter")


def test_recovery_jumps_never_pass_the_ceiling():
    root = tmpdir()
    store.provision(root, PID, KEY, first_counter=frames.COUNTER_CEILING - 100)
    s = _reboot(root)
    s.next_counter()
    for name in store._SLOT_FILES:  # both slots lost: the jump of 2**20 would pass 2**32
        os.remove(root + "/" + name)
    s2 = _reboot(root)
    check(s2.recovered and s2.exhausted, "jumped to the ceiling")
    equal(s2.last_issued, frames.COUNTER_CEILING, "clamped: 2**32-1 is never reached")
    _corrupt(root, store._SLOT_FILES[s2._slot])  # one slot corrupt on top: MARGIN past the other, clamped too
    equal(_reboot(root).last_issued, frames.COUNTER_CEILING, "clamped after a one-slot recovery")


def test_a_new_key_restarts_an_exhausted_counter_the_same_key_does_not():
    root = tmpdir()
    store.provision(root, PID, KEY, first_counter=frames.COUNTER_CEILING - 1)
    s = _reboot(root)
    s.next_counter()
    s.rekey_counter()
    store.provision(root, PID, KEY)  # the same key again: never back, still exhausted
    check(_reboot(root).exhausted, "same key reset the counter")
    store.provision(root, PID, bytes(32))  # re-keyed
    s2 = _reboot(root)
    equal(s2.key, bytes(32), "new key")
    check(not s2.exhausted, "still exhausted after re-keying")
    equal(s2.next_counter(), 1, "a new key starts at 1")
    # Below the re-key point a new key continues the counter instead (any hub accepts that).
    s2.next_counter()
    store.provision(root, PID, KEY)
    check(_reboot(root).next_counter() > 2, "went back below the re-key point")


def test_provision_refuses_a_first_counter_at_the_ceiling():
    for first in (0, frames.COUNTER_CEILING, frames.COUNTER_CEILING + 1):
        try:
            store.provision(tmpdir(), PID, KEY, first_counter=first)
        except ValueError:
            continue
        raise AssertionError("accepted first_counter %d" % first)
