"""The pendant link accepts an event only after its commit (issue 19.1, docs/protocol.md §9.4); no event loop."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.pendant_link import PendantLink, Rejected, RekeyNeed, describe_counter
from gateway.core.sealer import Draft
from gateway.outbox_rows import Lane
from protocols.pendant import (
    COUNTER_CEILING,
    REKEY_DUE_AT,
    ConfirmFrame,
    FeedbackFrame,
    FeedbackState,
    PendantEvent,
    PendantEventType,
    VerifiedEvent,
)
from protocols.record import DeviceStatusBody

PENDANT = "C0:11:00:00:00:0A"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def frame(counter: int, event: PendantEventType = PendantEventType.PRESS, key: bytes = KEY) -> bytes:
    return bytes(PendantEvent(event, counter, 80, 100).sign(PENDANT, key))


def checked(link: PendantLink, data: bytes) -> VerifiedEvent:
    result = link.check(PENDANT, data)
    assert isinstance(result, VerifiedEvent)
    return result


def test_an_event_not_yet_accepted_checks_as_new_again_and_is_confirmed_only_after_accept() -> None:
    link = PendantLink({PENDANT: KEY})
    press = frame(1)
    first = checked(link, press)
    assert not first.repeat
    # The commit failed: nothing accepted. The re-send is new, not a repeat to be confirmed.
    again = checked(link, press)
    assert not again.repeat
    assert link.last_counter(PENDANT) == 0
    link.accept(PENDANT, again)
    assert link.last_counter(PENDANT) == 1
    assert checked(link, press).repeat
    confirm = ConfirmFrame.from_bytes(link.confirm(PENDANT, 1))
    confirm.verify(PENDANT, KEY)
    assert confirm.counter == 1


def test_frames_that_do_not_verify_are_rejected_not_raised() -> None:
    link = PendantLink({PENDANT: KEY})
    link.accept(PENDANT, checked(link, frame(5)))
    for data in (b"", b"\x01" * 3, frame(6, key=OTHER_KEY), frame(4)):
        assert isinstance(link.check(PENDANT, data), Rejected)
    assert isinstance(link.check("C0:11:00:00:00:FF", frame(7)), Rejected)


def test_the_committed_state_restores_the_mark_under_the_same_key_only() -> None:
    link = PendantLink({PENDANT: KEY})
    event = checked(link, frame(9))
    stored = link.cursor_value(PENDANT, event)
    assert describe_counter(stored) == "9"
    restarted = PendantLink({PENDANT: KEY})
    assert restarted.restore(PENDANT, stored)
    assert restarted.last_counter(PENDANT) == 9
    assert checked(restarted, frame(9)).repeat
    assert isinstance(restarted.check(PENDANT, frame(8)), Rejected)
    rekeyed = PendantLink({PENDANT: OTHER_KEY})
    assert rekeyed.restore(PENDANT, stored)
    assert rekeyed.last_counter(PENDANT) == 0  # a state saved under the old key is not resumed
    legacy = PendantLink({PENDANT: KEY})
    assert legacy.restore(PENDANT, 12)  # an earlier hub stored the bare counter
    assert legacy.last_counter(PENDANT) == 12
    assert not PendantLink({PENDANT: KEY}).restore(PENDANT, b"\x00" * 5)


def test_feedback_frames_follow_the_accepted_counter() -> None:
    link = PendantLink({PENDANT: KEY})
    assert link.feedback_frame("C0:11:00:00:00:FF", FeedbackState.HELP_CALLED) is None
    link.accept(PENDANT, checked(link, frame(3)))
    assert link.feedback_frame(PENDANT, FeedbackState.HELP_CALLED) is not None


def test_feedback_while_handling_an_event_names_that_event_before_it_is_accepted() -> None:
    # After a reboot the pendant takes feedback only for an event above its own counter (§9.4): the hub's frame for
    # the press it is storing must name that press, not the last one already stored.
    link = PendantLink({PENDANT: KEY})
    press = checked(link, frame(1))
    data = link.feedback_frame(PENDANT, FeedbackState.HELP_CALLED, press.event.counter)
    assert data is not None
    sent = FeedbackFrame.from_bytes(data)
    sent.verify(PENDANT, KEY)
    assert (sent.state, sent.event_counter, sent.feedback_seq) == (FeedbackState.HELP_CALLED, 1, 0)
    link.accept(PENDANT, press)
    later = link.feedback_frame(PENDANT, FeedbackState.ANSWERED)
    assert later is not None
    assert (FeedbackFrame.from_bytes(later).event_counter, FeedbackFrame.from_bytes(later).feedback_seq) == (1, 1)


# -- §9.6 re-keying: the maintenance notice --------------------------------------------------------------------

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def notice_detail(draft: Draft | None) -> str | None:
    if draft is None:
        return None
    assert isinstance(draft.body, DeviceStatusBody)
    assert draft.lane is Lane.PRIORITY
    assert draft.device == PENDANT
    return draft.body.detail


def test_a_rekey_event_raises_the_notice_that_the_pendant_cannot_call_for_help() -> None:
    link = PendantLink({PENDANT: KEY})
    link.accept(PENDANT, checked(link, frame(41)))
    rekey = checked(link, bytes(PendantEvent.rekey().sign(PENDANT, KEY)))
    detail = notice_detail(link.rekey_notice(PENDANT, rekey, NOW))
    assert detail is not None
    assert "CANNOT CALL FOR HELP" in detail
    stored = link.cursor_value(PENDANT, rekey)
    link.accept(PENDANT, rekey)
    # The repeat of the accepted REKEY frame raises nothing new; doctor shows the notice from the committed state.
    assert link.rekey_notice(PENDANT, checked(link, bytes(PendantEvent.rekey().sign(PENDANT, KEY))), NOW) is None
    assert describe_counter(stored) == f"{COUNTER_CEILING} ({RekeyNeed.EXHAUSTED.notice})"


def test_the_notice_is_raised_once_when_the_counter_reaches_the_rekey_mark() -> None:
    link = PendantLink({PENDANT: KEY})
    below = checked(link, frame(REKEY_DUE_AT - 1))
    assert link.rekey_notice(PENDANT, below, NOW) is None
    link.accept(PENDANT, below)
    assert describe_counter(link.cursor_value(PENDANT, below)) == str(REKEY_DUE_AT - 1)
    due = checked(link, frame(REKEY_DUE_AT))
    detail = notice_detail(link.rekey_notice(PENDANT, due, NOW))
    assert detail == RekeyNeed.DUE.notice
    link.accept(PENDANT, due)
    later = checked(link, frame(REKEY_DUE_AT + 5))
    assert link.rekey_notice(PENDANT, later, NOW) is None  # once, not with every later event
    assert "re-keying" in describe_counter(REKEY_DUE_AT + 5)  # a bare counter of an earlier hub version too
    # Restarted past the mark: the exhausted notice still comes with the REKEY event.
    restarted = PendantLink({PENDANT: KEY})
    assert restarted.restore(PENDANT, link.cursor_value(PENDANT, later))
    rekey = checked(restarted, bytes(PendantEvent.rekey().sign(PENDANT, KEY)))
    assert notice_detail(restarted.rekey_notice(PENDANT, rekey, NOW)) == RekeyNeed.EXHAUSTED.notice


@given(st.integers(0, COUNTER_CEILING - 1), st.integers(1, COUNTER_CEILING - 1))
def test_a_notice_comes_exactly_when_an_event_makes_the_need_more_urgent(start: int, counter: int) -> None:
    link = PendantLink({PENDANT: KEY})
    assert link.restore(PENDANT, start)
    result = link.check(PENDANT, frame(counter))
    if isinstance(result, Rejected):
        assert counter < start
        return
    crossed = start < REKEY_DUE_AT <= counter
    assert (link.rekey_notice(PENDANT, result, NOW) is not None) == crossed


def test_a_battery_level_is_news_until_an_event_carrying_it_is_accepted() -> None:
    link = PendantLink({PENDANT: KEY})
    first = checked(link, frame(1))
    assert link.battery_news(PENDANT, first) == 80
    assert link.battery_news(PENDANT, first) == 80  # the commit failed: still news for the re-send
    link.accept(PENDANT, first)
    second = checked(link, frame(2))
    assert link.battery_news(PENDANT, second) is None
    link.accept(PENDANT, second)
    lower = checked(link, bytes(PendantEvent(PendantEventType.HEARTBEAT, 3, 79, 100).sign(PENDANT, KEY)))
    assert link.battery_news(PENDANT, lower) == 79
    unknown = checked(link, bytes(PendantEvent(PendantEventType.HEARTBEAT, 3, None, 100).sign(PENDANT, KEY)))
    assert link.battery_news(PENDANT, unknown) is None
