"""Mosquitto configuration for a carehub site: password file, ACL and a config that uses them.

Each hub logs in with its hub id as user name and may publish only to its own uplink and read only its own ack and
down topics; the platform users may read every uplink (through a shared subscription) and write every ack and down
topic. Passwords are stored in Mosquitto's ``$7$`` format (PBKDF2-SHA512, 101 iterations, 12-byte salt), which
``mosquitto_passwd`` also writes, so no external tool is needed.

Client ids are bound to user names (``use_username_as_clientid true``): whatever id a client asks for, the broker
uses its user name, so one hub's credentials cannot take over another hub's (or the platform's) session by
connecting with its client id. Each ingest worker therefore has a user of its own (``platform`` for one worker,
``platform-1`` .. ``platform-N`` for several); all of them share the ACL of the platform.

Sizes are bounded by the protocol: no payload may exceed :data:`MAX_PAYLOAD_BYTES`, the largest message the protocol
defines (an uplink frame, ``protocols.topics.MAX_UPLINK_BYTES``; envelopes, acks and down-messages are smaller), and
no MQTT packet may exceed that plus :data:`MQTT_OVERHEAD_BYTES`. Mosquitto drops a larger payload
(``message_size_limit``) and disconnects a client that sends a larger packet (``max_packet_size``), before the
packet reaches its memory in full or any subscriber.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from community.tls import is_loopback_host
from protocols.acks import MAX_ACK_ENTRIES
from protocols.envelope import MAX_ENVELOPE_BYTES
from protocols.messages import MAX_DOWN_BYTES
from protocols.topics import MAX_UPLINK_BYTES

__all__ = [
    "MAX_PACKET_BYTES",
    "MAX_PAYLOAD_BYTES",
    "MQTT_OVERHEAD_BYTES",
    "BrokerFiles",
    "TlsListener",
    "acl_text",
    "hash_password",
    "password_file_text",
    "platform_users",
    "verify_password",
    "write_broker_config",
]

_PBKDF2_ITERATIONS = 101  # what mosquitto_passwd 2.0 uses for $7$
_SALT_LEN = 12
_USER_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
TOPIC_ROOT = "carehub/v1"

# An ack names at most MAX_ACK_ENTRIES envelopes, each [uint64 (9 bytes), reason text (<= 14 bytes + 1)] in a
# 1..3-byte array header: about 26 bytes per entry, plus a small map.
_MAX_ACK_BYTES: Final = 64 + 26 * MAX_ACK_ENTRIES
MAX_PAYLOAD_BYTES: Final = max(MAX_UPLINK_BYTES, MAX_ENVELOPE_BYTES, MAX_DOWN_BYTES, _MAX_ACK_BYTES)
"""The largest MQTT payload carehub ever publishes (an uplink frame of ``MAX_UPLINK_BYTES``)."""
MQTT_OVERHEAD_BYTES: Final = 1024
"""A PUBLISH packet's framing on top of its payload: fixed header (<= 5 bytes), topic (2 + <= 80 bytes for
``carehub/v1/<hub id>/<kind>``), packet id (2) and, for MQTT 5 clients, a few properties."""
MAX_PACKET_BYTES: Final = MAX_PAYLOAD_BYTES + MQTT_OVERHEAD_BYTES
_MAX_PORT: Final = 65535


def _check_user(name: str) -> str:
    if not _USER_RE.fullmatch(name):
        raise ValueError(f"broker user name {name!r} must be 1-64 of A-Z a-z 0-9 _ . -")
    return name


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """Mosquitto's ``$7$`` password hash of ``password``."""
    if salt is None:
        salt = os.urandom(_SALT_LEN)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS)
    return f"$7${_PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``hashed`` (a ``$7$`` entry) matches ``password``."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return secrets.compare_digest(digest, expected)


def password_file_text(users: Mapping[str, str]) -> str:
    """A Mosquitto password file for ``{user: password}``."""
    return "".join(f"{_check_user(user)}:{hash_password(pw)}\n" for user, pw in sorted(users.items()))


def platform_users(platform_user: str, workers: int = 1) -> tuple[str, ...]:
    """The ingest workers' broker users: ``platform_user`` for one worker, ``<platform_user>-1`` .. ``-N`` for N.

    Raises:
        ValueError: fewer than one worker, or a name Mosquitto cannot take.
    """
    if workers < 1:
        raise ValueError(f"at least one ingest worker is needed, not {workers}")
    names = (platform_user,) if workers == 1 else tuple(f"{platform_user}-{n}" for n in range(1, workers + 1))
    return tuple(_check_user(name) for name in names)


def acl_text(hubs: list[str] | tuple[str, ...], platform_user: str | tuple[str, ...]) -> str:
    """The ACL: hubs confined to their own topics, the platform users reading uplinks and writing acks and downs.

    Mosquitto checks a shared subscription (``$share/group/filter``) against the filter without its prefix.
    """
    lines = ["# written by carehub platform broker-config"]
    for user in (platform_user,) if isinstance(platform_user, str) else platform_user:
        lines += ["", f"user {_check_user(user)}"]
        lines += [
            f"topic read {TOPIC_ROOT}/+/up",
            f"topic write {TOPIC_ROOT}/+/ack",
            f"topic write {TOPIC_ROOT}/+/down",
            f"topic read {TOPIC_ROOT}/+/alarm",
        ]
    for hub in sorted(set(hubs)):
        lines += ["", f"user {_check_user(hub)}"]
        lines += [f"topic write {TOPIC_ROOT}/{hub}/up", f"topic read {TOPIC_ROOT}/{hub}/ack"]
        lines += [f"topic read {TOPIC_ROOT}/{hub}/down", f"topic write {TOPIC_ROOT}/{hub}/alarm"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """What :func:`write_broker_config` wrote.

    Attributes:
        config: ``mosquitto.conf``.
        password_file: ``passwords`` (mode 0600).
        acl_file: ``acl``.
        credentials: ``credentials.toml`` (mode 0600): each user's clear-text password, for hub and platform
            configs.
        passwords: the same, in memory.
    """

    config: Path
    password_file: Path
    acl_file: Path
    credentials: Path
    passwords: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class TlsListener:
    """The TLS listener hubs connect to (``mqtts://``): the site CA and the broker's certificate and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    port: int = 8883
    host: str = "0.0.0.0"  # noqa: S104 - the hubs' listener is meant to be reached from the network


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    path.chmod(0o600)


def write_broker_config(
    out_dir: Path,
    hubs: list[str] | tuple[str, ...],
    *,
    platform_user: str = "platform",
    workers: int = 1,
    port: int = 1883,
    host: str = "127.0.0.1",
    passwords: Mapping[str, str] | None = None,
    acl: bool = True,
    tls: TlsListener | None = None,
) -> BrokerFiles:
    """Write a Mosquitto config, password file, ACL and the generated credentials into ``out_dir``.

    Args:
        out_dir: created if missing.
        hubs: hub ids; each becomes a broker user of the same name.
        platform_user: the ingest workers' user name (see :func:`platform_users`).
        workers: how many ingest workers get a user of their own.
        port: the listener port written into the config (1..65535).
        host: the listener address.
        passwords: fixed passwords per user; missing users get a random one.
        acl: ``False`` omits the ACL (every authenticated user may use every topic), for tests of the platform's
            own hub-mismatch check.
        tls: a TLS listener for the hubs (the site CA's broker certificate, `community.tls`); the plaintext
            listener then serves only the platform's workers on this machine.

    Raises:
        ValueError: no hubs, a bad port, clashing user names, or a plaintext listener on an address other hosts
            reach (hubs must use the TLS listener).
    """
    if not hubs:
        raise ValueError("at least one hub is needed")
    if type(port) is not int or not 1 <= port <= _MAX_PORT:
        raise ValueError(f"port {port!r} is not a TCP port (1..{_MAX_PORT})")
    if not is_loopback_host(host):
        raise ValueError(f"the plaintext listener must be on a loopback address, not {host!r}; hubs use TLS")
    if tls is not None and (type(tls.port) is not int or not 1 <= tls.port <= _MAX_PORT or tls.port == port):
        raise ValueError(f"TLS port {tls.port!r} is not a TCP port (1..{_MAX_PORT}) other than {port}")
    workers_users = platform_users(platform_user, workers)
    users = [*workers_users, *(_check_user(h) for h in hubs)]
    if len(set(users)) != len(users):
        raise ValueError("hub ids and the platform user must all differ")
    chosen = {user: (passwords or {}).get(user) or secrets.token_urlsafe(18) for user in users}
    out_dir.mkdir(parents=True, exist_ok=True)
    password_file = out_dir / "passwords"
    acl_file = out_dir / "acl"
    config = out_dir / "mosquitto.conf"
    credentials = out_dir / "credentials.toml"
    _write_private(password_file, password_file_text(chosen))
    acl_file.write_text(acl_text(list(hubs), workers_users), encoding="utf-8")
    conf = [
        "# written by carehub platform broker-config",
        f"listener {port} {host}",
        "allow_anonymous false",
        f"password_file {password_file.resolve()}",
        # A client's id is its user name: no one can take over another's session with its client id.
        "use_username_as_clientid true",
        # The protocol's largest message is an uplink frame; anything larger is dropped or its sender disconnected.
        f"message_size_limit {MAX_PAYLOAD_BYTES}",
        f"max_packet_size {MAX_PACKET_BYTES}",
    ]
    if tls is not None:
        # The hubs' listener: TLS 1.2 at least, with the site CA's broker certificate (listener options follow it).
        conf += [
            f"listener {tls.port} {tls.host}",
            f"cafile {tls.ca_file.resolve()}",
            f"certfile {tls.cert_file.resolve()}",
            f"keyfile {tls.key_file.resolve()}",
            "tls_version tlsv1.2",
        ]
    if acl:
        conf.append(f"acl_file {acl_file.resolve()}")
    conf += ["persistence false", "max_queued_messages 100000"]
    if os.geteuid() == 0:
        conf.append("user root")
    config.write_text("\n".join(conf) + "\n", encoding="utf-8")
    cred_lines = ["# broker credentials written by carehub platform broker-config; keep private", ""]
    cred_lines += [f'"{user}" = "{pw}"' for user, pw in chosen.items()]
    _write_private(credentials, "\n".join(cred_lines) + "\n")
    return BrokerFiles(config, password_file, acl_file, credentials, dict(chosen))
