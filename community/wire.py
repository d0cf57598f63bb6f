"""carehub wire protocol v1 as the uplink and the platform speak it: thin adapters over :mod:`protocols`.

Nothing here encodes or signs anything itself; ``docs/protocol.md`` and :mod:`protocols` are the one wire format.

* The hub's side is :class:`gateway.wire.HubWire`; this package never imports the hub (``community`` depends on
  :mod:`protocols` only).
* :class:`PlatformCodec` (satisfies :class:`community.ingest.PlatformWire`): the shared uplink filter, frames
  split (:func:`~protocols.topics.decode_uplink`), envelopes opened and verified
  (:func:`protocols.envelope.open_envelope`), acks and down-messages signed with the platform's
  :class:`~protocols.keys.PlatformIdentity`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import nacl.exceptions
import nacl.public
import nacl.signing

from protocols import cbor
from protocols.acks import Ack, sign_ack
from protocols.envelope import MAX_ENVELOPE_BYTES, SEAL_OVERHEAD, OpenedEnvelope, open_envelope
from protocols.errors import ProtocolError
from protocols.keys import SIGNATURE_LEN, PlatformIdentity, PlatformPublicKeys
from protocols.messages import DownMessage, sign_message
from protocols.topics import (
    ALARM_FILTER,
    UPLINK_FILTER,
    TopicError,
    TopicKind,
    ack_topic,
    decode_uplink,
    down_topic,
    is_valid_hub_id,
    parse_topic,
    shared_alarm_filter,
    shared_uplink_filter,
)

__all__ = ["PlatformCodec"]


class PlatformCodec:
    """The platform's side of the wire.

    Args:
        identity: the platform's Ed25519 signing key and X25519 private key.
    """

    __slots__ = ("_identity",)

    def __init__(self, identity: PlatformIdentity) -> None:
        self._identity = identity

    @property
    def public(self) -> PlatformPublicKeys:
        """The public keys to install on hubs."""
        return self._identity.public

    def uplink_filter(self, share_group: str) -> str:
        """``$share/<group>/carehub/v1/+/up``; the plain ``carehub/v1/+/up`` for an empty group (a single worker on a
        broker without shared subscriptions, such as the embedded one the demo falls back to)."""
        return shared_uplink_filter(share_group) if share_group else UPLINK_FILTER

    def alarm_filter(self, share_group: str) -> str:
        """``$share/<group>/carehub/v1/+/alarm`` (the priority lane's uplink); without a group, the plain filter."""
        return shared_alarm_filter(share_group) if share_group else ALARM_FILTER

    def hub_of_uplink(self, topic: str) -> str | None:
        """The hub id of ``carehub/v1/<hub>/up`` or ``carehub/v1/<hub>/alarm``, or ``None`` for any other topic."""
        try:
            parsed = parse_topic(topic)
        except TopicError:
            return None
        return parsed.hub_id if parsed.kind in (TopicKind.UP, TopicKind.ALARM) else None

    def ack_topic(self, hub: str) -> str:
        """``carehub/v1/<hub>/ack``."""
        return ack_topic(hub)

    def down_topic(self, hub: str) -> str:
        """``carehub/v1/<hub>/down``."""
        return down_topic(hub)

    def split_frame(self, payload: bytes) -> Sequence[bytes]:
        """The sealed envelopes in an uplink frame.

        Raises:
            DecodeError: not a version-1 frame.
        """
        return decode_uplink(payload)

    def open(
        self, envelope: bytes, known_hubs: Mapping[str, nacl.signing.VerifyKey], expected_hub: str
    ) -> OpenedEnvelope:
        """Open, verify and decode one envelope that arrived on ``expected_hub``'s uplink topic.

        Raises:
            EnvelopeError: refused, with the reason (:func:`protocols.envelope.open_envelope`).
        """
        return open_envelope(envelope, self._identity.box_key, known_hubs, expected_hub=expected_hub)

    def peek(self, envelope: bytes) -> tuple[str, int] | None:
        """The ``hub`` and ``seq`` an envelope's inner map names, read WITHOUT checking its signature.

        Used only to name an envelope the platform refuses in the ack to the hub whose topic it arrived on (the
        broker's ACL lets only that hub publish there). ``None`` when the envelope cannot be opened with this
        platform's key or its inner map does not name a valid hub id and an unsigned sequence number.
        """
        if not SEAL_OVERHEAD + SIGNATURE_LEN < len(envelope) <= MAX_ENVELOPE_BYTES:
            return None
        try:
            plaintext = nacl.public.SealedBox(self._identity.box_key).decrypt(bytes(envelope))
            inner = cbor.loads(plaintext[SIGNATURE_LEN:], "envelope")
        except (nacl.exceptions.CryptoError, ProtocolError):
            return None
        if not isinstance(inner, dict):
            return None
        hub, seq = inner.get("hub"), inner.get("seq")
        if not isinstance(hub, str) or not is_valid_hub_id(hub) or not cbor.is_uint(seq):
            return None
        return hub, seq  # type: ignore[return-value]  # is_uint checked it is an int

    def encode_ack(self, ack: Ack) -> bytes:
        """The platform-signed ack for ``carehub/v1/<ack.hub_id>/ack``."""
        return sign_ack(ack, self._identity.signing_key)

    def encode_down(self, message: DownMessage) -> bytes:
        """The platform-signed down-message for ``carehub/v1/<message.hub_id>/down``."""
        return sign_message(message, self._identity.signing_key)
