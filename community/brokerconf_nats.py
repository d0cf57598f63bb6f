"""NATS cluster configuration for a district (issue 15 items 3 and 8): one config file per node, users, permissions.

Each node runs JetStream (the uplink streams of ``community.nats_config`` and the MQTT sessions), an MQTT listener
for the hubs, a client listener for the ingest workers, and routes to the other nodes. What a node's file says:

- **Hubs** log in to the MQTT listener with their hub id as user name and may publish only their own uplink subjects
  (``carehub.v1.<hub>.up`` and the priority lane's ``.alarm``, MQTT ``carehub/v1/<hub>/...``) and subscribe only to
  their own ``ack`` and ``down`` subjects, plus ``$MQTT.sub.>``, the per-session delivery subjects through which
  NATS hands a QoS 1 subscription its messages (without it the subscription is granted and never delivers). A publish
  elsewhere is dropped and logged as a violation; a subscription elsewhere is refused in the SUBACK.
- **Ingest workers** (``platform`` or ``platform-1`` .. ``platform-N``) may use every subject: they read the
  streams, publish acks and down-messages and manage their consumers.
- Passwords are stored as bcrypt hashes (NATS verifies ``$2a$``/``$2b$`` hashes itself); the plain ones are written
  once to ``credentials.toml`` (mode 0600) for the hubs' enrolment and the workers' ``platform.toml``.
- **TLS**: with a site CA (``carehub platform tls``), the MQTT listener, the client listener and the routes all use
  the broker certificate (its names must cover every node's address). Without TLS every address must be loopback
  (a test or a demo on one machine): hubs never send credentials in the clear over a network.
- **Sizes**: ``max_payload`` is the protocol's largest message plus MQTT overhead (``community.brokerconf``).
- **Stream ingest buffer** (nats-server 2.11 and later): a hub's MQTT QoS 1 publish enters the uplink stream the way
  a core NATS publish does, without a JetStream ack, and the broker PUBACKs it before the stream has stored it. The
  server queues such messages per stream and, once the queue holds ``max_buffered_msgs`` or ``max_buffered_size``
  (defaults 10,000 messages and 128 MB), drops what arrives, logging "Dropping messages due to excessive stream
  ingest rate". Nothing is lost (the hub resends what the platform never acked) but every dropped frame is sent
  twice: in a 10,000-hub reconnect storm on 2.15 this was most of a 1.31 resend amplification (README "Platform at
  scale"). :class:`IngestBuffer` sizes the queue for every hub's full window at once; older servers have no such
  limit and refuse the keys, so they are written only for a server known to take them (``--nats-version``, or
  this machine's nats-server).
- **Consumers** (:class:`ServerTuning`): every QoS 1 subscription of a hub (its ``ack`` and ``down`` topics) is a
  JetStream consumer of one MQTT stream. From 2.15 a stream takes at most 1,000 consumers unless the config lifts
  it (``jetstream.limits.default_max_consumers: -1``; 2.9 refuses that key): without it a district's 501st hub was
  refused. The consumers are kept in memory (``mqtt.consumer_memory_storage``): hubs use clean sessions, so a
  session's consumers are made anew at each connection and never need to outlive a node, and in memory a
  10,000-hub reconnect storm had its sessions set up at hundreds a second instead of about 20.

A limit of NATS, checked on 2.9.10 and 2.15.1: it has no equivalent of Mosquitto's ``use_username_as_clientid``.
A client holding any hub's credentials can connect with another hub's MQTT client id and so disconnect that hub
(the broker logs "Replacing old client"). Hubs use clean sessions, so no subscription or queued message passes to
the intruder and the hub reconnects within its backoff; nothing is lost (QoS 1 and the platform's acks), but a
district should alert on that log line. Mosquitto's one-box install is not exposed to this.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import bcrypt

from community.brokerconf import MAX_PACKET_BYTES, TlsListener, platform_users
from community.tls import is_loopback_host
from protocols import atomic
from protocols.topics import is_valid_hub_id

__all__ = [
    "IngestBuffer",
    "NatsFiles",
    "NatsNode",
    "ServerTuning",
    "local_server_version",
    "node_config_text",
    "parse_version",
    "write_nats_config",
]

_MAX_PORT: Final = 65535
_BCRYPT_COST: Final = 11
_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
_BUFFER_SINCE: Final = (2, 11)  # the first nats-server with stream ingest limits (and the config keys)
_CONSUMER_LIMIT_SINCE: Final = (2, 15)  # a stream's default limit of 1,000 consumers (2.9 has no such key)
# A hub keeps at most 8 routine and 16 priority frames unacknowledged (docs/protocol.md section 7's windows): every hub
# publishing its whole window at once, as after a broker restart, is the most a stream can be handed in one burst.
_FRAMES_PER_HUB: Final = 24
_BYTES_PER_HUB: Final = 64 * 1024  # a storm frame is 4-6 KB; the routine window's 8 frames fit with room to spare
_SERVER_DEFAULT_MSGS: Final = 10_000
_SERVER_DEFAULT_BYTES: Final = 128 * 1024 * 1024
_MAX_BUFFER_BYTES: Final = 4 * 1024 * 1024 * 1024  # a bound on one stream's queued memory, whatever the district


def parse_version(text: str) -> tuple[int, ...]:
    """``2.15.1`` or ``nats-server: v2.15.1`` as ``(2, 15, 1)``.

    Raises:
        ValueError: no ``MAJOR.MINOR`` in the text.
    """
    found = re.search(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text)
    if found is None:
        raise ValueError(f"{text!r} is not a nats-server version (e.g. 2.15.1)")
    return tuple(int(x) for x in found.groups() if x is not None)


def local_server_version() -> tuple[int, ...] | None:
    """The version of this machine's ``nats-server`` (on the PATH, or Debian's /usr/sbin one); ``None`` when there is
    none or it does not say."""
    exe = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if os.access("/usr/sbin/nats-server", os.X_OK) else None
    )
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
        return parse_version(done.stdout + done.stderr)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class IngestBuffer:
    """The stream ingest queue's limits (``jetstream { max_buffered_msgs, max_buffered_size }``).

    Attributes:
        messages: messages queued for one stream before the server drops what arrives.
        size_bytes: their bytes, likewise.
    """

    messages: int
    size_bytes: int

    @classmethod
    def for_hubs(cls, hubs: int) -> IngestBuffer:
        """Room for every hub's whole window at once, never below the server's defaults, and at most 4 GiB."""
        return cls(
            messages=max(_SERVER_DEFAULT_MSGS, hubs * _FRAMES_PER_HUB),
            size_bytes=min(_MAX_BUFFER_BYTES, max(_SERVER_DEFAULT_BYTES, hubs * _BYTES_PER_HUB)),
        )

    @staticmethod
    def supported(version: tuple[int, ...] | None) -> bool:
        """Whether a server of ``version`` takes the keys (``None``: unknown, so not: an older server refuses the
        whole config, while a newer one without them only resends more)."""
        return version is not None and version >= _BUFFER_SINCE

    def config_lines(self, indent: str) -> list[str]:
        """The keys, for inside a ``jetstream`` block."""
        return [
            f"{indent}# every hub's window at once: a full stream ingest queue drops frames the broker PUBACKed",
            f"{indent}max_buffered_msgs: {self.messages}",
            f"{indent}max_buffered_size: {self.size_bytes}",
        ]


@dataclass(frozen=True, slots=True)
class ServerTuning:
    """What a node's config sets beyond nats-server's defaults for a district's hubs, by server version.

    Attributes:
        version: the nodes' nats-server (``None``: unknown; only what every version takes is written).
        buffer: the stream ingest limits (``None``: the server's defaults).
    """

    version: tuple[int, ...] | None
    buffer: IngestBuffer | None

    @classmethod
    def for_hubs(cls, version: tuple[int, ...] | None, hubs: int) -> ServerTuning:
        """The tuning for ``hubs`` hubs on a ``version`` server."""
        return cls(version, IngestBuffer.for_hubs(hubs))

    def jetstream_lines(self, indent: str) -> list[str]:
        """For inside the ``jetstream`` block."""
        lines: list[str] = []
        if self.version is not None and self.version >= _CONSUMER_LIMIT_SINCE:
            lines += [
                f"{indent}# each hub's QoS 1 subscriptions are consumers of one MQTT stream: no limit of 1,000",
                f"{indent}limits {{",
                f"{indent}  default_max_consumers: -1",
                f"{indent}}}",
            ]
        if self.buffer is not None and IngestBuffer.supported(self.version):
            lines += self.buffer.config_lines(indent)
        elif self.buffer is not None:
            lines.append(f"{indent}# nats-server before 2.11 (or not known): no stream ingest limits to raise")
        return lines

    @staticmethod
    def mqtt_lines(indent: str) -> list[str]:
        """For inside the ``mqtt`` block."""
        return [
            f"{indent}# hubs use clean sessions: their consumers are made at each connection, never outlive a node",
            f"{indent}consumer_memory_storage: true",
        ]


@dataclass(frozen=True, slots=True)
class NatsNode:
    """One node of the cluster.

    Attributes:
        name: the server name (unique in the cluster; JetStream needs it).
        host: the address the other nodes, the workers and the hubs reach it at.
        client_port: the NATS client listener (ingest workers).
        route_port: the cluster route listener.
        mqtt_port: the hubs' MQTT listener.
    """

    name: str
    host: str
    client_port: int = 4222
    route_port: int = 6222
    mqtt_port: int = 8883

    def __post_init__(self) -> None:
        if not self.name or not set(self.name) <= _NAME_CHARS or len(self.name) > 64:
            raise ValueError(f"node name {self.name!r}: 1-64 of A-Z a-z 0-9 - _")
        if not self.host or any(c.isspace() or c in "\"'{}[]," for c in self.host):
            raise ValueError(f"node {self.name}: {self.host!r} is not a host name or address")
        ports = (self.client_port, self.route_port, self.mqtt_port)
        for port in ports:
            if type(port) is not int or not 1 <= port <= _MAX_PORT:
                raise ValueError(f"node {self.name}: port {port!r} is not a TCP port (1..{_MAX_PORT})")
        if len(set(ports)) != len(ports):
            raise ValueError(f"node {self.name}: the client, route and MQTT ports must differ")

    @classmethod
    def parse(cls, text: str) -> NatsNode:
        """``name=host`` or ``name=host:client:route:mqtt`` (the command line's ``--nats-node``)."""
        name, sep, rest = text.partition("=")
        if not sep:
            raise ValueError(f"{text!r}: expected name=host or name=host:client_port:route_port:mqtt_port")
        host, *ports = rest.split(":")
        if ports and len(ports) != 3:
            raise ValueError(f"{text!r}: give all three ports (client:route:mqtt) or none")
        try:
            numbers = [int(p) for p in ports]
        except ValueError:
            raise ValueError(f"{text!r}: ports must be numbers") from None
        return cls(name, host, *numbers)


@dataclass(frozen=True, slots=True)
class NatsFiles:
    """What :func:`write_nats_config` wrote: one config per node (by name) and the credentials file."""

    configs: Mapping[str, Path]
    credentials: Path


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(_BCRYPT_COST)).decode()


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tls_block(indent: str, tls: TlsListener) -> list[str]:
    return [
        f"{indent}tls {{",
        f"{indent}  cert_file: {_quoted(str(tls.cert_file.resolve()))}",
        f"{indent}  key_file: {_quoted(str(tls.key_file.resolve()))}",
        f"{indent}  ca_file: {_quoted(str(tls.ca_file.resolve()))}",
        f"{indent}}}",
    ]


def _hub_permissions(hub: str) -> str:
    own = f"carehub.v1.{hub}"
    publish = f'["{own}.up", "{own}.alarm"]'
    subscribe = f'["{own}.ack", "{own}.down", "$MQTT.sub.>"]'
    return f"{{publish: {{allow: {publish}}}, subscribe: {{allow: {subscribe}}}}}"


def node_config_text(
    node: NatsNode,
    cluster: Sequence[NatsNode],
    hashes: Mapping[str, str],
    hubs: Sequence[str],
    *,
    tls: TlsListener | None,
    store_dir: Path,
    tuning: ServerTuning | None = None,
) -> str:
    """One node's config: listeners, JetStream, routes to the other nodes, and the users (``hashes``: bcrypt hashes
    by user name; hub users are those in ``hubs``, every other user is an ingest worker). ``tuning``: by the nodes'
    server version (default: a version not known, sized for ``hubs``)."""
    tuning = tuning or ServerTuning.for_hubs(None, len(hubs))
    lines = [
        "# written by carehub platform broker-config --nats-node (community/brokerconf_nats.py)",
        f"server_name: {node.name}",
        f"listen: {node.host}:{node.client_port}",
        f"max_payload: {MAX_PACKET_BYTES}",
        "jetstream {",
        f"  store_dir: {_quoted(str(store_dir))}",
        *tuning.jetstream_lines("  "),
        "}",
        "mqtt {",
        f"  listen: {node.host}:{node.mqtt_port}",
        *ServerTuning.mqtt_lines("  "),
        # Sessions and QoS 1 messages are replicated like the uplink streams (a node may be lost).
        f"  stream_replicas: {min(3, len(cluster))}",
        '  ack_wait: "30s"',
        *([] if tls is None else _tls_block("  ", tls)),
        "}",
    ]
    if tls is not None:
        lines += _tls_block("", tls)
    if len(cluster) > 1:
        routes = ", ".join(f"nats-route://{n.host}:{n.route_port}" for n in cluster if n.name != node.name)
        lines += [
            "cluster {",
            "  name: carehub",
            f"  listen: {node.host}:{node.route_port}",
            f"  routes: [{routes}]",
            *([] if tls is None else _tls_block("  ", tls)),
            "}",
        ]
    hub_set = set(hubs)
    users = []
    for user, hashed in hashes.items():
        permissions = _hub_permissions(user) if user in hub_set else '{publish: ">", subscribe: ">"}'
        users.append(f"    {{user: {_quoted(user)}, password: {_quoted(hashed)}, permissions: {permissions}}}")
    lines += ["authorization {", "  users: [", *users, "  ]", "}"]
    return "\n".join(lines) + "\n"


def write_nats_config(
    out_dir: Path,
    hubs: Sequence[str],
    nodes: Sequence[NatsNode],
    *,
    platform_user: str = "platform",
    workers: int = 1,
    passwords: Mapping[str, str] | None = None,
    tls: TlsListener | None = None,
    store_dir: Path = Path("/var/lib/nats/jetstream"),
    server_version: tuple[int, ...] | None = None,
) -> NatsFiles:
    """Write ``nats-<node>.conf`` for every node and ``credentials.toml`` (0600) into ``out_dir``.

    ``server_version``: the nats-server the nodes run (``None``: unknown); what only some versions take
    (:class:`ServerTuning`: the stream ingest limits sized for ``hubs``, the consumer limit lifted) is written only
    for one known to take it.

    Raises:
        ValueError: no hubs or nodes, a bad hub id, clashing names, or a non-loopback address without TLS.
    """
    if not hubs:
        raise ValueError("at least one hub is needed")
    if not nodes:
        raise ValueError("at least one NATS node is needed")
    for hub in hubs:
        if not is_valid_hub_id(hub):
            raise ValueError(f"{hub!r} is not a hub id")
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise ValueError("node names must differ")
    if tls is None:
        exposed = [n.host for n in nodes if not is_loopback_host(n.host)]
        if exposed:
            raise ValueError(f"{exposed[0]} is not a loopback address: hubs and workers must use TLS there (--tls-dir)")
    workers_users = platform_users(platform_user, workers)
    users = [*workers_users, *hubs]
    if len(set(users)) != len(users):
        raise ValueError("hub ids and the platform users must all differ")
    chosen = {user: (passwords or {}).get(user) or _token() for user in users}
    hashes = {user: _hash(password) for user, password in chosen.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    configs: dict[str, Path] = {}
    tuning = ServerTuning.for_hubs(server_version, len(hubs))
    for node in nodes:
        path = out_dir / f"nats-{node.name}.conf"
        _write_private(path, node_config_text(node, nodes, hashes, hubs, tls=tls, store_dir=store_dir, tuning=tuning))
        configs[node.name] = path
    credentials = out_dir / "credentials.toml"
    lines = ["# NATS credentials written by carehub platform broker-config; keep private", ""]
    lines += [f"{_quoted(user)} = {_quoted(password)}" for user, password in chosen.items()]
    _write_private(credentials, "\n".join(lines) + "\n")
    return NatsFiles(configs, credentials)


def _token() -> str:
    return secrets.token_urlsafe(18)


def _write_private(path: Path, text: str) -> None:
    atomic.write_atomic(path, text.encode(), mode=0o600)
