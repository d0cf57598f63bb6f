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

    [keys]
    signing_key = "keys/platform.sign"   # 32-byte Ed25519 seed, hex, mode 0600
    box_key = "keys/platform.box"        # 32-byte X25519 private key, hex, mode 0600
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nacl.public
import nacl.signing

__all__ = ["PlatformConfig", "PlatformConfigError", "load_key", "load_platform_config", "write_key"]


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
    signing_key_file: Path
    box_key_file: Path

    def signing_key(self) -> nacl.signing.SigningKey:
        """The platform's Ed25519 signing key."""
        return nacl.signing.SigningKey(load_key(self.signing_key_file))

    def box_key(self) -> nacl.public.PrivateKey:
        """The platform's X25519 private key."""
        return nacl.public.PrivateKey(load_key(self.box_key_file))


def write_key(path: Path, key: bytes) -> None:
    """Write a 32-byte key as hex, readable only by its owner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key.hex() + "\n")
    path.chmod(0o600)


def load_key(path: Path) -> bytes:
    """Read a 32-byte hex key file; refuse one that others may read."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise PlatformConfigError(f"{path}: cannot read key file ({exc})") from exc
    if mode & 0o077:
        raise PlatformConfigError(f"{path}: key file is readable by others (mode {mode:o}); chmod 600 it")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise PlatformConfigError(f"{path}: not a hex key") from None
    if len(key) != 32:
        raise PlatformConfigError(f"{path}: a key is 32 bytes, this is {len(key)}")
    return key


def _get(table: dict[str, Any], key: str, path: Path, section: str, *, default: str | None = None) -> str:
    value = table.get(key, default)
    if value is None:
        raise PlatformConfigError(f"{path}: [{section}] {key} is required")
    if not isinstance(value, str):
        raise PlatformConfigError(f"{path}: [{section}] {key} must be a string")
    return value


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
        if not isinstance(table, dict):
            raise PlatformConfigError(f"{path}: section [{name}] is required")
        sections[name] = table
    broker, storage, keys = sections["broker"], sections["storage"], sections["keys"]
    url = urlsplit(_get(broker, "url", path, "broker"))
    if url.scheme != "mqtt" or not url.hostname:
        raise PlatformConfigError(f"{path}: [broker] url must look like mqtt://host:port (TLS: use a local bridge)")
    base = path.parent

    def rel(value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else base / p

    return PlatformConfig(
        path=path,
        host=url.hostname,
        port=url.port or 1883,
        username=_get(broker, "username", path, "broker", default="") or None,
        password=_get(broker, "password", path, "broker", default="") or None,
        share_group=_get(broker, "share_group", path, "broker", default="ingest"),
        client_id=_get(broker, "client_id", path, "broker", default="carehub-platform"),
        database=rel(_get(storage, "database", path, "storage")),
        signing_key_file=rel(_get(keys, "signing_key", path, "keys")),
        box_key_file=rel(_get(keys, "box_key", path, "keys")),
    )
