"""An interim wire codec for the uplink and the reference platform, on PyNaCl and CBOR.

``protocols.envelope``/``topics``/``acks`` were not in the tree when the uplink and platform were written; this
module implements the same contract (sign with the hub's Ed25519 key, then seal to the platform's X25519 key; frames
carrying several sealed envelopes; platform-signed acks and down-messages) so the I/O can be built and tested end to
end. :class:`HubWire` satisfies :class:`gateway.uplink.UplinkWire`; :class:`PlatformCodec` satisfies
:class:`sim.platform.ingest.PlatformWire`. Swapping in the ``protocols`` codecs changes only these two classes.

Layouts (all CBOR):
  envelope plaintext   {"hub": str, "seq": int, "records": [record]}, signed (Ed25519, 64-byte prefix), sealed box
  record               {"id": str, "kind": str, "device": str|None, "values": map, "at": float|None}
  frame                {"v": 1, "envelopes": [bytes]}
  ack (signed)         {"v": 1, "type": "ack", "hub": str, "stored": [int], "rejected": [[int, str]]}
  alarm ack (signed)   {"v": 1, "type": "alarm_ack", "hub": str, "record": str, "caregiver": str, "at": float}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2
import nacl.exceptions
import nacl.public
import nacl.signing

from gateway.uplink import AckReport
from protocols.errors import AuthenticationError, DecodeError, EnvelopeError, EnvelopeRejection
from sim.platform.storage import EnvelopeToStore, StoredReading

__all__ = ["AlarmAck", "HubWire", "PlatformCodec", "WireRecord", "topic"]

TOPIC_ROOT = "carehub/v1"
_SIG_LEN = 64


def topic(hub: str, leaf: str) -> str:
    """``carehub/v1/<hub>/<leaf>``."""
    return f"{TOPIC_ROOT}/{hub}/{leaf}"


@dataclass(frozen=True, slots=True)
class WireRecord:
    """One record as carried inside an envelope."""

    record_id: str
    kind: str
    device: str | None
    values: Mapping[str, Any]
    at: float | None

    def to_obj(self) -> dict[str, Any]:
        """CBOR-ready form."""
        return {
            "id": self.record_id,
            "kind": self.kind,
            "device": self.device,
            "values": dict(self.values),
            "at": self.at,
        }


@dataclass(frozen=True, slots=True)
class AlarmAck:
    """A caregiver's acknowledgement of an alarm, verified."""

    hub: str
    record_id: str
    caregiver: str
    at: float


def _loads(data: bytes, what: str) -> Any:
    try:
        return cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError) as exc:
        raise DecodeError(what, None, f"not CBOR ({exc})") from exc


def _map(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DecodeError(what, None, "not a map")
    return value


class HubWire:
    """The hub's side: seals envelopes, builds frames, verifies acks and down-messages from the platform."""

    def __init__(
        self,
        hub_id: str,
        signing_key: nacl.signing.SigningKey,
        platform_box_key: nacl.public.PublicKey,
        platform_verify_key: nacl.signing.VerifyKey,
    ) -> None:
        self.hub_id = hub_id
        self._signing = signing_key
        self._box = nacl.public.SealedBox(platform_box_key)
        self._platform = platform_verify_key

    def seal(self, seq: int, records: Sequence[WireRecord], *, claimed_hub: str | None = None) -> bytes:
        """Sign then seal one envelope (``claimed_hub`` lets tests forge a sender)."""
        body = {"hub": claimed_hub or self.hub_id, "seq": seq, "records": [r.to_obj() for r in records]}
        signed = self._signing.sign(cbor2.dumps(body, canonical=True))
        return bytes(self._box.encrypt(bytes(signed)))

    def up_topic(self) -> str:
        """This hub's uplink topic."""
        return topic(self.hub_id, "up")

    def ack_topic(self) -> str:
        """This hub's ack topic."""
        return topic(self.hub_id, "ack")

    def down_topic(self) -> str:
        """This hub's down-message topic."""
        return topic(self.hub_id, "down")

    def encode_frame(self, envelopes: Sequence[bytes]) -> bytes:
        """One uplink frame."""
        return bytes(cbor2.dumps({"v": 1, "envelopes": list(envelopes)}))

    def _verified(self, payload: bytes, kind: str) -> dict[str, Any]:
        try:
            message = self._platform.verify(payload)
        except nacl.exceptions.BadSignatureError as exc:
            raise AuthenticationError(f"{kind} is not signed by the platform") from exc
        body = _map(_loads(bytes(message), kind), kind)
        if body.get("type") != kind or body.get("hub") != self.hub_id:
            raise AuthenticationError(f"{kind} is for {body.get('hub')!r}, not {self.hub_id!r}")
        return body

    def open_ack(self, payload: bytes) -> AckReport:
        """Verify an ack (platform signature, this hub's id) and return what it names."""
        body = self._verified(payload, "ack")
        stored = body.get("stored")
        rejected = body.get("rejected")
        if not isinstance(stored, list) or not isinstance(rejected, list):
            raise DecodeError("ack", None, "stored/rejected are not lists")
        if not all(isinstance(s, int) for s in stored):
            raise DecodeError("ack", None, "stored holds a non-integer")
        pairs: list[tuple[int, str]] = []
        for entry in rejected:
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], int)):
                raise DecodeError("ack", None, "malformed rejection entry")
            pairs.append((entry[0], str(entry[1])))
        return AckReport(stored=tuple(stored), rejected=tuple(pairs))

    def open_down(self, payload: bytes) -> AlarmAck:
        """Verify an alarm acknowledgement down-message."""
        body = self._verified(payload, "alarm_ack")
        record, caregiver, at = body.get("record"), body.get("caregiver"), body.get("at")
        if not isinstance(record, str) or not isinstance(caregiver, str) or not isinstance(at, int | float):
            raise DecodeError("alarm_ack", None, "missing fields")
        return AlarmAck(self.hub_id, record, caregiver, float(at))


class PlatformCodec:
    """The platform's side: splits frames, opens envelopes, signs acks and down-messages."""

    def __init__(self, signing_key: nacl.signing.SigningKey, box_key: nacl.public.PrivateKey) -> None:
        self._signing = signing_key
        self._unseal = nacl.public.SealedBox(box_key)

    def uplink_filter(self, share_group: str) -> str:
        """``$share/<group>/carehub/v1/+/up``."""
        return f"$share/{share_group}/{TOPIC_ROOT}/+/up"

    def hub_of_uplink(self, topic_name: str) -> str | None:
        """The hub id in ``carehub/v1/<hub>/up``."""
        parts = topic_name.split("/")
        if len(parts) != 4 or "/".join(parts[:2]) != TOPIC_ROOT or parts[3] != "up" or not parts[2]:
            return None
        return parts[2]

    def ack_topic(self, hub: str) -> str:
        """``carehub/v1/<hub>/ack``."""
        return topic(hub, "ack")

    def down_topic(self, hub: str) -> str:
        """``carehub/v1/<hub>/down``."""
        return topic(hub, "down")

    def split_frame(self, payload: bytes) -> list[bytes]:
        """The envelopes in a frame."""
        body = _map(_loads(payload, "frame"), "frame")
        envelopes = body.get("envelopes")
        if body.get("v") != 1 or not isinstance(envelopes, list) or not all(isinstance(e, bytes) for e in envelopes):
            raise DecodeError("frame", None, "not a version-1 frame of byte strings")
        return list(envelopes)

    def open(
        self, envelope: bytes, known_hubs: Mapping[str, bytes], expected_hub: str, received_at: float
    ) -> EnvelopeToStore:
        """Unseal, find the signer, verify, check it matches the topic's hub, decode the records."""
        try:
            signed = self._unseal.decrypt(envelope)
        except nacl.exceptions.CryptoError as exc:
            raise EnvelopeError(EnvelopeRejection.CANNOT_OPEN, "not sealed to this platform") from exc
        if len(signed) <= _SIG_LEN:
            raise EnvelopeError(EnvelopeRejection.MALFORMED, "too short to hold a signature")
        try:
            body = _map(_loads(signed[_SIG_LEN:], "envelope"), "envelope")
        except DecodeError as exc:
            raise EnvelopeError(EnvelopeRejection.MALFORMED, str(exc)) from exc
        hub, seq, records = body.get("hub"), body.get("seq"), body.get("records")
        if not isinstance(hub, str) or not isinstance(seq, int) or not isinstance(records, list):
            raise EnvelopeError(EnvelopeRejection.MALFORMED, "hub/seq/records missing")
        key = known_hubs.get(hub)
        if key is None:
            raise EnvelopeError(EnvelopeRejection.UNKNOWN_HUB, f"hub {hub!r} is not enrolled")
        try:
            nacl.signing.VerifyKey(key).verify(signed)
        except nacl.exceptions.BadSignatureError as exc:
            raise EnvelopeError(EnvelopeRejection.BAD_SIGNATURE, f"signature of {hub!r} does not verify") from exc
        if hub != expected_hub:
            raise EnvelopeError(EnvelopeRejection.HUB_MISMATCH, f"envelope of {hub!r} on {expected_hub!r}'s topic")
        readings: list[StoredReading] = []
        for rec in records:
            if not isinstance(rec, dict) or not isinstance(rec.get("id"), str) or not isinstance(rec.get("kind"), str):
                raise EnvelopeError(EnvelopeRejection.MALFORMED, "record without id or kind")
            values = rec.get("values")
            at = rec.get("at")
            device = rec.get("device")
            readings.append(
                StoredReading(
                    hub=hub,
                    record_id=rec["id"],
                    kind=rec["kind"],
                    device=device if isinstance(device, str) else None,
                    values=values if isinstance(values, dict) else {},
                    recorded_at=float(at) if isinstance(at, int | float) else None,
                    envelope_seq=seq,
                    received_at=received_at,
                )
            )
        return EnvelopeToStore(hub, seq, tuple(readings))

    def encode_ack(self, hub: str, stored: Sequence[EnvelopeToStore], rejected: Sequence[tuple[int, str]]) -> bytes:
        """The signed ack naming stored (and permanently rejected) envelope sequence numbers."""
        body = {
            "v": 1,
            "type": "ack",
            "hub": hub,
            "stored": [e.envelope_seq for e in stored],
            "rejected": [[seq, reason] for seq, reason in rejected],
        }
        return bytes(self._signing.sign(cbor2.dumps(body, canonical=True)))

    def encode_alarm_ack(self, hub: str, record_id: str, caregiver: str, at: float) -> bytes:
        """A signed alarm acknowledgement for the hub's down topic."""
        body = {"v": 1, "type": "alarm_ack", "hub": hub, "record": record_id, "caregiver": caregiver, "at": at}
        return bytes(self._signing.sign(cbor2.dumps(body, canonical=True)))
