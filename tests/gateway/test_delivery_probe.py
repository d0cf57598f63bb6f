"""The delivery core's probe rule (issue 15 item 5, resend amplification): after an unacknowledged round the routine
lane sends one released envelope alone and holds the others back until it is answered; an unambiguous answer sends
the rest again in full frames, an ambiguous one (it also answers their first send) probes again; a reconnect and
the priority lane resend whole."""

from __future__ import annotations

import random

from community.samples import T0
from gateway.delivery import Delivery, DeliveryPolicy, Room
from gateway.outbox_rows import Lane, OutboxItem
from protocols.acks import Ack

WAIT = 10.0


class Hub:
    """A delivery core over a dict of outbox rows, offered in the outbox's order (priority lane, then seq)."""

    def __init__(self, **policy: int) -> None:
        settings = DeliveryPolicy(ack_timeout=WAIT, ack_timeout_cap=80.0, resend_jitter=0.0, **policy)
        self.core = Delivery(settings, rng=random.Random(3))  # noqa: S311 - no jitter drawn
        self.core.on_connected()
        self.rows: dict[int, OutboxItem] = {}

    def put(self, *seqs: int, lane: Lane = Lane.ROUTINE) -> None:
        for seq in seqs:
            self.rows[seq] = OutboxItem(seq, bytes(50), lane, "measurement", (f"rid-{seq}",), 0.0)

    def send(self, now: float) -> list[list[int]]:
        sent: list[list[int]] = []
        while (room := self.core.room()) is not None:
            offered = [
                row
                for row in sorted(self.rows.values(), key=lambda r: (r.lane, r.envelope_seq))
                if row.envelope_seq not in room.exclude
            ][: room.limit]
            frame = self.core.prepare(offered, now)
            if frame is None:
                break
            sent.append([i.envelope_seq for i in frame.items])
        return sent

    def ack(self, now: float, *seqs: int) -> None:
        outcome = self.core.on_ack(Ack("hub-a", 1, T0, seqs), now)
        for seq in outcome.delete:
            self.rows.pop(seq, None)
        self.core.deleted(outcome.delete)


def probing(hub: Hub) -> bool:
    return hub.core.probing


def test_an_expired_round_sends_one_probe_and_the_rest_only_after_its_ack() -> None:
    hub = Hub(frame_max_envelopes=3)
    hub.put(*range(6))
    assert hub.send(0.0) == [[0, 1, 2], [3, 4, 5]]
    expiry = hub.core.on_timer(WAIT)
    assert expiry is not None
    assert expiry.envelopes == 6
    assert probing(hub)
    # One envelope goes again, alone; the other five wait (a never-sent envelope does not).
    hub.put(6)
    assert hub.send(WAIT) == [[0], [6]]
    assert hub.core.room() is not None
    assert {1, 2, 3, 4, 5} <= hub.core.room().exclude  # type: ignore[union-attr]
    # The probe is answered alone: the platform is past everything sent before it; the rest was lost.
    hub.ack(WAIT + 1.0, 0)
    assert not probing(hub)
    assert hub.send(WAIT + 1.0) == [[1, 2, 3], [4, 5]]


def test_the_first_sends_answered_meanwhile_are_not_sent_again() -> None:
    hub = Hub(frame_max_envelopes=3)
    hub.put(*range(6))
    hub.send(0.0)
    hub.core.on_timer(WAIT)
    assert hub.send(WAIT) == [[0]]
    # The queue reaches the first frame: its ack names the probe's envelope with two held-back ones (ambiguous).
    hub.ack(WAIT + 5.0, 0, 1, 2)
    assert probing(hub)
    assert hub.send(WAIT + 5.0) == [[3]]  # a new probe; 4 and 5 still wait
    hub.ack(WAIT + 6.0, 3, 4, 5)  # the second frame's first send, again ambiguous: nothing is left to send
    assert hub.rows == {}
    assert hub.send(WAIT + 6.0) == []
    assert hub.core.inflight_envelopes == 0


def test_an_unanswered_probe_is_probed_again_after_a_doubled_wait() -> None:
    hub = Hub(frame_max_envelopes=4)
    hub.put(*range(4))
    hub.send(0.0)
    hub.core.on_timer(WAIT)
    assert hub.send(WAIT) == [[0]]
    deadline = hub.core.next_deadline()
    assert deadline == WAIT + 2 * WAIT
    assert hub.core.on_timer(deadline) is not None
    assert hub.send(deadline) == [[0]]
    assert hub.core.level == 2


def test_a_reconnect_and_the_priority_lane_resend_whole() -> None:
    hub = Hub(frame_max_envelopes=3)
    hub.put(0, 1, lane=Lane.PRIORITY)
    hub.put(2, 3, 4)
    assert hub.send(0.0) == [[0, 1], [2, 3, 4]]
    hub.core.on_timer(WAIT)
    assert hub.send(WAIT) == [[0, 1], [2]]  # the alarm frame whole, the routine lane one probe
    hub.core.on_disconnected()
    assert not probing(hub)
    hub.core.on_connected()
    assert hub.send(WAIT + 1.0) == [[0, 1], [2, 3, 4]]


def offer(hub: Hub, room: Room) -> list[OutboxItem]:
    """What the outbox returns for ``room`` (the shell reads it with an await, during which the core may change)."""
    rows = sorted(hub.rows.values(), key=lambda r: (r.lane, r.envelope_seq))
    return [row for row in rows if row.envelope_seq not in room.exclude][: room.limit]


def test_an_offer_read_before_a_frame_expired_is_stale_and_the_probe_still_goes_first() -> None:
    """The uplink test's 1-in-30 failure (`[1, 99] != [0, 99]`): the sender asked for room while routine seq 0 was in
    flight (excluded), the ack deadline released seq 0 while the outbox read ran, and the offer - seq 1, never sent -
    became a new routine frame in the freed window. The released seq 0 then waited a whole extra ack round, and the
    probe with it. An offer read for an older room is refused; the room asked again offers the probe."""
    hub = Hub(max_inflight_frames=1, frame_max_envelopes=1)
    hub.put(*range(5))
    assert hub.send(0.0) == [[0]]
    hub.put(99, lane=Lane.PRIORITY)
    assert hub.send(1.0) == [[99]]
    room = hub.core.room()  # the priority window has room: the sender reads the outbox
    assert room is not None
    offered = offer(hub, room)
    assert [i.envelope_seq for i in offered] == [1]
    assert hub.core.on_timer(WAIT) is not None  # seq 0's deadline passes during that read
    assert hub.core.is_stale(room)
    assert hub.core.prepare(offered, WAIT, room=room) is None
    assert hub.send(WAIT) == [[0]]  # the probe, alone, before any envelope never sent
    assert hub.core.inflight_seqs == {0, 99}


def test_every_change_that_makes_an_envelope_offerable_again_makes_older_offers_stale() -> None:
    hub = Hub(frame_max_envelopes=3)
    hub.put(*range(6))
    assert hub.send(0.0) == [[0, 1, 2], [3, 4, 5]]
    # An ack moves envelopes from flight to settling: still excluded, the offer stays current.
    room = hub.core.room()
    assert room is not None
    outcome = hub.core.on_ack(Ack("hub-a", 1, T0, (3,)), 1.0)
    assert not hub.core.is_stale(room)
    # A failed delete offers them again.
    hub.core.delete_failed(outcome.delete)
    assert hub.core.is_stale(room)
    hub.core.deleted(hub.core.on_ack(Ack("hub-a", 1, T0, (3,)), 1.0).delete)
    hub.rows.pop(3)
    # Released by a deadline, held back behind the probe, then freed by the probe's unambiguous answer.
    hub.core.on_timer(WAIT)
    assert hub.send(WAIT) == [[0]]
    room = hub.core.room()
    assert room is not None
    hub.ack(WAIT + 1.0, 0)
    assert hub.core.is_stale(room)
    room = hub.core.room()
    assert room is not None
    # A lost connection releases everything in flight.
    assert hub.send(WAIT + 1.0) == [[1, 2, 4], [5]]
    room = hub.core.room()
    assert room is not None
    hub.core.on_disconnected()
    assert hub.core.is_stale(room)
