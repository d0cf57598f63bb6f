"""The platform's TOML config, parsed once into validated types; errors name the file and the key.

Example::

    [broker]
    url = "mqtt://127.0.0.1:1883"
    username = "platform"
    password = "..."
    share_group = "ingest"
    client_id = "carehub-platform-1"

    [storage]
    database = "platform.db"          # relative paths are relative to this file
    # url = "postgresql://carehub:...@db.example:5432/carehub"   # PostgreSQL instead (community.storage_open)

    [keys]
    identity = "keys/platform.key"    # protocols.keys platform identity file (Ed25519 seed, X25519 key), mode 0600

A district's workers read a NATS JetStream cluster instead of Mosquitto: a ``[nats]`` table (then ``[broker]`` is
optional) or ``[broker] url = "nats://host:4222"``; see :mod:`community.nats_config` and ``docs/platform-nats.md``.

``carehub platform init --dir DIR`` writes this file (``--broker``, ``--username``, ``--client-id``) with the identity
file and the public key file (``keys/platform.pub``) to install on hubs; run again, it checks them and changes
nothing. ``carehub platform keygen`` writes only the two key files.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from community.nats_config import NatsConfigError, NatsSettings, nats_from_config, parse_nats_url
from protocols.errors import KeyFileError
from protocols.keys import PlatformIdentity, load_platform_identity
from protocols.topics import shared_uplink_filter

__all__ = ["PlatformConfig", "PlatformConfigError", "load_platform_config"]


class PlatformConfigError(ValueError):
    """A config or key file that cannot be used; the message names the file and key."""


@dataclass(frozen=True, slots=True)
class PlatformConfig:
    """Everything ``carehub platform run`` needs."""

    path: Path
    host: str
    port: int
    username: str | None
    password: str | None
    share_group: str
    client_id: str
    database: Path
    identity_file: Path
    postgres_url: str | None = None
    """PostgreSQL's libpq URL when the platform stores on PostgreSQL; None: SQLite at :attr:`database`."""
    nats: NatsSettings | None = None
    """A ``[nats]`` table (or ``[broker] url = "nats://..."``): the worker reads JetStream (community.nats_ingest);
    :attr:`host` and :attr:`port` then name its first server."""

    def identity(self) -> PlatformIdentity:
        """The platform's private keys, from :attr:`identity_file` (refused unless mode 0600).

        Raises:
            PlatformConfigError: the key file is missing, malformed or readable by others (names file and key).
        """
        try:
            return load_platform_identity(self.identity_file)
        except KeyFileError as exc:
            raise PlatformConfigError(f"{self.path}: [keys] identity: {exc}") from exc


def _get(table: dict[str, Any], key: str, path: Path, section: str, *, default: str | None = None) -> str:
    value = table.get(key, default)
    if value is None:
        raise PlatformConfigError(f"{path}: [{section}] {key} is required")
    if not isinstance(value, str):
        raise PlatformConfigError(f"{path}: [{section}] {key} must be a string")
    return value


def _first_nats_server(table: object) -> object:
    servers = table.get("servers") if isinstance(table, dict) else None
    return servers[0] if isinstance(servers, list) and servers else "nats://"  # nats_from_config names the error


def _postgres_url(storage: dict[str, Any], path: Path) -> str | None:
    if "url" not in storage:
        return None
    text = _get(storage, "url", path, "storage")
    parts = urlsplit(text)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise PlatformConfigError(f"{path}: [storage] url must look like postgresql://user:password@host:port/database")
    try:
        parts.port  # noqa: B018  validates the port (0..65535, digits)
    except ValueError:
        raise PlatformConfigError(f"{path}: [storage] url has no valid port (a TCP port is 1..65535)") from None
    return text


def load_platform_config(path: Path) -> PlatformConfig:
    """Parse and validate a platform config file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PlatformConfigError(f"{path}: cannot read ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PlatformConfigError(f"{path}: not valid TOML ({exc})") from exc
    sections: dict[str, dict[str, Any]] = {}
    for name in ("broker", "storage", "keys"):
        table = data.get(name)
        if table is None and name == "broker" and "nats" in data:
            table = {"url": _first_nats_server(data["nats"])}  # a JetStream worker (community.nats_config)
        if not isinstance(table, dict):
            raise PlatformConfigError(f"{path}: section [{name}] is required")
        sections[name] = table
    broker, storage, keys = sections["broker"], sections["storage"], sections["keys"]
    if "nats" in data and "url" not in broker:
        broker = {**broker, "url": _first_nats_server(data["nats"])}  # [broker] may only name the worker
    url = urlsplit(_get(broker, "url", path, "broker"))
    nats: NatsSettings | None = None
    if url.scheme == "nats" or "nats" in data:
        client_id = _get(broker, "client_id", path, "broker", default="carehub-platform")
        try:
            nats = nats_from_config(data.get("nats"), urlunsplit(url), path, client_id)
        except NatsConfigError as exc:
            raise PlatformConfigError(str(exc)) from None
        url = urlsplit("mqtt://{}:{}".format(*parse_nats_url(nats.servers[0])))
    if url.scheme != "mqtt" or not url.hostname:
        raise PlatformConfigError(f"{path}: [broker] url must look like mqtt://host:port (TLS: use a local bridge)")
    try:
        given = url.port
    except ValueError:  # out of 0..65535, or not a number
        given = -1
    port = 1883 if given is None else given
    if not 1 <= port <= 65535:
        raise PlatformConfigError(f"{path}: [broker] url has no valid port (a TCP port is 1..65535)")
    share_group = _get(broker, "share_group", path, "broker", default="ingest")
    try:
        shared_uplink_filter(share_group)
    except ValueError:
        raise PlatformConfigError(f"{path}: [broker] share_group must be 1-64 of A-Z a-z 0-9 _ -") from None
    url_text = _postgres_url(storage, path)
    base = path.parent

    def rel(value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else base / p

    return PlatformConfig(
        path=path,
        host=url.hostname,
        port=port,
        username=_get(broker, "username", path, "broker", default="") or None,
        password=_get(broker, "password", path, "broker", default="") or None,
        share_group=share_group,
        client_id=_get(broker, "client_id", path, "broker", default="carehub-platform"),
        database=rel(_get(storage, "database", path, "storage", default=None if url_text is None else "platform.db")),
        identity_file=rel(_get(keys, "identity", path, "keys")),
        postgres_url=url_text,
        nats=nats,
    )
