"""The resend backoff grows once per unanswered ROUND, not once per timed-out frame (issue 15 item 5): frames sent
within one round whose deadlines pass one after another raise the wait once."""

from __future__ import annotations

import random

from gateway.delivery import Delivery, DeliveryPolicy
from gateway.delivery_timing import ResendTimer
from gateway.outbox_rows import Lane, OutboxItem


def item(seq: int, lane: Lane = Lane.ROUTINE) -> OutboxItem:
    return OutboxItem(seq, b"x" * 100, lane, "measurement", (f"r{seq}",), 0.0)


def test_four_frames_timing_out_within_a_second_grow_the_wait_once() -> None:
    policy = DeliveryPolicy(ack_timeout=5.0, ack_timeout_cap=300.0, resend_jitter=0.0, frame_max_envelopes=1)
    d = Delivery(policy, rng=random.Random(1))  # noqa: S311 - seeded jitter
    d.on_connected()
    for n in range(4):  # one frame every 0.25 s: deadlines at 5.0, 5.25, 5.5, 5.75
        assert d.prepare([item(n)], 0.25 * n) is not None
    waits = []
    for n in range(4):
        expiry = d.on_timer(5.0 + 0.25 * n)
        assert expiry is not None
        assert expiry.frames == 1
        waits.append(expiry.next_wait)
    assert d.level == 1
    assert waits == [10.0, 10.0, 10.0, 10.0]  # doubled once, not 10, 20, 40, 80
    # The next round (the probe: one released envelope alone), unanswered too, doubles it once more.
    assert d.prepare([item(n) for n in range(4)], 6.0) is not None
    expiry = d.on_timer(16.0)
    assert expiry is not None
    assert d.level == 2
    assert expiry.next_wait == 20.0


def test_a_late_expiry_from_before_an_ack_does_not_back_off() -> None:
    policy = DeliveryPolicy(ack_timeout=5.0, resend_jitter=0.0)
    timer = ResendTimer(policy, rng=random.Random(1))  # noqa: S311 - seeded jitter
    old = timer.round
    timer.acked(0.0, 1.0, resent=False)  # the platform answered after the old frame was sent
    timer.unacked_round(old)
    assert timer.level == 0
    timer.unacked_round(timer.round)
    assert timer.level == 1
