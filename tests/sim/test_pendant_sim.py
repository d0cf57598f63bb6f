"""The simulated panic pendant seen from the hub's side: bleak over the sim backend, on an in-process link."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bleak import BleakClient
from hypothesis import given
from hypothesis import strategies as st

import sim.ble
from protocols.errors import AuthenticationError, DecodeError, ReplayError
from protocols.pendant import (
    CONFIRM_CHAR_UUID,
    COUNTER_CEILING,
    DEVICE_INFO_CHAR_UUID,
    EVENT_CHAR_UUID,
    FEEDBACK_CHAR_UUID,
    KEY_CHECK_CHAR_UUID,
    SERVICE_UUID,
    ConfirmFrame,
    DeviceInfo,
    FeedbackFrame,
    FeedbackState,
    PendantCounterState,
    PendantEvent,
    PendantEventType,
    PendantVerifier,
    compute_tag,
)
from sim.clock import ManualClock
from sim.devices.options import DeviceOptions
from sim.devices.pendant import PATTERNS, CounterExhaustedError, Pendant, Refusal, Shown, Written
from sim.devices.pendant_state import PendantState

_links = itertools.count()
START = datetime(2024, 3, 4, 18, 20, tzinfo=UTC)
KEY = bytes(range(32))
STRANGER_KEY = bytes(range(100, 132))
ADDRESS = "C0:00:00:00:00:0A"
EVENT = str(EVENT_CHAR_UUID)
CONFIRM = str(CONFIRM_CHAR_UUID)
FEEDBACK = str(FEEDBACK_CHAR_UUID)


class Hub:
    def __init__(self, link: str) -> None:
        self.link = link
        self.scanner, self.client = sim.ble.backend_for(link)

    def connect(self, pendant: Pendant, *, pair: bool = True) -> BleakClient:
        return BleakClient(pendant.options.address, backend=self.client, pair=pair, timeout=10)


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    link = f"local:pendant{next(_links)}"
    async with sim.ble.open_central(link):
        yield Hub(link)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


def pendant_options(**overrides: object) -> DeviceOptions:
    base: dict[str, object] = {"id": "pendant-1", "address": ADDRESS, "name": "Care", "key": KEY, "battery": 80}
    base.update(overrides)
    return DeviceOptions(**base)  # type: ignore[arg-type]


@asynccontextmanager
async def running(pendant: Pendant, hub: Hub) -> AsyncIterator[Pendant]:
    async with (
        sim.ble.open_peripheral_device(hub.link, pendant.options.address, pendant.options.name) as bumble_device,
        pendant.attach(bumble_device),
    ):
        yield pendant


class Inbox:
    """Indications received by the hub, awaited without sleeping."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.received = 0

    def __call__(self, _char: object, data: bytearray) -> None:
        self.received += 1
        self.queue.put_nowait(bytes(data))

    async def next(self) -> bytes:
        async with asyncio.timeout(10):
            return await self.queue.get()


def confirm(counter: int, key: bytes = KEY) -> bytes:
    return bytes(ConfirmFrame(counter).sign(ADDRESS, key))


def feedback(state: FeedbackState, counter: int, seq: int, key: bytes = KEY) -> bytes:
    return bytes(FeedbackFrame(state, counter, seq).sign(ADDRESS, key))


async def ignored(pendant: Pendant, client: BleakClient, uuid: str, data: bytes) -> Refusal:
    """Write ``data``: the write succeeds at the ATT layer (as on the firmware); return why the pendant ignored it."""
    before = len(pendant.rejected)
    await client.write_gatt_char(uuid, data, response=True)
    assert len(pendant.rejected) == before + 1, "the write was acted on"
    return pendant.rejected[-1].refusal


async def repeat_once(pendant: Pendant, clock: ManualClock, inbox: Inbox) -> bytes:
    """Once the pendant has the hub's ATT confirmation of everything received and waits to repeat, let one
    re-indication interval pass on the clock and return what the hub receives."""
    await pendant.wait_for(lambda: len(pendant.indications) == inbox.received and pendant.repeat_armed)
    await clock.advance(pendant.repeat_seconds)
    return await inbox.next()


async def test_service_surface_and_device_info(hub: Hub, clock: ManualClock) -> None:
    pendant = Pendant(pendant_options(), clock)
    async with running(pendant, hub):
        await pendant.press("checkin")
        await pendant.wait_for(lambda: pendant.advertising)
        async with hub.connect(pendant) as client:
            service = client.services.get_service(str(SERVICE_UUID))
            assert service is not None
            props = {c.uuid: set(c.properties) for c in service.characteristics}
            assert props == {
                EVENT: {"read", "indicate"},
                CONFIRM: {"write"},
                FEEDBACK: {"write"},
                str(DEVICE_INFO_CHAR_UUID): {"read"},
                str(KEY_CHECK_CHAR_UUID): {"read", "write", "indicate"},
            }
            info = DeviceInfo.from_bytes(bytes(await client.read_gatt_char(str(DEVICE_INFO_CHAR_UUID))))
            assert info == DeviceInfo(ADDRESS)


async def test_a_press_is_indicated_repeated_until_confirmed_then_stops(hub: Hub, clock: ManualClock) -> None:
    pendant = Pendant(pendant_options(), clock)
    verifier = PendantVerifier(ADDRESS, KEY)
    async with running(pendant, hub):
        produced = await pendant.press("press")
        assert produced.sequence == 1
        await pendant.wait_for(lambda: pendant.advertising)
        inbox = Inbox()
        async with hub.connect(pendant) as client:
            await client.start_notify(EVENT, inbox)
            first = await inbox.next()
            assert first == produced.raw
            verified = verifier.verify(first)
            assert not verified.repeat
            assert verified.event.event is PendantEventType.PRESS
            assert (verified.event.counter, verified.event.battery) == (1, 80)

            second = await repeat_once(pendant, clock, inbox)
            assert second == first
            assert verifier.verify(second).repeat

            assert await ignored(pendant, client, CONFIRM, confirm(1, STRANGER_KEY)) is Refusal.NOT_AUTHENTIC
            assert pendant.pending == [1]
            assert await repeat_once(pendant, clock, inbox) == first

            await client.write_gatt_char(CONFIRM, confirm(1), response=True)
            assert await pendant.wait_confirmed(1) == clock.now()
            assert pendant.confirmed_at == {1: clock.now()}
            assert pendant.pending == []
            sent = len(pendant.indications_of(1))
            await clock.advance(pendant.repeat_seconds * 5)
            await client.read_gatt_char(str(DEVICE_INFO_CHAR_UUID))  # a round trip after any repeat
            assert inbox.queue.empty()
            assert len(pendant.indications_of(1)) == sent == 3
            assert [r.characteristic for r in pendant.rejected] == [Written.CONFIRM]


async def test_events_wait_in_order_and_a_confirm_covers_every_earlier_counter(hub: Hub, clock: ManualClock) -> None:
    pendant = Pendant(pendant_options(), clock)
    verifier = PendantVerifier(ADDRESS, KEY)
    async with running(pendant, hub):
        press = await pendant.press(PendantEventType.PRESS)
        cancel = await pendant.press(PendantEventType.CANCEL)
        checkin = await pendant.press("checkin")
        await pendant.wait_for(lambda: pendant.advertising)
        inbox = Inbox()
        async with hub.connect(pendant) as client:
            assert bytes(await client.read_gatt_char(EVENT)) == press.raw  # the oldest unconfirmed
            await client.start_notify(EVENT, inbox)
            assert verifier.verify(await inbox.next()).event.counter == 1
            await client.write_gatt_char(CONFIRM, confirm(1), response=True)
            assert await inbox.next() == cancel.raw
            await client.write_gatt_char(CONFIRM, confirm(3), response=True)  # covers 2 and 3
            assert pendant.pending == []
            assert set(pendant.confirmed_at) == {1, 2, 3}
            assert checkin.sequence == 3
            assert bytes(await client.read_gatt_char(EVENT)) == cancel.raw  # the last one that was the oldest
            # confirming again (a crossed repeat) or an older counter (a replay) changes nothing, as on the firmware
            await client.write_gatt_char(CONFIRM, confirm(3), response=True)
            await client.write_gatt_char(CONFIRM, confirm(2), response=True)
            assert pendant.duplicate_confirms == 2
            assert await ignored(pendant, client, CONFIRM, confirm(4)) is Refusal.STALE  # never sent
            assert await ignored(pendant, client, CONFIRM, b"\x01\x02") is Refusal.NOT_AUTHENTIC
            assert [r.refusal for r in pendant.rejected] == [Refusal.STALE, Refusal.NOT_AUTHENTIC]


async def test_feedback_becomes_a_pattern_forged_or_stale_feedback_does_not(hub: Hub, clock: ManualClock) -> None:
    pendant = Pendant(pendant_options(), clock)
    async with running(pendant, hub):
        await pendant.press("press")
        await pendant.wait_for(lambda: pendant.advertising)
        inbox = Inbox()
        async with hub.connect(pendant) as client:
            await client.start_notify(EVENT, inbox)
            await inbox.next()
            await client.write_gatt_char(CONFIRM, confirm(1), response=True)
            help_called = feedback(FeedbackState.HELP_CALLED, 1, 0)
            await client.write_gatt_char(FEEDBACK, help_called, response=True)
            at = clock.now()
            assert pendant.patterns == [Shown(at, FeedbackState.HELP_CALLED, PATTERNS[FeedbackState.HELP_CALLED])]
            assert pendant.patterns[0].pattern.led.startswith("red")

            forged = feedback(FeedbackState.ANSWERED, 1, 1, STRANGER_KEY)
            assert await ignored(pendant, client, FEEDBACK, forged) is Refusal.NOT_AUTHENTIC
            assert await ignored(pendant, client, FEEDBACK, help_called) is Refusal.STALE  # replayed
            never_sent = feedback(FeedbackState.ANSWERED, 2, 0)
            assert await ignored(pendant, client, FEEDBACK, never_sent) is Refusal.STALE
            assert len(pendant.patterns) == 1

            await clock.advance(30)
            answered = feedback(FeedbackState.ANSWERED, 1, 1)
            await client.write_gatt_char(FEEDBACK, answered, response=True)
            assert [(s.at, s.state) for s in pendant.patterns] == [
                (at, FeedbackState.HELP_CALLED),
                (clock.now(), FeedbackState.ANSWERED),
            ]
            assert pendant.showing is FeedbackState.ANSWERED
        assert [(r.characteristic, r.refusal) for r in pendant.rejected] == [
            (Written.FEEDBACK, Refusal.NOT_AUTHENTIC),
            (Written.FEEDBACK, Refusal.STALE),
            (Written.FEEDBACK, Refusal.STALE),
        ]

        await pendant.reboot()  # the floor is now (own counter, 0xFFFF): the old "answered" cannot be replayed
        await pendant.press("checkin")
        await pendant.wait_for(lambda: pendant.advertising)
        async with hub.connect(pendant) as client:
            assert await ignored(pendant, client, FEEDBACK, answered) is Refusal.STALE
            await client.write_gatt_char(FEEDBACK, feedback(FeedbackState.CHECKIN_OK, 2, 0), response=True)
        assert [s.state for s in pendant.patterns][-1] is FeedbackState.CHECKIN_OK
        assert len(pendant.patterns) == 3


async def test_counters_survive_reboots_and_a_new_object_on_the_same_state_file(
    hub: Hub, clock: ManualClock, tmp_path: Path
) -> None:
    state = tmp_path / "pendant-1.json"
    pendant = Pendant(pendant_options(), clock, state_file=state)
    verifier = PendantVerifier(ADDRESS, KEY)
    async with running(pendant, hub):
        first = await pendant.press("press")
        second = await pendant.press("cancel")
        await clock.advance(600)
        await pendant.reboot()
        assert pendant.pending == []  # RAM is lost ...
        assert pendant.uptime_seconds == 0
        third = await pendant.press("press")  # ... the counter is not
        assert [first.sequence, second.sequence, third.sequence] == [1, 2, 3]
        await pendant.wait_for(lambda: pendant.advertising)
        inbox = Inbox()
        async with hub.connect(pendant) as client:
            await client.start_notify(EVENT, inbox)
            verifier.verify(first.raw)
            verifier.verify(second.raw)
            verified = verifier.verify(await inbox.next())
            assert (verified.repeat, verified.event.counter, verified.event.uptime_seconds) == (False, 3, 0)
    reborn = Pendant(pendant_options(), clock, state_file=state)
    assert reborn.counter == 3
    async with running(reborn, hub):
        fourth = await reborn.press("checkin")
    assert fourth.sequence == 4
    assert not verifier.verify(fourth.raw).repeat


async def test_battery_below_20_percent_raises_battery_low_once_per_discharge(hub: Hub, clock: ManualClock) -> None:
    pendant = Pendant(pendant_options(battery=25), clock)
    verifier = PendantVerifier(ADDRESS, KEY)
    async with running(pendant, hub):
        assert await pendant.set_battery_level(21) is None
        low = await pendant.set_battery_level(15)
        assert low is not None
        assert low.values == {"event": "battery_low", "counter": 1, "battery": 15}
        assert await pendant.set_battery_level(10) is None  # same discharge
        pendant.change_battery()
        pendant.set_battery(12)  # a drain, not awaited: the pendant notices by itself
        await pendant.wait_for(lambda: pendant.counter == 2)
        await pendant.wait_for(lambda: pendant.advertising)
        inbox = Inbox()
        async with hub.connect(pendant) as client:
            await client.start_notify(EVENT, inbox)
            event = verifier.verify(await inbox.next()).event
            assert (event.event, event.battery) == (PendantEventType.BATTERY_LOW, 15)
            await client.write_gatt_char(CONFIRM, confirm(1), response=True)
            event = verifier.verify(await inbox.next()).event
            assert (event.event, event.counter, event.battery) == (PendantEventType.BATTERY_LOW, 2, 12)


async def test_a_strangers_key_cannot_make_frames_the_hub_accepts(hub: Hub, clock: ManualClock) -> None:
    stranger = Pendant(pendant_options(key=STRANGER_KEY), clock)  # same address and id, another key
    verifier = PendantVerifier(ADDRESS, KEY)
    async with running(stranger, hub):
        produced = await stranger.press("cancel")
        await stranger.wait_for(lambda: stranger.advertising)
        inbox = Inbox()
        async with hub.connect(stranger) as client:
            await client.start_notify(EVENT, inbox)
            raw = await inbox.next()
    assert raw == produced.raw
    with pytest.raises(AuthenticationError):
        verifier.verify(raw)
    assert PendantEvent.from_bytes(raw).tag_valid(ADDRESS, STRANGER_KEY)
    assert verifier.last_counter == 0


@pytest.mark.parametrize("bonding_required", [False, True])
async def test_everything_works_on_an_unencrypted_link_as_on_the_firmware(
    hub: Hub, clock: ManualClock, bonding_required: bool
) -> None:
    # The firmware's attributes require no encryption (the frames carry their own tags; a failed pairing must never
    # stop a call for help), and the product option does not change that.
    pendant = Pendant(pendant_options(bonding_required=bonding_required), clock)
    async with running(pendant, hub):
        produced = await pendant.press("press")
        await pendant.wait_for(lambda: pendant.advertising)
        inbox = Inbox()
        async with hub.connect(pendant, pair=False) as client:
            assert DeviceInfo.from_bytes(bytes(await client.read_gatt_char(str(DEVICE_INFO_CHAR_UUID))))
            assert bytes(await client.read_gatt_char(EVENT)) == produced.raw
            await client.start_notify(EVENT, inbox)
            assert await inbox.next() == produced.raw
            await client.write_gatt_char(CONFIRM, confirm(1), response=True)
            await client.write_gatt_char(FEEDBACK, feedback(FeedbackState.ANSWERED, 1, 0), response=True)
        assert pendant.pending == []
        assert [s.state for s in pendant.patterns] == [FeedbackState.ANSWERED]
        assert pendant.rejected == []


def test_a_pendant_needs_a_32_byte_key() -> None:
    clock = ManualClock(START)
    with pytest.raises(ValueError, match="32-byte key"):
        Pendant(pendant_options(key=bytes(16)), clock)
    with pytest.raises(ValueError, match="32-byte key"):
        Pendant(pendant_options(key=None), clock)


async def test_at_the_ceiling_the_pendant_sends_rekey_and_a_new_key_brings_it_back(
    hub: Hub, clock: ManualClock, tmp_path: Path
) -> None:
    state = tmp_path / "pendant-1.json"
    state.write_text(f'{{"counter": {COUNTER_CEILING - 2}}}')
    pendant = Pendant(pendant_options(), clock, state_file=state)
    hub_side = PendantVerifier(ADDRESS, KEY, last_counter=COUNTER_CEILING - 2)
    new_key = bytes(range(200, 232))
    async with running(pendant, hub):
        last = await pendant.press("press")
        assert last.sequence == COUNTER_CEILING - 1
        assert pendant.pending == [COUNTER_CEILING - 1, COUNTER_CEILING]  # REKEY right behind the last one
        with pytest.raises(CounterExhaustedError):
            await pendant.press("cancel")
        assert pendant.pending == [COUNTER_CEILING - 1, COUNTER_CEILING]
        await pendant.wait_for(lambda: pendant.advertising)
        inbox = Inbox()
        async with hub.connect(pendant) as client:
            await client.start_notify(EVENT, inbox)
            assert not hub_side.verify(await inbox.next()).repeat
            await client.write_gatt_char(CONFIRM, confirm(COUNTER_CEILING - 1), response=True)
            rekey = await inbox.next()
            assert hub_side.verify(rekey).event == PendantEvent.rekey().sign(ADDRESS, KEY)
            assert hub_side.exhausted
            await client.write_gatt_char(CONFIRM, confirm(COUNTER_CEILING), response=True)
        assert pendant.pending == []
        await pendant.reboot()  # every boot says it again, byte for byte
        assert pendant.pending == [COUNTER_CEILING]
        assert pendant.produced[-1].raw == rekey
        assert hub_side.verify(rekey).repeat
        with pytest.raises(ReplayError):
            hub_side.verify(last.raw)
        saved = PendantCounterState.from_bytes(bytes(hub_side.state()))

        await pendant.reprovision(new_key)  # re-keyed by the installer: the counter starts again
        assert (pendant.counter, pendant.pending) == (0, [])
        first = await pendant.press("press")
        assert first.sequence == 1
        restored = PendantVerifier.restore(ADDRESS, new_key, saved)
        assert not restored.verify(first.raw).repeat
        with pytest.raises(AuthenticationError):
            restored.verify(rekey)
    assert Pendant(pendant_options(key=new_key), clock, state_file=state).counter == 1


# -- the pure state: the firmware's rules without radio or clock ----------------------------------------------------

NOW = datetime(2024, 3, 4, 18, 20, tzinfo=UTC)


def _signed(label: bytes, header: bytes, key: bytes) -> bytes:
    return header + compute_tag(key, label, ADDRESS, header)


writes = st.one_of(
    st.builds(
        lambda c, k: ("confirm", _signed(b"C", bytes([1]) + c.to_bytes(4, "little"), k)),
        st.integers(0, 8),
        st.sampled_from([KEY, STRANGER_KEY]),
    ),
    st.builds(
        lambda s, c, q, k: (
            "feedback",
            _signed(b"F", bytes([1, s]) + c.to_bytes(4, "little") + q.to_bytes(2, "little"), k),
        ),
        st.integers(0, 7),
        st.integers(0, 8),
        st.integers(0, 3),
        st.sampled_from([KEY, STRANGER_KEY]),
    ),
    st.tuples(st.sampled_from(["confirm", "feedback"]), st.binary(max_size=30)),
    st.just(("press", b"")),
)


@given(st.lists(writes, max_size=40))
def test_pendant_state_follows_the_firmware_rules(script: list[tuple[str, bytes]]) -> None:
    state = PendantState(ADDRESS, KEY, 0)
    floor = (0, 0xFFFF)
    for kind, data in script:
        pending_before = [p.event.counter for p in state.pending]
        shown_before = len(state.patterns)
        if kind == "press":
            counter = state.next_counter()
            state.queue(PendantEventType.PRESS, counter, 50, 0)
            assert state.event_value == state.pending[0].raw  # the oldest pending frame
            continue
        if kind == "confirm":
            acted = state.on_confirm(data, NOW)
            try:
                frame = ConfirmFrame.from_bytes(data)
                frame.verify(ADDRESS, KEY)
                valid = frame.counter <= state.counter
            except (DecodeError, AuthenticationError):
                valid = False
            assert acted == valid
            left = [c for c in pending_before if not acted or c > frame.counter]
            assert [p.event.counter for p in state.pending] == left
        else:
            acted = state.on_feedback(data, NOW)
            try:
                fb = FeedbackFrame.from_bytes(data)
                fb.verify(ADDRESS, KEY)
                pair = (fb.event_counter, fb.feedback_seq)
                valid = fb.event_counter <= state.counter and pair > floor
            except (DecodeError, AuthenticationError):
                valid = False
            assert acted == valid
            if acted:
                floor = pair
                assert (state.showing, len(state.patterns)) == (fb.state, shown_before + 1)
            assert [p.event.counter for p in state.pending] == pending_before
        if not acted:
            assert state.rejected[-1].data == data
            assert len(state.patterns) == shown_before


def test_pendant_state_at_the_ceiling_and_after_re_keying() -> None:
    state = PendantState(ADDRESS, KEY, COUNTER_CEILING - 2)
    queued = state.queue(PendantEventType.PRESS, state.next_counter(), 50, 0)
    assert [q.event.event for q in queued] == [PendantEventType.PRESS, PendantEventType.REKEY]
    with pytest.raises(CounterExhaustedError):
        state.next_counter()
    assert state.rekey_if_exhausted() == []  # pending already
    assert [q.event.counter for q in state.boot(COUNTER_CEILING)] == [COUNTER_CEILING]  # at every boot
    state.reprovision(KEY)  # the same key: nothing changes
    assert state.counter == COUNTER_CEILING
    state.reprovision(STRANGER_KEY)
    assert (state.counter, state.boot(0)) == (0, [])
    assert state.next_counter() == 1
    with pytest.raises(ValueError, match="not the next one"):
        state.queue(PendantEventType.PRESS, 5, 50, 0)
