"""MQTT topics and uplink frames of carehub wire protocol v1 (``docs/protocol.md`` §5 and §6).

Topics, one set per hub::

    carehub/v1/<hub>/up     hub -> platform   uplink frames (sealed envelopes), routine lane
    carehub/v1/<hub>/alarm  hub -> platform   uplink frames of the priority lane (alarms, panics, evictions)
    carehub/v1/<hub>/ack    platform -> hub   signed acks (protocols.acks)
    carehub/v1/<hub>/down   platform -> hub   signed messages (protocols.messages)

Platform ingest workers share every hub's uplink through ``$share/<group>/carehub/v1/+/up`` and
``$share/<group>/carehub/v1/+/alarm``. The alarm topic exists so a platform can read alarms apart from a backlog of
routine frames (its own stream and consumers on NATS JetStream, ``community.nats_ingest``); ``docs/protocol.md`` §5.

An uplink frame is the deterministic CBOR map ``{"v": 1, "envelopes": [bstr, ...]}`` with 1 to
:data:`MAX_UPLINK_ENVELOPES` envelopes and at most :data:`MAX_UPLINK_BYTES` bytes in all.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from protocols import cbor
from protocols.errors import DecodeError, EncodeError, quote

__all__ = [
    "ALARM_FILTER",
    "HUB_ID_PATTERN",
    "MAX_UPLINK_BYTES",
    "MAX_UPLINK_ENVELOPES",
    "TOPIC_PREFIX",
    "UPLINK_FILTER",
    "ParsedTopic",
    "TopicError",
    "TopicKind",
    "ack_topic",
    "alarm_topic",
    "decode_uplink",
    "down_topic",
    "encode_uplink",
    "hub_topic",
    "is_valid_hub_id",
    "parse_topic",
    "shared_alarm_filter",
    "shared_uplink_filter",
    "up_topic",
]

TOPIC_PREFIX: Final = "carehub/v1"
HUB_ID_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
"""A hub id: 2 to 63 characters, lowercase ASCII letters, digits and ``-``, not starting with ``-``."""
UPLINK_FILTER: Final = f"{TOPIC_PREFIX}/+/up"
ALARM_FILTER: Final = f"{TOPIC_PREFIX}/+/alarm"
MAX_UPLINK_ENVELOPES: Final = 64
MAX_UPLINK_BYTES: Final = 262_144
_FRAME_VERSION: Final = 1
_SHARE_GROUP: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


class TopicError(DecodeError):
    """A topic name that is not one of the carehub v1 topics."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        super().__init__("topic", None, f"{quote(topic, 80)}: {reason}")


class TopicKind(enum.Enum):
    """The per-hub topics."""

    UP = "up"
    ALARM = "alarm"
    ACK = "ack"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """A topic name taken apart.

    Attributes:
        hub_id: the hub the topic belongs to.
        kind: which of its topics.
    """

    hub_id: str
    kind: TopicKind


def is_valid_hub_id(hub_id: str) -> bool:
    """Whether ``hub_id`` matches :data:`HUB_ID_PATTERN` (so it can never hold ``/``, ``+`` or ``#``)."""
    return HUB_ID_PATTERN.fullmatch(hub_id) is not None


def hub_topic(hub_id: str, kind: TopicKind) -> str:
    """``carehub/v1/<hub>/<kind>``.

    Raises:
        EncodeError: ``hub_id`` is not a valid hub id.
    """
    if not is_valid_hub_id(hub_id):
        raise EncodeError(f"{hub_id!r} is not a valid hub id ([a-z0-9][a-z0-9-]{{1,62}})")
    return f"{TOPIC_PREFIX}/{hub_id}/{kind.value}"


def up_topic(hub_id: str) -> str:
    """The hub's uplink topic ``carehub/v1/<hub>/up``."""
    return hub_topic(hub_id, TopicKind.UP)


def alarm_topic(hub_id: str) -> str:
    """The hub's priority-lane uplink topic ``carehub/v1/<hub>/alarm``."""
    return hub_topic(hub_id, TopicKind.ALARM)


def ack_topic(hub_id: str) -> str:
    """The hub's ack topic ``carehub/v1/<hub>/ack``."""
    return hub_topic(hub_id, TopicKind.ACK)


def down_topic(hub_id: str) -> str:
    """The hub's down-message topic ``carehub/v1/<hub>/down``."""
    return hub_topic(hub_id, TopicKind.DOWN)


def parse_topic(topic: str) -> ParsedTopic:
    """Take a received topic name apart.

    Raises:
        TopicError: not ``carehub/v1/<valid hub id>/{up,alarm,ack,down}``.
    """
    parts = topic.split("/")
    if len(parts) != 4 or f"{parts[0]}/{parts[1]}" != TOPIC_PREFIX:
        raise TopicError(topic, f"not of the form {TOPIC_PREFIX}/<hub>/<kind>")
    hub, leaf = parts[2], parts[3]
    if not is_valid_hub_id(hub):
        raise TopicError(topic, f"{quote(hub)} is not a valid hub id")
    try:
        kind = TopicKind(leaf)
    except ValueError:
        raise TopicError(topic, f"unknown topic kind {quote(leaf)}") from None
    return ParsedTopic(hub, kind)


def shared_uplink_filter(group: str) -> str:
    """The shared-subscription filter ``$share/<group>/carehub/v1/+/up`` for platform ingest workers.

    Raises:
        EncodeError: ``group`` is empty or holds characters other than letters, digits, ``_`` and ``-``.
    """
    if _SHARE_GROUP.fullmatch(group) is None:
        raise EncodeError(f"{group!r} is not a valid share group name")
    return f"$share/{group}/{UPLINK_FILTER}"


def shared_alarm_filter(group: str) -> str:
    """The shared-subscription filter ``$share/<group>/carehub/v1/+/alarm`` (the priority lane's uplink).

    Raises:
        EncodeError: as :func:`shared_uplink_filter`.
    """
    shared_uplink_filter(group)
    return f"$share/{group}/{ALARM_FILTER}"


def encode_uplink(envelopes: Sequence[bytes]) -> bytes:
    """One uplink frame carrying ``envelopes`` (sealed, as produced by :func:`protocols.envelope.seal`).

    Raises:
        EncodeError: no envelopes, more than :data:`MAX_UPLINK_ENVELOPES`, or more than :data:`MAX_UPLINK_BYTES`.
    """
    if not envelopes:
        raise EncodeError("an uplink frame carries at least one envelope")
    if len(envelopes) > MAX_UPLINK_ENVELOPES:
        raise EncodeError(f"{len(envelopes)} envelopes exceed the frame limit of {MAX_UPLINK_ENVELOPES}")
    frame = cbor.dumps({"v": _FRAME_VERSION, "envelopes": [bytes(e) for e in envelopes]}, "uplink")
    if len(frame) > MAX_UPLINK_BYTES:
        raise EncodeError(f"frame of {len(frame)} bytes exceeds the limit of {MAX_UPLINK_BYTES}")
    return frame


def decode_uplink(payload: bytes) -> tuple[bytes, ...]:
    """The sealed envelopes in an uplink frame (not yet opened).

    Raises:
        DecodeError: oversized, not a deterministic CBOR version-1 frame, or without envelopes.
    """
    if len(payload) > MAX_UPLINK_BYTES:
        raise DecodeError("uplink", None, f"{len(payload)} bytes exceed the limit of {MAX_UPLINK_BYTES}")
    body = cbor.loads(payload, "uplink")
    if not isinstance(body, dict) or set(body) != {"v", "envelopes"}:
        raise DecodeError("uplink", None, "not a map with exactly the keys 'v' and 'envelopes'")
    if type(body["v"]) is not int or body["v"] != _FRAME_VERSION:
        raise DecodeError("uplink", None, f"unsupported frame version {quote(body['v'])}")
    envelopes = body["envelopes"]
    if not isinstance(envelopes, list) or not envelopes or len(envelopes) > MAX_UPLINK_ENVELOPES:
        raise DecodeError("uplink", None, f"'envelopes' is not an array of 1..{MAX_UPLINK_ENVELOPES} items")
    out: list[bytes] = []
    for envelope in envelopes:
        if not isinstance(envelope, bytes):
            raise DecodeError("uplink", None, "an envelope is not a byte string")
        out.append(envelope)
    return tuple(out)
