"""The platform's application-level ack (carehub wire protocol v1, ``docs/protocol.md`` §7).

Published by the platform on ``carehub/v1/<hub>/ack`` only after the envelopes it names are durably stored
(invariant 1: an MQTT PUBACK is not delivery)::

    body      = CBOR {"v": 1, "hub": text, "ack_seq": uint, "at": uint (µs since epoch, UTC),
                      "stored": [uint, ...], "rejected": [[uint, text], ...]}     deterministic (RFC 8949 §4.2.1)
    signature = Ed25519(platform signing key, "carehub/v1/ack" || 0x00 || body)
    ack       = signature (64 bytes) || body

``stored`` and ``rejected`` hold envelope sequence numbers. A rejection reason is an
:class:`~protocols.errors.EnvelopeRejection` value; those in :data:`PERMANENT_REJECTIONS` tell the hub to drop the
envelope and log it (re-sending the same bytes can never succeed), the others to keep it and retry later.
Acks are idempotent, so a replayed ack is harmless: envelope sequence numbers are never reused by a hub.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Final

import nacl.signing

from protocols import cbor
from protocols.cbor import Fields
from protocols.errors import AuthenticationError, DecodeError, EncodeError, EnvelopeRejection, quote
from protocols.keys import SIGNATURE_LEN, sign_detached, verify_detached
from protocols.topics import is_valid_hub_id

__all__ = [
    "ACK_DOMAIN",
    "MAX_ACK_BYTES",
    "MAX_ACK_ENTRIES",
    "PERMANENT_REJECTIONS",
    "Ack",
    "Rejected",
    "sign_ack",
    "verify_ack",
]

ACK_DOMAIN: Final = b"carehub/v1/ack\x00"
MAX_ACK_ENTRIES: Final = 4096
MAX_ACK_BYTES: Final = 131_072
"""Largest signed ack: :data:`MAX_ACK_ENTRIES` entries of at most 23 bytes (``[seq, reason]`` with a 9-byte seq and
the longest reason) plus the signature and the other fields come to about 94 KB; anything larger is refused unread."""
PERMANENT_REJECTIONS: Final = frozenset(
    {
        EnvelopeRejection.MALFORMED,
        EnvelopeRejection.CANNOT_OPEN,
        EnvelopeRejection.BAD_SIGNATURE,
        EnvelopeRejection.HUB_MISMATCH,
        EnvelopeRejection.REPLAYED,
    }
)
"""Reasons after which the hub drops the envelope. ``UNKNOWN_HUB`` is transient: the hub may not be enrolled yet."""
_KEYS: Final = frozenset({"v", "hub", "ack_seq", "at", "stored", "rejected"})


@dataclass(frozen=True, slots=True)
class Rejected:
    """One envelope the platform refused.

    Attributes:
        seq: the envelope sequence number.
        reason: why.
    """

    seq: int
    reason: EnvelopeRejection

    @property
    def permanent(self) -> bool:
        """Whether the hub should drop the envelope rather than retry it."""
        return self.reason in PERMANENT_REJECTIONS


@dataclass(frozen=True, slots=True)
class Ack:
    """A platform ack.

    Attributes:
        hub_id: the hub it is addressed to.
        ack_seq: the platform's ack counter for this hub (informational; acks are idempotent).
        issued_at: when the platform signed it.
        stored: envelope sequence numbers now durably stored (or stored before: duplicates are acked again).
        rejected: envelopes refused, with reasons.
    """

    hub_id: str
    ack_seq: int
    issued_at: _dt.datetime
    stored: tuple[int, ...] = ()
    rejected: tuple[Rejected, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.hub_id, str) or not is_valid_hub_id(self.hub_id):
            raise EncodeError(f"{self.hub_id!r} is not a valid hub id")
        object.__setattr__(self, "stored", tuple(self.stored))
        object.__setattr__(self, "rejected", tuple(self.rejected))
        if not cbor.is_uint(self.ack_seq):
            raise EncodeError(f"ack_seq must be an integer in 0..{cbor.MAX_UINT}")
        cbor.to_micros(self.issued_at)
        if len(self.stored) + len(self.rejected) > MAX_ACK_ENTRIES:
            raise EncodeError(f"an ack names at most {MAX_ACK_ENTRIES} envelopes")
        if not all(cbor.is_uint(s) for s in self.stored):
            raise EncodeError(f"stored sequence numbers must be integers in 0..{cbor.MAX_UINT}")
        for entry in self.rejected:
            if not isinstance(entry, Rejected) or not cbor.is_uint(entry.seq):
                raise EncodeError("rejected entries must be Rejected with an unsigned sequence number")
            if not isinstance(entry.reason, EnvelopeRejection):
                raise EncodeError("a rejection reason must be an EnvelopeRejection")


def sign_ack(ack: Ack, platform_signing_key: nacl.signing.SigningKey) -> bytes:
    """Encode and sign an ack for ``carehub/v1/<hub>/ack`` (at most :data:`MAX_ACK_BYTES`)."""
    body = cbor.dumps(
        {
            "v": 1,
            "hub": ack.hub_id,
            "ack_seq": ack.ack_seq,
            "at": cbor.to_micros(ack.issued_at),
            "stored": list(ack.stored),
            "rejected": [[r.seq, r.reason.value] for r in ack.rejected],
        },
        "ack",
    )
    return sign_detached(platform_signing_key, ACK_DOMAIN, body) + body


def verify_ack(data: bytes, platform_verify_key: nacl.signing.VerifyKey, expected_hub: str) -> Ack:
    """Verify an ack received on this hub's ack topic.

    Args:
        data: the MQTT payload.
        platform_verify_key: the platform's Ed25519 public key.
        expected_hub: this hub's id.

    Returns:
        The verified ack.

    Raises:
        AuthenticationError: not signed by the platform, addressed to another hub, or longer than
            :data:`MAX_ACK_BYTES` (refused before the signature is checked).
        DecodeError: signed, but not a well-formed version-1 ack.
    """
    if not SIGNATURE_LEN < len(data) <= MAX_ACK_BYTES:
        raise AuthenticationError(f"{len(data)} bytes is not a possible ack size")
    signature, body = data[:SIGNATURE_LEN], data[SIGNATURE_LEN:]
    verify_detached(platform_verify_key, ACK_DOMAIN, body, signature)
    f = Fields(cbor.loads(body, "ack"), "ack", _KEYS)
    if f.uint("v") != 1:
        raise f.fail("v", "unsupported ack version")
    hub = f.text("hub", 63)
    if hub != expected_hub:
        raise AuthenticationError(f"ack is addressed to hub {hub!r}, not {expected_hub!r}")
    stored = f.raw("stored")
    rejected = f.raw("rejected")
    if not isinstance(stored, list) or not all(cbor.is_uint(s) for s in stored):
        raise f.fail("stored", f"expected an array of integers in 0..{cbor.MAX_UINT}")
    if not isinstance(rejected, list):
        raise f.fail("rejected", "expected an array")
    entries: list[Rejected] = []
    for entry in rejected:
        if not (isinstance(entry, list) and len(entry) == 2 and cbor.is_uint(entry[0])):
            raise f.fail("rejected", f"each entry is [seq, reason] with seq in 0..{cbor.MAX_UINT}")
        seq, reason = entry
        try:
            entries.append(Rejected(seq, EnvelopeRejection(reason)))  # type: ignore[arg-type]  # checked above
        except ValueError as exc:
            raise f.fail("rejected", f"unknown reason {quote(reason)}") from exc
    try:
        return Ack(hub, f.uint("ack_seq"), f.time("at"), tuple(stored), tuple(entries))  # type: ignore[arg-type]
    except EncodeError as exc:
        raise DecodeError("ack", None, str(exc)) from exc
