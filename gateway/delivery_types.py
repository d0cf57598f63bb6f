"""What the delivery core (`gateway.delivery`) answers the uplink with: plain, frozen values.

:class:`Room` is what to ask the outbox for next, :class:`Frame` a frame to publish, :class:`AckOutcome` what a
verified ack means for the outbox, :class:`Expiry` frames released at their deadline.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.outbox_rows import OutboxItem
from protocols.acks import Rejected

__all__ = ["AckOutcome", "Expiry", "Frame", "Room"]


@dataclass(frozen=True, slots=True)
class Room:
    """What to ask the outbox for next (:meth:`gateway.outbox.Outbox.peek_batch` arguments).

    Attributes:
        limit: at most this many envelopes.
        max_bytes: at most this many envelope bytes.
        exclude: envelope sequence numbers in flight or being deleted; do not offer them.
        epoch: the core's count of changes that made envelopes offerable again (released at a deadline or a lost
            connection, a failed delete, held-back envelopes freed by a probe's answer) when it gave this room. An
            offer read for an older epoch may lack such an envelope and is stale
            (:meth:`gateway.delivery.Delivery.is_stale`).
    """

    limit: int
    max_bytes: int
    exclude: frozenset[int]
    epoch: int


@dataclass(frozen=True, slots=True)
class Frame:
    """A frame to publish now.

    Attributes:
        frame_id: this run's number for it (for logs).
        items: the envelopes, in the order they go on the wire; all of one lane.
        priority: whether they are priority-lane envelopes.
        deadline: monotonic time at which, unacked, they are released for a resend.
        resend: whether any of them was sent before.
    """

    frame_id: int
    items: tuple[OutboxItem, ...]
    priority: bool
    deadline: float
    resend: bool


@dataclass(frozen=True, slots=True)
class AckOutcome:
    """What a verified ack means for the outbox.

    Attributes:
        delete: envelope sequence numbers to delete from the outbox (stored, or refused for good); report the
            result with :meth:`gateway.delivery.Delivery.deleted` or :meth:`gateway.delivery.Delivery.delete_failed`.
        delivered: envelopes this run sent that are now stored at the platform.
        refused: permanent refusals among ``delete`` (final: the same bytes can never succeed).
        deferred: transient refusals (kept in the outbox; resent after their frame's deadline).
        unknown: sequence numbers named by the ack that this run never sent (ignored).
    """

    delete: tuple[int, ...]
    delivered: tuple[OutboxItem, ...]
    refused: tuple[Rejected, ...]
    deferred: tuple[Rejected, ...]
    unknown: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Expiry:
    """Frames whose deadline passed without a full ack.

    Attributes:
        frames: how many frames were released.
        envelopes: how many envelopes they still held (now offered again).
        next_wait: the longest ack wait the next frame sent can get (the level was raised).
    """

    frames: int
    envelopes: int
    next_wait: float
