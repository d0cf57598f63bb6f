"""JetStream's uplink frames for the shared ingest core (:class:`community.ingest_core.IngestCore`).

NATS's MQTT listener maps MQTT topic ``carehub/v1/<hub>/up`` to subject ``carehub.v1.<hub>.up``; a :class:`Frame` is
one fetched message with the subject it arrived on, and the core reads its topic back from that. A fetched batch is
stored in one transaction (:meth:`IngestCore.handle`): 64 frames cost one commit, not 64. Only after that commit are
the acks returned; the worker publishes them and then acks the JetStream messages; on
:class:`~community.storage.StorageError` nothing is acked and the stream delivers the frames again. An envelope that
appears twice in one batch (a hub's re-send fetched together with the original) is stored once and acked as stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from community.ingest_core import IngestCore

__all__ = ["BatchIngest", "Frame", "subject_to_topic", "topic_to_subject"]

BatchIngest: Final = IngestCore
"""The core as the JetStream worker uses it (the same class as the Mosquitto worker's)."""


def topic_to_subject(topic: str) -> str:
    """The NATS subject of an MQTT topic, as NATS's MQTT listener maps it (``/`` becomes ``.``; carehub topics hold
    no ``.``, ``*`` or ``>``)."""
    return topic.replace("/", ".")


def subject_to_topic(subject: str) -> str:
    """The MQTT topic of a NATS subject (the inverse of :func:`topic_to_subject` for carehub topics)."""
    return subject.replace(".", "/")


@dataclass(frozen=True, slots=True)
class Frame:
    """One uplink frame as JetStream delivered it (a :class:`community.ingest_core.Uplink`)."""

    subject: str
    payload: bytes

    @property
    def topic(self) -> str:
        """The MQTT topic of its subject."""
        return subject_to_topic(self.subject)
