"""Messages the platform sends down to a hub, as the platform keeps them until the hub confirms (issue 15 item 7).

A down-message (``docs/protocol.md`` §8) is stored *before* it is published, with its signed bytes, so that a
caregiver's acknowledgement or a doctor's threshold change made while the hub is offline is not lost: the ingest
worker publishes what is still open again when the hub is next heard from. Its life, as the operator sees it
(``carehub platform down-messages``)::

    queued --publish--> sent --hub's down_applied record--> applied
       \\                  \\--hub's down_refused record--> refused (with the hub's reason)
        \\-----------------+--a later message confirmed first--> expired

``expired``: the hub accepts only increasing ``seq`` numbers (§8), so once it confirmed a later message an open
earlier one can never be applied; it is resent as a new message if still wanted. A confirmation that arrives after
all (it was in flight) still moves an ``expired`` message to ``applied`` or ``refused``.
"""

from __future__ import annotations

import datetime as _dt
import enum
from dataclasses import dataclass

__all__ = ["DownState", "QueuedDown"]


class DownState(enum.Enum):
    """Where a down-message is in its life."""

    QUEUED = "queued"
    SENT = "sent"
    APPLIED = "applied"
    REFUSED = "refused"
    EXPIRED = "expired"

    @property
    def open(self) -> bool:
        """Still to be delivered (published again when the hub is next heard from)."""
        return self in (DownState.QUEUED, DownState.SENT)


@dataclass(frozen=True, slots=True)
class QueuedDown:
    """One stored down-message.

    Attributes:
        hub: the hub it is for.
        seq: its ``seq`` (1, 2, ... per hub).
        message_type: its ``type`` (``thresholds``, ``alarm_ack``, ``alarm_snooze``).
        payload: the signed message exactly as published.
        state: see :class:`DownState`.
        queued_at: when it was stored.
        sends: how many times it was published.
        sent_at: when it was last published, if ever.
        confirmed_at: when the hub's confirmation (or a later message's) was stored, if yet.
        reason: the hub's refusal reason (``refused``), or why it expired.
        detail: the hub's sentence for the operator, if it refused.
    """

    hub: str
    seq: int
    message_type: str
    payload: bytes
    state: DownState
    queued_at: _dt.datetime
    sends: int = 0
    sent_at: _dt.datetime | None = None
    confirmed_at: _dt.datetime | None = None
    reason: str | None = None
    detail: str | None = None
