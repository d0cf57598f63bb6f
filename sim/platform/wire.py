"""carehub wire protocol v1 as the uplink and the platform speak it: thin adapters over :mod:`protocols`.

Nothing here encodes or signs anything itself; ``docs/protocol.md`` and :mod:`protocols` are the one wire format.

* :class:`HubWire` (satisfies :class:`gateway.uplink.UplinkWire`): the hub's topics (:mod:`protocols.topics`),
  uplink frames (:func:`~protocols.topics.encode_uplink`), envelopes sealed with the hub's
  :class:`~protocols.keys.HubIdentity` to the platform's :class:`~protocols.keys.PlatformPublicKeys`
  (:func:`protocols.envelope.seal`), platform acks verified for this hub (:func:`protocols.acks.verify_ack`) and
  down-messages verified with replay refusal (:func:`protocols.messages.verify_message`).
* :class:`PlatformCodec` (satisfies :class:`sim.platform.ingest.PlatformWire`): the shared uplink filter, frames
  split (:func:`~protocols.topics.decode_uplink`), envelopes opened and verified
  (:func:`protocols.envelope.open_envelope`), acks and down-messages signed with the platform's
  :class:`~protocols.keys.PlatformIdentity`.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence

import nacl.signing

from protocols.acks import Ack, sign_ack, verify_ack
from protocols.envelope import OpenedEnvelope, open_envelope, seal
from protocols.keys import HubIdentity, PlatformIdentity, PlatformPublicKeys
from protocols.messages import DownMessage, sign_message, verify_message
from protocols.record import Record
from protocols.topics import (
    TopicError,
    TopicKind,
    ack_topic,
    decode_uplink,
    down_topic,
    encode_uplink,
    parse_topic,
    shared_uplink_filter,
    up_topic,
)

__all__ = ["HubWire", "PlatformCodec"]


class HubWire:
    """The hub's side of the wire.

    Args:
        identity: the hub's id and Ed25519 signing key.
        platform: the platform's public keys (verify key for acks and down-messages, box key to seal to).
        last_down_seq: the highest down-message ``seq`` this hub accepted before (persisted by the hub), or
            ``None`` if it never accepted one; anything not above it is refused as a replay.
    """

    __slots__ = ("_identity", "_last_down_seq", "_platform")

    def __init__(
        self, identity: HubIdentity, platform: PlatformPublicKeys, *, last_down_seq: int | None = None
    ) -> None:
        self._identity = identity
        self._platform = platform
        self._last_down_seq = last_down_seq

    @property
    def hub_id(self) -> str:
        """This hub's id."""
        return self._identity.hub_id

    @property
    def last_down_seq(self) -> int | None:
        """The highest down-message ``seq`` accepted so far (persist it to refuse replays after a restart)."""
        return self._last_down_seq

    def seal(self, seq: int, records: Sequence[Record], sealed_at: _dt.datetime) -> bytes:
        """Encode ``records`` (CBOR), sign them with the hub's key and seal them to the platform.

        Raises:
            EncodeError: see :func:`protocols.envelope.seal`.
        """
        return seal(self._identity, self._platform.box_key, seq, sealed_at, [r.to_cbor() for r in records])

    def up_topic(self) -> str:
        """``carehub/v1/<hub>/up``."""
        return up_topic(self.hub_id)

    def ack_topic(self) -> str:
        """``carehub/v1/<hub>/ack``."""
        return ack_topic(self.hub_id)

    def down_topic(self) -> str:
        """``carehub/v1/<hub>/down``."""
        return down_topic(self.hub_id)

    def encode_frame(self, envelopes: Sequence[bytes]) -> bytes:
        """One uplink frame (:func:`protocols.topics.encode_uplink`)."""
        return encode_uplink(envelopes)

    def open_ack(self, payload: bytes) -> Ack:
        """Verify an ack: signed by the platform and addressed to this hub.

        Raises:
            AuthenticationError: not signed by the platform, or for another hub.
            DecodeError: signed but malformed.
        """
        return verify_ack(payload, self._platform.verify_key, self.hub_id)

    def open_down(self, payload: bytes) -> DownMessage:
        """Verify a down-message (signed by the platform, for this hub, ``seq`` above the last accepted one).

        Raises:
            AuthenticationError: not signed by the platform, or for another hub.
            ReplayError: authentic, but its ``seq`` was accepted before (or is older).
            DecodeError: signed but malformed.
        """
        message = verify_message(payload, self._platform.verify_key, self.hub_id, self._last_down_seq)
        self._last_down_seq = message.seq
        return message


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
        """``$share/<group>/carehub/v1/+/up``."""
        return shared_uplink_filter(share_group)

    def hub_of_uplink(self, topic: str) -> str | None:
        """The hub id of ``carehub/v1/<hub>/up``, or ``None`` for any other topic."""
        try:
            parsed = parse_topic(topic)
        except TopicError:
            return None
        return parsed.hub_id if parsed.kind is TopicKind.UP else None

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

    def encode_ack(self, ack: Ack) -> bytes:
        """The platform-signed ack for ``carehub/v1/<ack.hub_id>/ack``."""
        return sign_ack(ack, self._identity.signing_key)

    def encode_down(self, message: DownMessage) -> bytes:
        """The platform-signed down-message for ``carehub/v1/<message.hub_id>/down``."""
        return sign_message(message, self._identity.signing_key)
