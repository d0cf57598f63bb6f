"""Envelopes: records signed by the hub, then sealed to the platform (wire protocol v1, ``docs/protocol.md`` §4).

Layers, innermost first::

    inner      = CBOR {"v": 1, "hub": text, "seq": uint, "sealed_at": uint (µs since epoch, UTC),
                       "records": [bstr, ...]}                     deterministic (RFC 8949 §4.2.1)
    signature  = Ed25519(hub signing key, "carehub/v1/envelope" || 0x00 || inner)        64 bytes
    plaintext  = signature || inner
    envelope   = crypto_box_seal(plaintext, platform X25519 public key)
               = ephemeral X25519 public key (32) || XSalsa20-Poly1305(plaintext) (len + 16)

There is no plaintext header: an envelope is 48 bytes longer than its plaintext and reveals nothing but its length.
The hub cannot open what it sealed (the ephemeral secret is discarded), so the outbox holds nothing readable
(invariant 3); the platform opens it with its X25519 private key and learns from the verified signature which hub
made it. Every record inside must name the signing hub.

Replay protection is the platform's: envelope sequence numbers increase per hub and are never reused;
:class:`ReplayWindow` is a small pure helper that classifies them.
"""

from __future__ import annotations

import datetime as _dt
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import nacl.exceptions
import nacl.public
import nacl.signing

from protocols import cbor
from protocols.cbor import Fields
from protocols.errors import AuthenticationError, DecodeError, EncodeError, EnvelopeError, EnvelopeRejection, quote
from protocols.keys import SIGNATURE_LEN, HubIdentity, sign_detached, verify_detached
from protocols.record import MAX_RECORD_BYTES, Record, peek_record_hub
from protocols.topics import is_valid_hub_id

__all__ = [
    "ENVELOPE_DOMAIN",
    "ENVELOPE_VERSION",
    "MAX_ENVELOPE_BYTES",
    "MAX_RECORDS_PER_ENVELOPE",
    "SEAL_OVERHEAD",
    "OpenedEnvelope",
    "ReplayWindow",
    "SeqStatus",
    "open_envelope",
    "seal",
]

ENVELOPE_VERSION: Final = 1
ENVELOPE_DOMAIN: Final = b"carehub/v1/envelope\x00"
SEAL_OVERHEAD: Final = 48
"""crypto_box_seal adds an ephemeral public key (32 bytes) and a Poly1305 tag (16 bytes)."""
MAX_RECORDS_PER_ENVELOPE: Final = 128
MAX_ENVELOPE_BYTES: Final = 65_536
_INNER_KEYS: Final = frozenset({"v", "hub", "seq", "sealed_at", "records"})


@dataclass(frozen=True, slots=True)
class OpenedEnvelope:
    """An envelope the platform has opened and verified.

    Attributes:
        hub_id: the hub whose key signed it.
        seq: the hub's envelope sequence number.
        sealed_at: when the hub sealed it (UTC).
        records: the encoded records, byte for byte as the hub made them.
        decoded: the same records decoded (:class:`protocols.record.Record`).
    """

    hub_id: str
    seq: int
    sealed_at: _dt.datetime
    records: tuple[bytes, ...]
    decoded: tuple[Record, ...]


def seal(
    hub: HubIdentity,
    platform_box_key: nacl.public.PublicKey,
    seq: int,
    sealed_at: _dt.datetime,
    records: Sequence[bytes],
) -> bytes:
    """Sign ``records`` with the hub's key, then seal them to the platform.

    Args:
        hub: the hub's identity (its id goes into the envelope, its key signs it).
        platform_box_key: the platform's X25519 public key.
        seq: this envelope's per-hub sequence number (strictly increasing, never reused), 0..``cbor.MAX_UINT``.
        sealed_at: now, timezone-aware.
        records: 1 to :data:`MAX_RECORDS_PER_ENVELOPE` encoded records (:meth:`Record.to_cbor`), each naming
            ``hub.hub_id``.

    Returns:
        The sealed envelope, at most :data:`MAX_ENVELOPE_BYTES`.

    Raises:
        EncodeError: no records or too many, a record that does not decode or names another hub, ``seq`` out of
            range, or too large.
    """
    if not is_valid_hub_id(hub.hub_id):
        raise EncodeError(f"{hub.hub_id!r} is not a valid hub id")
    if not cbor.is_uint(seq):
        raise EncodeError(f"envelope seq must be an integer in 0..{cbor.MAX_UINT}, not {quote(seq)}")
    if not 0 < len(records) <= MAX_RECORDS_PER_ENVELOPE:
        raise EncodeError(f"an envelope carries 1..{MAX_RECORDS_PER_ENVELOPE} records, not {len(records)}")
    for index, record in enumerate(records):
        try:
            named = peek_record_hub(bytes(record))
        except DecodeError as exc:
            raise EncodeError(f"record {index} is not a valid record: {exc}") from exc
        if named != hub.hub_id:
            raise EncodeError(f"record {index} names hub {named!r}, not {hub.hub_id!r}")
    inner = cbor.dumps(
        {
            "v": ENVELOPE_VERSION,
            "hub": hub.hub_id,
            "seq": seq,
            "sealed_at": cbor.to_micros(sealed_at),
            "records": [bytes(r) for r in records],
        },
        "envelope",
    )
    if len(inner) + SIGNATURE_LEN + SEAL_OVERHEAD > MAX_ENVELOPE_BYTES:
        raise EncodeError(f"envelope would exceed {MAX_ENVELOPE_BYTES} bytes; put fewer records in it")
    signature = sign_detached(hub.signing_key, ENVELOPE_DOMAIN, inner)
    return bytes(nacl.public.SealedBox(platform_box_key).encrypt(signature + inner))


def _reject(reason: EnvelopeRejection, detail: str) -> EnvelopeError:
    return EnvelopeError(reason, detail)


def open_envelope(
    data: bytes,
    platform_private: nacl.public.PrivateKey,
    known_hubs: Mapping[str, nacl.signing.VerifyKey],
    *,
    expected_hub: str | None = None,
) -> OpenedEnvelope:
    """Open, verify and decode one envelope.

    Checks, in order: size; the seal (``CANNOT_OPEN``); the inner structure (``MALFORMED``); that the named hub is
    enrolled (``UNKNOWN_HUB``); its signature (``BAD_SIGNATURE``); that the hub is ``expected_hub``, i.e. the hub
    whose topic it arrived on (``HUB_MISMATCH``); every record decodes (``MALFORMED``) and names the same hub
    (``HUB_MISMATCH``).

    Args:
        data: the sealed envelope.
        platform_private: the platform's X25519 private key.
        known_hubs: enrolled hubs' Ed25519 public keys by hub id.
        expected_hub: the hub id from the topic the envelope arrived on, if it should be checked.

    Returns:
        The verified envelope.

    Raises:
        EnvelopeError: with the rejection reason; nothing else escapes.
    """
    if not SEAL_OVERHEAD + SIGNATURE_LEN < len(data) <= MAX_ENVELOPE_BYTES:
        raise _reject(EnvelopeRejection.MALFORMED, f"{len(data)} bytes is not a possible envelope size")
    try:
        plaintext = nacl.public.SealedBox(platform_private).decrypt(bytes(data))
    except nacl.exceptions.CryptoError as exc:
        raise _reject(EnvelopeRejection.CANNOT_OPEN, "not sealed to this platform key, or altered") from exc
    signature, inner = plaintext[:SIGNATURE_LEN], plaintext[SIGNATURE_LEN:]
    try:
        f = Fields(cbor.loads(inner, "envelope"), "envelope", _INNER_KEYS)
        if f.uint("v") != ENVELOPE_VERSION:
            raise f.fail("v", f"unsupported envelope version {quote(f.raw('v'))}")
        hub_id = f.text("hub", 63)
        seq = f.uint("seq")
        sealed_at = f.time("sealed_at")
        raw_records = f.raw("records")
        if not isinstance(raw_records, list) or not 0 < len(raw_records) <= MAX_RECORDS_PER_ENVELOPE:
            raise f.fail("records", f"expected an array of 1..{MAX_RECORDS_PER_ENVELOPE} records")
        records = tuple(r for r in raw_records if isinstance(r, bytes) and len(r) <= MAX_RECORD_BYTES)
        if len(records) != len(raw_records):
            raise f.fail("records", f"every record is a byte string of at most {MAX_RECORD_BYTES} bytes")
    except DecodeError as exc:
        raise _reject(EnvelopeRejection.MALFORMED, str(exc)) from exc
    verify_key = known_hubs.get(hub_id)
    if verify_key is None:
        raise _reject(EnvelopeRejection.UNKNOWN_HUB, f"hub {hub_id!r} is not enrolled")
    try:
        verify_detached(verify_key, ENVELOPE_DOMAIN, inner, signature)
    except AuthenticationError as exc:
        raise _reject(EnvelopeRejection.BAD_SIGNATURE, f"not signed by hub {hub_id!r}") from exc
    if expected_hub is not None and hub_id != expected_hub:
        raise _reject(EnvelopeRejection.HUB_MISMATCH, f"envelope of hub {hub_id!r} arrived as {expected_hub!r}")
    decoded: list[Record] = []
    for index, raw in enumerate(records):
        try:
            record = Record.from_cbor(raw)
        except DecodeError as exc:
            raise _reject(EnvelopeRejection.MALFORMED, f"record {index}: {exc}") from exc
        if record.hub_id != hub_id:
            raise _reject(
                EnvelopeRejection.HUB_MISMATCH, f"record {index} names hub {record.hub_id!r}, signed by {hub_id!r}"
            )
        decoded.append(record)
    return OpenedEnvelope(hub_id, seq, sealed_at, records, tuple(decoded))


# --- replay classification -------------------------------------------------------------------------------------------


class SeqStatus(enum.Enum):
    """How an envelope sequence number relates to what a hub has sent before."""

    NEW = "new"
    """Not seen: store it."""
    DUPLICATE = "duplicate"
    """Seen and stored before (a redelivery after a lost ack): ack it again, store nothing."""
    TOO_OLD = "too_old"
    """Below the window: the window cannot tell; consult durable storage, or treat as a replay."""


@dataclass(slots=True)
class _HubWindow:
    high: int
    seen: set[int] = field(default_factory=set)


class ReplayWindow:
    """Per-hub sliding window of accepted envelope sequence numbers (high-water mark plus recent set).

    Sequence numbers may arrive out of order (the priority lane overtakes the backlog; frames are re-sent after a
    lost ack), so everything within ``size`` below the highest accepted number is remembered individually.
    :meth:`check` is pure; call :meth:`mark` only once the envelope is durably stored.
    """

    __slots__ = ("_hubs", "_size")

    def __init__(self, size: int = 4096) -> None:
        """Create an empty window remembering ``size`` sequence numbers per hub below the high-water mark."""
        if size < 1:
            raise ValueError("window size must be positive")
        self._size = size
        self._hubs: dict[str, _HubWindow] = {}

    def check(self, hub_id: str, seq: int) -> SeqStatus:
        """Classify ``seq`` for ``hub_id`` without changing the window."""
        window = self._hubs.get(hub_id)
        if window is None or seq > window.high:
            return SeqStatus.NEW
        if seq <= window.high - self._size:
            return SeqStatus.TOO_OLD
        return SeqStatus.DUPLICATE if seq in window.seen else SeqStatus.NEW

    def mark(self, hub_id: str, seq: int) -> None:
        """Record ``seq`` as accepted for ``hub_id``."""
        window = self._hubs.setdefault(hub_id, _HubWindow(seq))
        window.seen.add(seq)
        window.high = max(window.high, seq)
        if len(window.seen) > 2 * self._size:  # prune in batches so marking stays O(1) amortised
            floor = window.high - self._size
            window.seen = {s for s in window.seen if s > floor}

    def high_water(self, hub_id: str) -> int | None:
        """The highest sequence number accepted from ``hub_id``, or ``None``."""
        window = self._hubs.get(hub_id)
        return None if window is None else window.high
