"""The hub's side of carehub wire protocol v1: a thin adapter over :mod:`protocols` for the uplink.

:class:`HubWire` satisfies :class:`gateway.uplink_settings.UplinkWire`: the hub's topics (:mod:`protocols.topics`),
uplink frames (:func:`~protocols.topics.encode_uplink`), envelopes sealed with the hub's
:class:`~protocols.keys.HubIdentity` to the platform's :class:`~protocols.keys.PlatformPublicKeys`
(:func:`protocols.envelope.seal`), platform acks verified for this hub (:func:`protocols.acks.verify_ack`) and
down-messages verified with replay refusal (:func:`protocols.messages.verify_message`). The platform's side is
``community.wire.PlatformCodec``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence

from protocols.acks import Ack, verify_ack
from protocols.envelope import seal
from protocols.keys import HubIdentity, PlatformPublicKeys
from protocols.messages import DownMessage, verify_message
from protocols.record import Record
from protocols.topics import ack_topic, alarm_topic, down_topic, encode_uplink, up_topic

__all__ = ["HubWire"]


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

    def alarm_topic(self) -> str:
        """``carehub/v1/<hub>/alarm``: priority-lane frames (alarms, panics, evictions; docs/protocol.md §5)."""
        return alarm_topic(self.hub_id)

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
