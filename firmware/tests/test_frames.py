# The frame codec on its own; the cross-interpreter checks against protocols.pendant live in pytest.
import frames
from support import KEY, PID, check, confirm, equal, feedback, parse_event


def test_event_layout():
    f = frames.event_frame(KEY, PID, frames.EV_PRESS, 0x01020304, 77, 0x0A0B0C0D)
    equal(len(f), 27, "length")
    equal(f[:11], b"\x01\x01\x04\x03\x02\x01\x4d\x0d\x0c\x0b\x0a", "header")
    equal(frames.event_counter(f), 0x01020304, "counter")


def test_event_tag_covers_id_and_key():
    a = frames.event_frame(KEY, PID, frames.EV_PRESS, 1, 50, 0)
    check(a != frames.event_frame(KEY, b"pendant-02", frames.EV_PRESS, 1, 50, 0), "id not covered")
    check(a != frames.event_frame(bytes(32), PID, frames.EV_PRESS, 1, 50, 0), "key not covered")


def test_battery_out_of_range_is_unknown():
    equal(parse_event(frames.event_frame(KEY, PID, frames.EV_PRESS, 1, 0xFF, 0))[3], 0xFF, "unknown")
    equal(parse_event(frames.event_frame(KEY, PID, frames.EV_PRESS, 1, 150, 0))[3], 0xFF, "clamped to unknown")


def test_counter_zero_refused():
    try:
        frames.event_frame(KEY, PID, frames.EV_PRESS, 0, 50, 0)
    except ValueError:
        return
    raise AssertionError("counter 0 accepted")


def test_confirm_accepts_authentic_only():
    good = confirm(42)
    equal(frames.confirm_counter(KEY, PID, good), 42, "authentic")
    bad = bytearray(good)
    bad[1] ^= 1
    equal(frames.confirm_counter(KEY, PID, bytes(bad)), 0, "altered counter")
    equal(frames.confirm_counter(KEY, PID, confirm(42, key=bytes(32))), 0, "other key")
    equal(frames.confirm_counter(KEY, PID, confirm(42, pid=b"x")), 0, "other pendant")
    equal(frames.confirm_counter(KEY, PID, good[:-1]), 0, "short")
    equal(frames.confirm_counter(KEY, PID, b"\x02" + good[1:]), 0, "version")
    # A Feedback's tag over the same bytes is not a Confirm's (labels differ).
    equal(frames.confirm_counter(KEY, PID, b""), 0, "empty")


def test_feedback_accepts_authentic_only():
    good = feedback(frames.FB_ANSWERED, 7, 3)
    equal(frames.feedback(KEY, PID, good), (frames.FB_ANSWERED, 7, 3), "authentic")
    equal(frames.feedback(KEY, PID, feedback(frames.FB_ANSWERED, 7, 3, key=bytes(32))), None, "other key")
    equal(frames.feedback(KEY, PID, feedback(99, 7, 3)), None, "unknown state")
    forged = bytearray(good)
    forged[1] = frames.FB_CANCELLED
    equal(frames.feedback(KEY, PID, bytes(forged)), None, "state changed")


def test_check_id_and_device_info():
    check(frames.check_id(b"a-Z_0.9:x"), "valid id")
    check(not frames.check_id(b""), "empty")
    check(not frames.check_id(b"x" * 33), "too long")
    check(not frames.check_id(b"bad id"), "space")
    equal(frames.device_info(PID), b"\x01\x0a" + PID, "device info")


def test_protocol_md_vectors():
    # docs/protocol.md §9.5: key 00..1f, pendant id "pendant-0001".
    key = bytes(range(32))
    pid = b"pendant-0001"
    equal(
        frames.event_frame(key, pid, frames.EV_PRESS, 42, 87, 3600).hex(),
        "01012a00000057100e0000b43673dd3ad64ca3b3313dd30947339b",
        "event",
    )
    equal(frames.confirm_counter(key, pid, bytes.fromhex("012a00000062c56b9ef81b74eae07668cdaf8a6800")), 42, "confirm")
    equal(
        frames.feedback(key, pid, bytes.fromhex("01012a00000000008addf1969099d0a9b303ed57b916af64")),
        (frames.FB_HELP_CALLED, 42, 0),
        "feedback",
    )
    equal(frames.device_info(pid).hex(), "010c70656e64616e742d30303031", "device info")
