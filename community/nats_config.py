"""Settings of an ingest worker on a NATS JetStream cluster, and the ``[nats]`` table of ``platform.toml``.

Example (``docs/platform-nats.md``)::

    [nats]
    servers = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222", "nats://10.0.0.3:4222"]
    # username = "platform"           # optional, with password
    # password = "..."
    # ca_file = "tls/ca.pem"          # the site CA: connect with TLS (carehub platform broker-config --tls-dir)
    durable = "ingest"                # the shared durable pull consumers (one per stream) every worker reads
    batch = 64                        # frames fetched (and committed in one transaction) at a time
    max_ack_pending = 1024            # frames handed out and not yet acked, across all workers of the consumer
    ack_wait_s = 30                   # a fetched frame not acked by then is delivered again (to any worker)
    replicas = 3                      # JetStream replicas of the streams the workers create (1 on one node)

``[broker] url = "nats://host:port"`` is a short form of ``[nats] servers = ["nats://host:port"]``.
This module imports nothing of nats-py, so the config can be read where nats-py is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

__all__ = [
    "ALARM_STREAM",
    "ALARM_SUBJECTS",
    "UP_STREAM",
    "UP_SUBJECTS",
    "NatsConfigError",
    "NatsSettings",
    "nats_from_config",
    "parse_nats_table",
    "parse_nats_url",
]

UP_STREAM: Final = "CAREHUB_UP"
"""The stream of routine uplink frames (MQTT ``carehub/v1/<hub>/up`` is NATS subject ``carehub.v1.<hub>.up``)."""
UP_SUBJECTS: Final = "carehub.v1.*.up"
ALARM_STREAM: Final = "CAREHUB_ALARM"
"""The stream of priority-lane frames (``carehub/v1/<hub>/alarm``, docs/protocol.md §5): its own consumer."""
ALARM_SUBJECTS: Final = "carehub.v1.*.alarm"


class NatsConfigError(ValueError):
    """A ``[nats]`` setting that cannot be used (the message names the key)."""


@dataclass(frozen=True, slots=True)
class NatsSettings:
    """How one ingest worker reaches the JetStream cluster and how much work it takes at once.

    Attributes:
        servers: client URLs of the cluster's nodes (``nats://host:port``); the client fails over between them.
        username, password: credentials, if the cluster requires them.
        ca_file: the site CA (``carehub platform tls``) the nodes' certificates are checked against; the worker
            then connects with TLS (what ``carehub platform broker-config --nats-node --tls-dir`` writes).
        durable: the name of the durable pull consumers every worker shares (``<durable>`` on the routine stream,
            ``<durable>-alarm`` on the alarm stream).
        batch: routine frames fetched at a time, stored in one transaction, acked after it.
        alarm_batch: alarm-lane frames fetched at a time.
        max_ack_pending: frames of a consumer handed out and not yet acked, over all workers: the bound on work in
            flight (the rest stays in the stream).
        ack_wait_s: a handed-out frame not acked within this is delivered again.
        replicas: JetStream replicas of the streams (1 on a single node, 3 on a district's cluster).
        fetch_wait_s: how long one fetch waits for frames before asking again.
        client_name: the connection's name, as the server's monitoring shows it.
        max_consecutive_failures: defects in a row after which the worker gives up (``carehub platform run`` exits).
    """

    servers: tuple[str, ...]
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    durable: str = "ingest"
    batch: int = 64
    alarm_batch: int = 16
    max_ack_pending: int = 1024
    ack_wait_s: float = 30.0
    replicas: int = 1
    fetch_wait_s: float = 1.0
    client_name: str = "carehub-platform"
    max_consecutive_failures: int = 5
    backoff_base: float = 0.2
    """The first delay before reconnecting to the cluster after a lost connection or a defect (doubling, jittered)."""
    backoff_cap: float = 10.0
    """The longest such delay."""
    down_resend_after_s: float = 30.0
    """An unconfirmed down-message is published again this long after its last publish (community.downbox)."""
    down_sweep_every_s: float = 30.0
    """How often the worker looks for unconfirmed down-messages to publish again."""

    def __post_init__(self) -> None:
        if not self.servers:
            raise NatsConfigError("servers: at least one nats://host:port is required")
        for url in self.servers:
            parse_nats_url(url)
        if not self.durable or not all(c.isalnum() or c in "_-" for c in self.durable):
            raise NatsConfigError(f"durable {self.durable!r}: use letters, digits, _ and -")
        if not 1 <= self.batch <= 1024 or not 1 <= self.alarm_batch <= 1024:
            raise NatsConfigError("batch and alarm_batch must be 1..1024")
        if self.max_ack_pending < max(self.batch, self.alarm_batch):
            raise NatsConfigError("max_ack_pending must be at least batch")
        if not 1.0 <= self.ack_wait_s <= 3600.0:
            raise NatsConfigError("ack_wait_s must be 1..3600 seconds")
        if self.replicas not in (1, 3, 5):
            raise NatsConfigError("replicas must be 1, 3 or 5")
        if not 0.05 <= self.fetch_wait_s <= 60.0:
            raise NatsConfigError("fetch_wait_s must be 0.05..60 seconds")
        if self.max_consecutive_failures < 1:
            raise NatsConfigError("max_consecutive_failures must be at least 1")
        if self.down_resend_after_s <= 0 or self.down_sweep_every_s <= 0:
            raise NatsConfigError("down_resend_after_s and down_sweep_every_s must be positive")
        if not 0 < self.backoff_base <= self.backoff_cap:
            raise NatsConfigError("backoff_base must be positive and at most backoff_cap")

    @property
    def worker_name(self) -> str:
        """Its connection's name."""
        return self.client_name

    @property
    def alarm_durable(self) -> str:
        """The alarm stream's consumer."""
        return f"{self.durable}-alarm"


def parse_nats_url(url: str) -> tuple[str, int]:
    """Host and port of ``nats://host[:port]`` (port 4222 by default).

    Raises:
        NatsConfigError: not such a URL.
    """
    parts = urlsplit(url)
    try:
        port = parts.port or 4222
    except ValueError:
        port = -1
    if parts.scheme != "nats" or not parts.hostname or not 1 <= port <= 65535:
        raise NatsConfigError(f"{url!r} is not nats://host:port")
    return parts.hostname, port


def parse_nats_table(table: dict[str, Any], path: Path, client_name: str) -> NatsSettings:
    """The ``[nats]`` table of ``path`` as settings.

    Raises:
        NatsConfigError: a missing or wrong key (the message names the file and key).
    """
    servers = table.get("servers")
    if not isinstance(servers, list) or not all(isinstance(s, str) for s in servers):
        raise NatsConfigError(f"{path}: [nats] servers must be a list of nats://host:port")
    kinds: dict[str, tuple[type, ...]] = {
        "username": (str,),
        "password": (str,),
        "ca_file": (str,),
        "durable": (str,),
        "batch": (int,),
        "alarm_batch": (int,),
        "max_ack_pending": (int,),
        "ack_wait_s": (int, float),
        "replicas": (int,),
        "fetch_wait_s": (int, float),
    }
    unknown = set(table) - set(kinds) - {"servers"}
    if unknown:
        raise NatsConfigError(f"{path}: [nats] unknown key(s) {', '.join(sorted(unknown))}")
    given: dict[str, Any] = {}
    for key, types in kinds.items():
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, types):
                raise NatsConfigError(f"{path}: [nats] {key} must be {' or '.join(t.__name__ for t in types)}")
            given[key] = value
    if "ca_file" in given:
        ca = Path(given["ca_file"])
        given["ca_file"] = ca if ca.is_absolute() else path.parent / ca
        if not given["ca_file"].is_file():
            raise NatsConfigError(f"{path}: [nats] ca_file {given['ca_file']} is not a file")
    try:
        return NatsSettings(servers=tuple(servers), client_name=client_name, **given)
    except NatsConfigError as exc:
        raise NatsConfigError(f"{path}: [nats] {exc}") from None


def nats_from_config(table: object, broker_url: str | None, path: Path, client_name: str) -> NatsSettings:
    """The worker's NATS settings from ``platform.toml``: its ``[nats]`` table, or ``[broker] url = "nats://..."``.

    Raises:
        NatsConfigError: a missing or wrong key (the message names the file and key).
    """
    if table is None:
        table = {"servers": [broker_url]}
    if not isinstance(table, dict):
        raise NatsConfigError(f"{path}: [nats] must be a table")
    return parse_nats_table(table, path, client_name)
