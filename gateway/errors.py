"""The root of the hub's exceptions, and the outbox's and uplink's own.

Every error the gateway raises on purpose derives from :class:`GatewayError` (dual inheritance where a builtin
helps callers, e.g. ``UnknownAlarmError(AlarmError, KeyError)``): the outbox's and uplink's below,
`gateway.transport.TransportError`, `gateway.alarms.AlarmError`, `gateway.feedback.FeedbackUnavailableError`,
`gateway.catalogue.UnknownMessageError` and `gateway.supervise.SupervisorGaveUpError`. Third-party errors
(``sqlite3.Error``, ``aiomqtt.MqttError``, ``OSError``, bleak's) are classified once, where they occur, into one of
these; callers never see the library's own exception types.
"""

from __future__ import annotations

from pathlib import Path


class GatewayError(Exception):
    """Root of the errors the gateway raises."""


class OutboxError(GatewayError):
    """The outbox database cannot be used; nothing was silently lost.

    Attributes:
        path: the database file concerned.
    """

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"outbox {path}: {reason}")


class OutboxCorruptError(OutboxError):
    """The file exists but is not a readable SQLite database (or fails its integrity check)."""


class OutboxUnwritableError(OutboxError):
    """The file or its directory cannot be created or written."""


class OutboxSchemaError(OutboxError):
    """The database carries a schema version this code does not know (written by a newer carehub)."""


class OutboxClosedError(OutboxError):
    """The outbox was used after it was closed."""


class UplinkError(GatewayError):
    """The uplink cannot run (bad configuration, unusable TLS files)."""
