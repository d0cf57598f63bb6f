"""The sans-I/O delivery core without asyncio: window, acks, odd acks, refusals, resend backoff, and a hypothesis
state machine holding its invariants over any interleaving (invariants 1 and 4)."""

from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from community.samples import T0
from gateway.delivery import Delivery, DeliveryPolicy, Room
from gateway.outbox_rows import Lane, OutboxItem
from protocols.acks import MAX_ACK_ENTRIES, Ack, Rejected
from protocols.cbor import MAX_UINT
from protocols.errors import EnvelopeRejection

PERMANENT = EnvelopeRejection.MALFORMED
TRANSIENT = EnvelopeRejection.UNKNOWN_HUB


def item(seq: int, lane: Lane = Lane.ROUTINE, size: int = 100) -> OutboxItem:
    return OutboxItem(seq, b"x" * size, lane, "measurement", (f"r{seq}",), 0.0)


def ack(stored: tuple[int, ...] = (), rejected: tuple[Rejected, ...] = ()) -> Ack:
    return Ack("hub-a", 1, T0, stored, rejected)


def core(**kw: object) -> Delivery:
    base: dict[str, object] = {"ack_timeout": 10.0, "ack_timeout_cap": 160.0, "resend_jitter": 0.0}
    base.update(kw)
    rng = random.Random(1)  # noqa: S311 - seeded jitter
    d = Delivery(DeliveryPolicy(**base), rng=rng)  # type: ignore[arg-type]
    d.on_connected()
    return d


class Outbox:
    """The outbox as the core sees it: rows by seq, priority lane first, oldest first."""

    def __init__(self) -> None:
        self.rows: dict[int, OutboxItem] = {}

    def put(self, *items: OutboxItem) -> None:
        for i in items:
            self.rows[i.envelope_seq] = i

    def peek(self, room: Room) -> list[OutboxItem]:
        ordered = sorted(self.rows.values(), key=lambda i: (i.lane, i.envelope_seq))
        out: list[OutboxItem] = []
        used = 0
        for i in ordered:
            if i.envelope_seq in room.exclude:
                continue
            if out and used + i.size > room.max_bytes:
                break
            out.append(i)
            used += i.size
            if len(out) == room.limit:
                break
        return out


def send_all(d: Delivery, ob: Outbox, now: float) -> list[tuple[int, ...]]:
    frames = []
    while (room := d.room()) is not None:
        frame = d.prepare(ob.peek(room), now)
        if frame is None:
            break
        frames.append(tuple(i.envelope_seq for i in frame.items))
    return frames


def test_window_limits_routine_frames_and_priority_has_its_own():
    d, ob = core(max_inflight_frames=2, frame_max_envelopes=2), Outbox()
    ob.put(*(item(s) for s in range(10)))
    assert send_all(d, ob, 0.0) == [(0, 1), (2, 3)]
    assert d.room() is not None  # the priority window still has room
    ob.put(item(50, Lane.PRIORITY), item(51, Lane.PRIORITY), item(52, Lane.PRIORITY))
    assert send_all(d, ob, 0.0) == [(50, 51), (52,)]
    assert (d.routine_frames, d.priority_frames) == (2, 2)


def test_priority_goes_first_and_frames_hold_one_lane():
    d, ob = core(frame_max_envelopes=8), Outbox()
    ob.put(item(1), item(2), item(3, Lane.PRIORITY))
    assert send_all(d, ob, 0.0)[:2] == [(3,), (1, 2)]


def test_byte_window_and_frame_byte_limit():
    d, ob = core(max_inflight_bytes=250, frame_max_bytes=200), Outbox()
    ob.put(*(item(s) for s in range(6)))
    # 2 per frame by bytes; after 200 bytes in flight one more frame fits (< 250), then the window is full.
    assert send_all(d, ob, 0.0) == [(0, 1), (2, 3)]


def test_only_acked_envelopes_are_deleted_and_partial_acks_keep_the_rest_in_flight():
    d, ob = core(frame_max_envelopes=4), Outbox()
    ob.put(*(item(s) for s in range(4)))
    send_all(d, ob, 0.0)
    out = d.on_ack(ack((1, 2)), 1.0)
    assert out.delete == (1, 2)
    assert [i.envelope_seq for i in out.delivered] == [1, 2]
    assert d.inflight_seqs == {0, 3}
    assert d.settling_seqs == {1, 2}
    room = d.room()
    assert room is not None
    assert {1, 2} <= room.exclude
    d.deleted(out.delete)
    assert d.settling_seqs == frozenset()


def test_odd_acks_name_nothing_that_is_deleted():
    d, ob = core(), Outbox()
    ob.put(item(0), item(1))
    send_all(d, ob, 0.0)
    huge = tuple(range(10**12, 10**12 + MAX_ACK_ENTRIES - 4))
    out = d.on_ack(ack((MAX_UINT, 0, *huge), (Rejected(MAX_UINT - 1, PERMANENT), Rejected(5, TRANSIENT))), 1.0)
    assert out.delete == (0,)
    assert set(out.unknown) == {MAX_UINT, MAX_UINT - 1, 5, *huge}
    assert out.refused == ()
    assert out.deferred == ()
    assert d.inflight_seqs == {1}


def test_permanent_refusals_are_deleted_transient_ones_kept_in_flight():
    d, ob = core(), Outbox()
    ob.put(item(0), item(1), item(2))
    send_all(d, ob, 0.0)
    out = d.on_ack(ack((2,), (Rejected(0, PERMANENT), Rejected(1, TRANSIENT), Rejected(2, PERMANENT))), 1.0)
    assert out.delete == (2, 0)  # stored wins over a refusal of the same seq
    assert [r.seq for r in out.refused] == [0]
    assert [r.seq for r in out.deferred] == [1]
    assert d.inflight_seqs == {1}


def test_a_failed_delete_makes_the_envelopes_eligible_again():
    d, ob = core(), Outbox()
    ob.put(item(0))
    send_all(d, ob, 0.0)
    out = d.on_ack(ack((0,)), 1.0)
    assert send_all(d, ob, 1.0) == []  # being deleted: not offered
    d.delete_failed(out.delete)
    assert send_all(d, ob, 1.0) == [(0,)]


def test_unacked_rounds_back_off_exponentially_and_an_ack_resets():
    d, ob = core(max_inflight_frames=1), Outbox()
    ob.put(item(0))
    now = 0.0
    deadlines = []
    for _ in range(6):
        [frame] = send_all(d, ob, now)
        assert frame == (0,)
        deadline = d.next_deadline()
        assert deadline is not None
        deadlines.append(deadline - now)
        assert d.on_timer(deadline - 0.001) is None
        now = deadline
        expiry = d.on_timer(now)
        assert expiry is not None
        assert expiry.envelopes == 1
    assert deadlines == [10.0, 20.0, 40.0, 80.0, 160.0, 160.0]  # doubled each round, capped
    send_all(d, ob, now)
    d.on_ack(ack((0,)), now + 1.0)  # an ack for a resent frame says nothing about latency (Karn)
    assert d.level == 6
    ob.rows.clear()
    ob.put(item(1))
    send_all(d, ob, now + 2.0)
    d.on_ack(ack((1,)), now + 3.0)
    assert d.level == 0
    assert d.smoothed_ack_latency == pytest.approx(1.0)


def test_the_ack_wait_follows_a_slow_platform():
    d, ob = core(max_inflight_frames=1), Outbox()
    for n in range(20):
        ob.rows.clear()
        ob.put(item(n))
        send_all(d, ob, 100.0 * n)
        d.on_ack(ack((n,)), 100.0 * n + 40.0)  # each ack takes 40 s, twice the default wait
    assert d.smoothed_ack_latency == pytest.approx(40.0)
    assert d.ack_wait() == pytest.approx(80.0)


def test_jitter_spreads_the_wait_below_its_ceiling():
    d = core(resend_jitter=0.5)
    waits = {d.ack_wait() for _ in range(50)}
    assert len(waits) > 40
    assert all(5.0 <= w <= 10.0 for w in waits)


def test_disconnect_releases_everything_for_a_resend_on_the_next_connection():
    d, ob = core(frame_max_envelopes=2), Outbox()
    ob.put(*(item(s) for s in range(4)), item(9, Lane.PRIORITY))
    send_all(d, ob, 0.0)
    assert d.on_disconnected() == 5
    assert d.room() is None
    assert d.prepare(list(ob.rows.values()), 0.0) is None
    d.on_connected()
    frames = send_all(d, ob, 1.0)
    assert frames[0] == (9,)
    assert sorted(s for f in frames for s in f) == [0, 1, 2, 3, 9]
    # A late ack for an envelope released on disconnect still names its records.
    d.on_disconnected()
    out = d.on_ack(ack((2,)), 2.0)
    assert [i.record_ids for i in out.delivered] == [("r2",)]


def test_policy_rejects_nonsense():
    with pytest.raises(ValueError, match="window"):
        DeliveryPolicy(max_inflight_frames=0)
    with pytest.raises(ValueError, match="cap"):
        DeliveryPolicy(ack_timeout=10.0, ack_timeout_cap=5.0)
    with pytest.raises(ValueError, match="jitter"):
        DeliveryPolicy(resend_jitter=1.5)


# ---------------------------------------------------------------------------------------------------- state machine


@dataclass
class Sent:
    seqs: tuple[int, ...]
    priority: bool


class DeliveryMachine(RuleBasedStateMachine):
    """A hub's delivery core against a model outbox and a platform that acks, refuses, forgets and lies."""

    def __init__(self) -> None:
        super().__init__()
        self.policy = DeliveryPolicy(
            max_inflight_frames=3,
            max_inflight_bytes=700,
            max_inflight_priority_frames=2,
            frame_max_envelopes=3,
            frame_max_bytes=400,
            ack_timeout=5.0,
            ack_timeout_cap=40.0,
            resend_jitter=0.5,
        )
        self.d = Delivery(self.policy, rng=random.Random(7))  # noqa: S311 - seeded jitter  # noqa: S311 - seeded jitter
        self.ob = Outbox()
        self.now = 0.0
        self.next_seq = 0
        self.on_wire: list[Sent] = []  # every frame published, in order
        self.acked: set[int] = set()  # stored or refused for good by a verified ack
        self.deleted: set[int] = set()
        self.pending_delete: tuple[int, ...] | None = None
        self.released_at: dict[int, int] = {}  # seq -> index in on_wire at which it was last released
        self.reading: tuple[Room, list[OutboxItem]] | None = None  # the shell's outbox read, awaited meanwhile
        self.d.on_connected()

    # ----- inputs

    @rule(lane=st.sampled_from(Lane), size=st.integers(1, 300), n=st.integers(1, 4))
    def put(self, lane: Lane, size: int, n: int) -> None:
        for _ in range(n):
            self.ob.put(item(self.next_seq, lane, size))
            self.next_seq += 1

    @rule()
    def send(self) -> None:
        while (room := self.d.room()) is not None:
            offered = self.ob.peek(room)
            assert not {i.envelope_seq for i in offered} & room.exclude
            waiting_priority = [i for i in offered if i.lane is Lane.PRIORITY]
            priority_room = self.d.priority_frames < self.policy.max_inflight_priority_frames
            routine_room = (
                self.d.routine_frames < self.policy.max_inflight_frames
                and self._routine_bytes() < self.policy.max_inflight_bytes
            )
            frame = self.d.prepare(offered, self.now)
            if frame is None:
                assert not (waiting_priority and priority_room)
                assert not (any(i.lane is Lane.ROUTINE for i in offered) and routine_room)
                break
            lanes = {i.lane for i in frame.items}
            assert len(lanes) == 1
            if frame.priority:
                assert priority_room
            else:
                # Priority first: a routine frame goes only when no priority envelope could have gone instead.
                assert routine_room
                assert not (waiting_priority and priority_room)
            assert 1 <= len(frame.items) <= self.policy.frame_max_envelopes
            assert len(frame.items) == 1 or sum(i.size for i in frame.items) <= self.policy.frame_max_bytes
            assert frame.deadline > self.now
            self.on_wire.append(Sent(tuple(i.envelope_seq for i in frame.items), frame.priority))

    @rule()
    @precondition(lambda self: self.reading is None)
    def read_starts(self) -> None:
        """The shell asks for room and reads the outbox with an await: other rules may run before it returns."""
        room = self.d.room()
        if room is not None:
            self.reading = (room, self.ob.peek(room))

    @rule()
    @precondition(lambda self: self.reading is not None)
    def read_returns(self) -> None:
        assert self.reading is not None
        room, offered = self.reading
        self.reading = None
        if self.d.is_stale(room):
            assert self.d.prepare(offered, self.now, room=room) is None
            return
        # A current offer: nothing still in the outbox that the read excluded has become offerable since (else
        # the offer could lack a released envelope, older than those it holds, or the probe).
        fresh = self.d.room()
        if fresh is not None:
            assert room.exclude & set(self.ob.rows) <= fresh.exclude
        frame = self.d.prepare(offered, self.now, room=room)
        if frame is not None:
            assert len({i.lane for i in frame.items}) == 1
            self.on_wire.append(Sent(tuple(i.envelope_seq for i in frame.items), frame.priority))

    @rule(
        data=st.data(),
        refuse=st.booleans(),
        transient=st.booleans(),
        strangers=st.lists(st.integers(0, MAX_UINT), max_size=5),
    )
    @precondition(lambda self: self.pending_delete is None)
    def platform_acks(self, data: st.DataObject, refuse: bool, transient: bool, strangers: list[int]) -> None:
        sent = sorted({s for f in self.on_wire for s in f.seqs})
        named = data.draw(st.lists(st.sampled_from(sent), unique=True, max_size=6)) if sent else []
        stored = tuple(named[: len(named) // 2 + (0 if refuse else len(named))])
        rest = [s for s in named if s not in stored]
        reason = TRANSIENT if transient else PERMANENT
        rejected = tuple(Rejected(s, reason) for s in rest)
        strangers = [s for s in strangers if s >= self.next_seq]
        out = self.d.on_ack(ack((*stored, *strangers), rejected), self.now)
        allowed = set(stored) | ({r.seq for r in rejected} if reason is PERMANENT else set())
        assert set(out.delete) <= allowed  # nothing deleted that was not acked
        assert set(out.unknown) >= set(strangers)
        assert not set(out.delete) & set(strangers)
        self.acked |= set(out.delete)
        self.pending_delete = out.delete

    @rule(ok=st.booleans())
    @precondition(lambda self: self.pending_delete is not None)
    def outbox_deletes(self, ok: bool) -> None:
        seqs = self.pending_delete
        assert seqs is not None
        self.pending_delete = None
        if ok:
            for s in seqs:
                self.ob.rows.pop(s, None)
            self.deleted |= set(seqs)
            self.d.deleted(seqs)
        else:
            self.d.delete_failed(seqs)

    @rule(dt=st.floats(0.0, 60.0))
    def time_passes(self, dt: float) -> None:
        before = self.d.inflight_seqs
        self.now += dt
        expiry = self.d.on_timer(self.now)
        released = before - self.d.inflight_seqs
        assert (expiry is None) == (not released)
        for s in released:
            self.released_at[s] = len(self.on_wire)

    @rule()
    def connection_drops(self) -> None:
        released = self.d.inflight_seqs
        assert self.d.on_disconnected() == len(released)
        assert self.d.inflight_seqs == frozenset()
        for s in released:
            self.released_at[s] = len(self.on_wire)
        self.d.on_connected()

    # ----- invariants

    def _routine_bytes(self) -> int:
        return sum(self.ob.rows[s].size for s in self.d.inflight_seqs if s in self.ob.rows and self._routine(s))

    def _routine(self, seq: int) -> bool:
        return self.ob.rows[seq].lane is Lane.ROUTINE

    @invariant()
    def deleted_only_what_was_acked(self) -> None:
        assert self.deleted <= self.acked

    @invariant()
    def windows_hold(self) -> None:
        assert self.d.routine_frames <= self.policy.max_inflight_frames
        assert self.d.priority_frames <= self.policy.max_inflight_priority_frames
        assert self.d.inflight_frames == self.d.routine_frames + self.d.priority_frames

    @invariant()
    def in_flight_envelopes_are_in_the_outbox_and_not_being_deleted(self) -> None:
        assert not self.d.inflight_seqs & self.d.settling_seqs
        assert self.d.inflight_seqs <= set(self.ob.rows) | self.acked

    @invariant()
    def deadlines_are_never_past_for_frames_in_flight(self) -> None:
        deadline = self.d.next_deadline()
        assert (deadline is None) == (self.d.inflight_frames == 0)

    def teardown(self) -> None:
        # Liveness: with the platform acking everything from now on, every envelope left is sent and deleted.
        if self.pending_delete is not None:
            self.outbox_deletes(ok=True)
        for _ in range(10_000):
            if not self.ob.rows:
                break
            self.now += self.policy.ack_timeout_cap
            self.d.on_timer(self.now)
            self.send()
            inflight = tuple(sorted(self.d.inflight_seqs))
            out = self.d.on_ack(ack(inflight), self.now)
            assert set(out.delete) == set(inflight)
            for s in out.delete:
                self.ob.rows.pop(s)
            self.d.deleted(out.delete)
        assert not self.ob.rows
        # Everything released unacked was sent again afterwards (or acked late).
        for seq, index in self.released_at.items():
            later = {s for f in self.on_wire[index:] for s in f.seqs}
            assert seq in later or seq in self.acked


DeliveryMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_delivery_state_machine = DeliveryMachine.TestCase


_IO_MODULES = ("asyncio", "sqlite3", "_sqlite3", "aiomqtt", "paho", "uvloop")


def test_the_core_loads_no_io_machinery() -> None:
    """Issue 13: the delivery core is pure. Imported alone (a fresh interpreter), neither it nor anything it imports
    loads asyncio, SQLite or MQTT (it used to import gateway.outbox for two types, and with it asyncio and sqlite3)."""
    probe = (
        "import sys\n"
        "import gateway.delivery, gateway.delivery_timing, gateway.outbox_rows\n"
        f"print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in {_IO_MODULES!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.split() == []
