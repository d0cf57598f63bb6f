"""The uplink's delivery bookkeeping as a sans-I/O state machine: window, acks, resends (``docs/protocol.md`` §6-§7).

Nothing here awaits, sleeps, reads a clock or touches a socket. The async shell (:class:`gateway.uplink.Uplink`)
feeds :class:`Delivery` typed inputs - what the outbox offers, a verified :class:`~protocols.acks.Ack`, the
connection coming and going, the time - each with the current monotonic time as a plain float, and carries out the
typed answers: a :class:`Frame` to publish, an :class:`AckOutcome` whose ``delete`` list goes to the outbox, the next
deadline to wake up for. The same core therefore runs under a fake transport, a real broker, or a hypothesis state
machine.

Rules (invariants 1 and 4 of the architecture):

* **The window.** At most ``max_inflight_frames`` routine frames holding less than ``max_inflight_bytes`` envelope
  bytes await the platform's ack; priority frames have a window of their own (``max_inflight_priority_frames``),
  so an alarm never waits behind routine backlog. A frame holds one lane only, priority first.
* **Acks delete, nothing else does.** An envelope is deleted only when a verified ack names it ``stored`` or refuses
  it for a permanent reason. Until the outbox confirms the delete (:meth:`Delivery.deleted`) it is neither in flight
  nor offered again; if the delete fails (:meth:`Delivery.delete_failed`) it is sent again and acked again.
* **Odd acks are harmless.** A verified ack may name envelopes this hub never sent in this run (seq above the
  highest one sent, e.g. ``2**63``): they are ignored and reported in :attr:`AckOutcome.unknown`, never deleted
  and never passed to storage. A sequence number both stored and refused counts as stored.
* **Resend with backoff.** A frame not fully acked by its deadline is released and its remaining envelopes are
  offered again; the wait for an ack grows while rounds go unacknowledged and follows the platform's ack latency
  (:class:`gateway.delivery_timing.ResendTimer`).
* **Probe before resending routine data.** An unacknowledged round usually means the frames still wait in the
  broker's or the stream's queue behind a storm, not that they were lost; sending them all again would double the
  queue. So after a round expires, the routine lane sends ONE released envelope alone (the probe) and holds the
  other released ones back (:attr:`Room.exclude`) until the probe is acked: the platform has then worked through
  everything this hub sent before the probe, so what is still unacked was lost and goes again at once, in full
  frames. A probe that expires is released and probed again after the doubled wait. Envelopes never sent are not
  held back, and the priority lane never probes: an alarm is resent whole.
* **Reconnect.** A lost connection releases every frame in flight; they are sent again on the next connection
  (whose timing, jittered, is the shell's :func:`gateway.backoff.backoff_delay`). The backoff level is kept: a new
  connection says nothing about how fast the platform acks.
* **Offers answer a room.** The shell reads the outbox for a :class:`Room` with an await, during which a deadline,
  an ack or a lost connection may make an envelope that room excluded offerable again (a released frame, a failed
  delete, held-back envelopes freed by the probe's answer). The offer then lacks it: sending it would put envelopes
  never sent ahead of released older ones and skip the probe for a whole ack round. Such an offer is stale
  (:meth:`Delivery.is_stale`) and :meth:`Delivery.prepare` refuses it; the shell asks for room again.
* **Transient refusals are not refusals.** An envelope refused for a transient reason (``unknown_hub``) stays in
  the outbox and in flight until its frame's deadline, then is resent like any unacked one.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from gateway.delivery_timing import DeliveryPolicy, ResendTimer
from gateway.delivery_types import AckOutcome, Expiry, Frame, Room
from gateway.outbox_rows import Lane, OutboxItem
from protocols.acks import Ack, Rejected

__all__ = [
    "AckOutcome",
    "Delivery",
    "DeliveryPolicy",
    "Expiry",
    "Frame",
    "Room",
]

_RELEASED_MEMORY: Final = 65_536  # released envelopes remembered so a late ack still names their records


@dataclass(slots=True)
class _InFlight:
    frame_id: int
    items: dict[int, OutboxItem]
    priority: bool
    size: int
    sent_at: float
    deadline: float
    resend: bool
    round: int  # the resend timer's round when it was sent


class Delivery:
    """The window, ack and resend bookkeeping of one hub's uplink; see the module docstring for the rules.

    Args:
        policy: window sizes and resend timing.
        rng: randomness for the resend jitter (seed it in tests).
    """

    __slots__ = (
        "_bytes",
        "_connected",
        "_frames",
        "_highest_sent",
        "_inflight",
        "_next_frame",
        "_offer_epoch",
        "_policy",
        "_priority_frames",
        "_probe",
        "_probing",
        "_released",
        "_routine_frames",
        "_settling",
        "_timer",
    )

    def __init__(self, policy: DeliveryPolicy, *, rng: random.Random) -> None:
        self._policy = policy
        self._timer = ResendTimer(policy, rng=rng)
        self._frames: dict[int, _InFlight] = {}
        self._inflight: dict[int, int] = {}  # envelope seq -> frame id
        self._settling: set[int] = set()  # acked, delete not yet confirmed by the outbox
        self._released: OrderedDict[int, OutboxItem] = OrderedDict()  # sent before, not in flight now
        self._next_frame = 0
        self._routine_frames = 0
        self._priority_frames = 0
        self._bytes = 0  # routine bytes in flight
        self._highest_sent = -1
        self._connected = False
        self._probing = False  # a routine round expired: released routine envelopes wait for a probe's ack
        self._probe: int | None = None  # the frame id of the probe in flight
        self._offer_epoch = 0  # bumped whenever an envelope excluded from offers becomes offerable again (Room.epoch)

    # ---------------------------------------------------------------- observation

    @property
    def policy(self) -> DeliveryPolicy:
        """The policy this core enforces."""
        return self._policy

    @property
    def connected(self) -> bool:
        """Whether the shell reported a connection (frames are prepared only then)."""
        return self._connected

    @property
    def inflight_seqs(self) -> frozenset[int]:
        """Envelope sequence numbers sent and not yet acked."""
        return frozenset(self._inflight)

    @property
    def settling_seqs(self) -> frozenset[int]:
        """Envelope sequence numbers acked whose delete the outbox has not confirmed yet."""
        return frozenset(self._settling)

    @property
    def inflight_frames(self) -> int:
        """Frames awaiting an ack (both lanes)."""
        return len(self._frames)

    @property
    def inflight_envelopes(self) -> int:
        """Envelopes awaiting an ack."""
        return len(self._inflight)

    @property
    def routine_frames(self) -> int:
        """Routine frames awaiting an ack."""
        return self._routine_frames

    @property
    def priority_frames(self) -> int:
        """Priority frames awaiting an ack."""
        return self._priority_frames

    @property
    def level(self) -> int:
        """How many ack rounds in a row ended unacknowledged (the resend backoff's exponent)."""
        return self._timer.level

    @property
    def smoothed_ack_latency(self) -> float | None:
        """Smoothed seconds from sending a frame (sent once) to its ack, or ``None`` before the first sample."""
        return self._timer.smoothed_ack_latency

    def next_deadline(self) -> float | None:
        """The earliest frame deadline (monotonic seconds), or ``None`` when nothing is in flight."""
        return min((f.deadline for f in self._frames.values()), default=None)

    # ---------------------------------------------------------------- connection

    def on_connected(self) -> None:
        """The transport is up and subscribed to acks: frames may be sent."""
        self._connected = True

    @property
    def probing(self) -> bool:
        """Whether released routine envelopes are held back until a probe is acked (see the module docstring)."""
        return self._probing

    def on_disconnected(self) -> int:
        """The transport is gone: every frame in flight is released for a resend; returns how many envelopes.

        A new session may be on a broker that lost its queue: what was in flight is sent again in full, unprobed.
        """
        self._connected = False
        self._probing = False
        self._probe = None
        return self._release(list(self._frames))

    # ---------------------------------------------------------------- sending

    def room(self) -> Room | None:
        """What to ask the outbox for, or ``None`` while disconnected or both windows are full."""
        if not self._connected:
            return None
        routine_ok, priority_ok = self._window()
        if not (routine_ok or priority_ok):
            return None
        busy = self._inflight.keys() | self._settling if self._settling else self._inflight.keys()
        held = self._held_back()
        if held:
            busy = busy | held
        p = self._policy
        return Room(p.frame_max_envelopes, p.frame_max_bytes, frozenset(busy), self._offer_epoch)

    def is_stale(self, room: Room) -> bool:
        """Whether an offer read for ``room`` may lack envelopes offerable since (ask for room again)."""
        return room.epoch != self._offer_epoch

    def _held_back(self) -> set[int]:
        """Released routine envelopes waiting for the probe in flight to be acked."""
        if self._probe is None:
            return set()
        return {seq for seq, item in self._released.items() if item.lane is Lane.ROUTINE}

    def prepare(self, offered: Sequence[OutboxItem], now: float, *, room: Room | None = None) -> Frame | None:
        """Choose the next frame from what the outbox offered (oldest first, priority lane first) and record it.

        The frame holds the priority envelopes offered if their window has room, else the routine ones if theirs
        has; envelopes in flight or being deleted are skipped. ``room`` is the :meth:`room` the offer was read for;
        pass it whenever the core may have changed while the outbox was read. ``None``: nothing to send now, or
        the offer is stale (:meth:`is_stale`: ask for room again).
        """
        if not self._connected or (room is not None and room.epoch != self._offer_epoch):
            return None
        routine_ok, priority_ok = self._window()
        priority: list[OutboxItem] = []
        routine: list[OutboxItem] = []
        held = self._held_back()
        for item in offered:
            seq = item.envelope_seq
            if seq in self._inflight or seq in self._settling or seq in held:
                continue
            (priority if item.lane is Lane.PRIORITY else routine).append(item)
        if priority and priority_ok:
            return self._record(tuple(self._fit(priority)), True, now)
        if not (routine and routine_ok):
            return None
        if self._probing and self._probe is None:
            probe = next((item for item in routine if item.envelope_seq in self._released), None)
            if probe is not None:
                frame = self._record((probe,), False, now)
                self._probe = frame.frame_id
                return frame
        return self._record(tuple(self._fit(routine)), False, now)

    def _fit(self, items: list[OutboxItem]) -> list[OutboxItem]:
        limit, max_bytes = self._policy.frame_max_envelopes, self._policy.frame_max_bytes
        used = 0
        for n, item in enumerate(items):
            if n == limit or (n and used + item.size > max_bytes):
                return items[:n]
            used += item.size
        return items

    def _record(self, items: tuple[OutboxItem, ...], priority: bool, now: float) -> Frame:
        frame_id = self._next_frame
        self._next_frame += 1
        released = self._released
        resend = False
        size = 0
        by_seq: dict[int, OutboxItem] = {}
        for item in items:
            seq = item.envelope_seq
            if released and released.pop(seq, None) is not None:
                resend = True
            by_seq[seq] = item
            self._inflight[seq] = frame_id
            size += len(item.envelope)
            self._highest_sent = max(self._highest_sent, seq)
        deadline = now + self._timer.ack_wait()
        self._frames[frame_id] = _InFlight(frame_id, by_seq, priority, size, now, deadline, resend, self._timer.round)
        if priority:
            self._priority_frames += 1
        else:
            self._routine_frames += 1
            self._bytes += size
        return Frame(frame_id, items, priority, deadline, resend)

    def ack_wait(self) -> float:
        """How long the next frame sent will wait for its ack (jittered; advances the random generator)."""
        return self._timer.ack_wait()

    def ack_wait_ceiling(self) -> float:
        """The longest :meth:`ack_wait` can return at the current level (no jitter removed)."""
        return self._timer.ack_wait_ceiling()

    def _window(self) -> tuple[bool, bool]:
        p = self._policy
        return (
            self._routine_frames < p.max_inflight_frames and self._bytes < p.max_inflight_bytes,
            self._priority_frames < p.max_inflight_priority_frames,
        )

    # ---------------------------------------------------------------- acks

    def on_ack(self, ack: Ack, now: float) -> AckOutcome:
        """Apply a verified ack; the caller deletes :attr:`AckOutcome.delete` from the outbox and reports back."""
        highest = self._highest_sent
        stored = list(dict.fromkeys(ack.stored)) if len(ack.stored) > 1 else list(ack.stored)
        unknown = [seq for seq in stored if not 0 <= seq <= highest]
        if unknown:
            stored = [seq for seq in stored if 0 <= seq <= highest]
        refused: list[Rejected] = []
        deferred: list[Rejected] = []
        if ack.rejected:
            named = set(ack.stored)
            for entry in ack.rejected:
                if entry.seq in named:
                    continue
                named.add(entry.seq)
                if not 0 <= entry.seq <= highest:
                    unknown.append(entry.seq)
                elif entry.permanent:
                    refused.append(entry)
                else:
                    deferred.append(entry)
        released = self._released
        # An ack that also names held-back envelopes answers their first send: it cannot tell whether the probe
        # itself got through (Karn's ambiguity), so it does not end the probing.
        ambiguous = self._probe is not None and any(
            seq in released and released[seq].lane is Lane.ROUTINE for seq in (*stored, *(r.seq for r in refused))
        )
        delivered: list[OutboxItem] = []
        sampled = False
        for seq in stored:
            sample = not sampled and seq in self._inflight
            sampled = sampled or sample
            item = self._settle(seq, now if sample else None)
            if item is not None:
                delivered.append(item)
        for entry in refused:
            self._settle(entry.seq, None)
        delete = (*stored, *(r.seq for r in refused))
        self._settling.update(delete)
        if self._probe is not None and self._probe not in self._frames:
            # The probe was answered: everything sent before it has been through the platform, so what is still
            # unacked was lost and goes again in full frames (unless the answer was ambiguous: probe again).
            self._probe = None
            self._probing = ambiguous
            self._offer_epoch += 1  # the held-back envelopes are offered again
        return AckOutcome(delete, tuple(delivered), tuple(refused), tuple(deferred), tuple(unknown))

    def _settle(self, seq: int, sample_at: float | None) -> OutboxItem | None:
        """Take ``seq`` out of flight (or out of the released memory); return its item if this run sent it.

        With ``sample_at``, the frame that carried it feeds the resend timer (unless it was a resend: Karn).
        """
        frame_id = self._inflight.pop(seq, None)
        if frame_id is None:
            return self._released.pop(seq, None) if self._released else None
        frame = self._frames[frame_id]
        if sample_at is not None:
            # Only the first envelope of an ack that is in flight feeds the timer (one sample per ack).
            self._timer.acked(frame.sent_at, sample_at, resent=frame.resend)
        item = frame.items.pop(seq)
        size = len(item.envelope)
        frame.size -= size
        if not frame.priority:
            self._bytes -= size
        if not frame.items:
            del self._frames[frame_id]
            if frame.priority:
                self._priority_frames -= 1
            else:
                self._routine_frames -= 1
        return item

    def deleted(self, seqs: Sequence[int]) -> None:
        """The outbox deleted ``seqs`` (an :attr:`AckOutcome.delete`)."""
        self._settling.difference_update(seqs)

    def delete_failed(self, seqs: Sequence[int]) -> None:
        """The outbox could not delete ``seqs``: they stay there and are offered (and acked) again."""
        self._settling.difference_update(seqs)
        self._offer_epoch += 1

    # ---------------------------------------------------------------- time

    def on_timer(self, now: float) -> Expiry | None:
        """Release every frame whose deadline has passed; ``None`` if none had."""
        expired = [fid for fid, f in self._frames.items() if f.deadline <= now]
        if not expired:
            return None
        if any(not self._frames[fid].priority for fid in expired):
            self._probing = True
        latest_round = max(self._frames[fid].round for fid in expired)
        envelopes = self._release(expired)
        self._timer.unacked_round(latest_round)  # once per round, not once per frame
        return Expiry(len(expired), envelopes, self._timer.ack_wait_ceiling())

    def _release(self, frame_ids: Sequence[int]) -> int:
        released = 0
        self._offer_epoch += 1  # offerable again (the probe's held-back envelopes too, if the probe is released)
        for fid in frame_ids:
            frame = self._frames.pop(fid)
            if fid == self._probe:
                self._probe = None  # released unanswered: the next probe goes after the doubled wait
            if frame.priority:
                self._priority_frames -= 1
            else:
                self._routine_frames -= 1
                self._bytes -= frame.size
            for seq, item in frame.items.items():
                del self._inflight[seq]
                self._released[seq] = item
                released += 1
        while len(self._released) > _RELEASED_MEMORY:
            self._released.popitem(last=False)
        return released
