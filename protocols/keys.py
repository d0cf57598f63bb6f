"""Key material of a hub and of the community platform, key ids, key files and domain-separated signatures.

carehub wire protocol v1 (``docs/protocol.md`` §2):

* A **hub** has one Ed25519 signing key; it signs every envelope it produces.
* The **platform** has an Ed25519 signing key (acks and down-messages) and an X25519 key pair that envelopes are
  sealed to.
* A **key id** is the lowercase hex of an 8-byte BLAKE2b digest of a 32-byte public key.

Key files are UTF-8 text, one ``<label> <value>`` pair per line, ``#`` comments allowed::

    # carehub hub identity v1
    hub kitchen-hub-01
    ed25519-seed 9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60

Labels: ``hub`` (hub id), ``ed25519-seed`` and ``x25519-private`` (32-byte private keys, hex, in private key files
only), ``ed25519-public`` and ``x25519-public`` (32 bytes, hex or standard base64, in public key files). Private key
files are written with mode 0600 (temp file + fsync + rename + directory fsync) and are refused when group or others
may read them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Self

import nacl.exceptions
import nacl.public
import nacl.signing

from protocols import atomic
from protocols.errors import AuthenticationError, EncodeError, KeyFileError
from protocols.topics import is_valid_hub_id

__all__ = [
    "KEY_LEN",
    "SIGNATURE_LEN",
    "HubIdentity",
    "HubPublicKey",
    "PlatformIdentity",
    "PlatformPublicKeys",
    "key_id",
    "load_hub_identity",
    "load_hub_public_key",
    "load_pendant_key",
    "load_platform_identity",
    "load_platform_public_keys",
    "save_hub_identity",
    "save_hub_public_key",
    "save_pendant_key",
    "save_platform_identity",
    "save_platform_public_keys",
    "sign_detached",
    "verify_detached",
]

KEY_LEN: Final = 32
SIGNATURE_LEN: Final = 64
_MAX_KEY_FILE: Final = 4096


def key_id(public_key: bytes | nacl.signing.VerifyKey | nacl.public.PublicKey) -> str:
    """The key id of a public key: lowercase hex of BLAKE2b with an 8-byte digest (16 hex digits).

    Args:
        public_key: a 32-byte raw public key, or a PyNaCl public key object.

    Returns:
        16 lowercase hex digits.
    """
    raw = bytes(public_key)
    if len(raw) != KEY_LEN:
        raise EncodeError(f"a public key has {KEY_LEN} bytes, not {len(raw)}")
    return hashlib.blake2b(raw, digest_size=8).hexdigest()


def sign_detached(key: nacl.signing.SigningKey, domain: bytes, message: bytes) -> bytes:
    """The 64-byte Ed25519 signature of ``domain || message``.

    The domain string separates the uses of one key (``b"carehub/v1/ack\\0"`` vs ``b"carehub/v1/down\\0"``) so a
    signature made for one message type can never verify as another.
    """
    return bytes(key.sign(domain + message).signature)


def verify_detached(key: nacl.signing.VerifyKey, domain: bytes, message: bytes, signature: bytes) -> None:
    """Check a :func:`sign_detached` signature.

    Raises:
        AuthenticationError: the signature does not verify under ``key`` for this domain and message.
    """
    if len(signature) != SIGNATURE_LEN:
        raise AuthenticationError(f"a signature has {SIGNATURE_LEN} bytes, not {len(signature)}")
    try:
        key.verify(domain + message, signature)
    except nacl.exceptions.BadSignatureError as exc:
        raise AuthenticationError(f"signature does not verify under key {key_id(key)}") from exc


@dataclass(frozen=True, slots=True)
class HubIdentity:
    """A hub's identity: its id (as in MQTT topics) and its Ed25519 signing key.

    Attributes:
        hub_id: the hub id (``[a-z0-9][a-z0-9-]{1,62}``, see :mod:`protocols.topics`).
        signing_key: the private Ed25519 key that signs the hub's envelopes.
    """

    hub_id: str
    signing_key: nacl.signing.SigningKey

    @classmethod
    def generate(cls, hub_id: str) -> Self:
        """A new identity with a fresh random key."""
        return cls(hub_id, nacl.signing.SigningKey.generate())

    @property
    def verify_key(self) -> nacl.signing.VerifyKey:
        """The public half, enrolled at the platform."""
        return self.signing_key.verify_key

    @property
    def key_id(self) -> str:
        """Key id of :attr:`verify_key`."""
        return key_id(self.verify_key)

    @property
    def public(self) -> HubPublicKey:
        """What the platform needs to know about this hub."""
        return HubPublicKey(self.hub_id, self.verify_key)


@dataclass(frozen=True, slots=True)
class HubPublicKey:
    """A hub as enrolled at the platform.

    Attributes:
        hub_id: the hub id.
        verify_key: the hub's Ed25519 public key.
    """

    hub_id: str
    verify_key: nacl.signing.VerifyKey


@dataclass(frozen=True, slots=True)
class PlatformPublicKeys:
    """The platform's public keys, provisioned on every hub.

    Attributes:
        verify_key: Ed25519 key that verifies acks and down-messages.
        box_key: X25519 public key envelopes are sealed to.
    """

    verify_key: nacl.signing.VerifyKey
    box_key: nacl.public.PublicKey

    @property
    def key_id(self) -> str:
        """Key id of the box key (names the key envelopes are sealed to)."""
        return key_id(self.box_key)


@dataclass(frozen=True, slots=True)
class PlatformIdentity:
    """The platform's private keys.

    Attributes:
        signing_key: Ed25519 key that signs acks and down-messages.
        box_key: X25519 private key that opens envelopes.
    """

    signing_key: nacl.signing.SigningKey
    box_key: nacl.public.PrivateKey

    @classmethod
    def generate(cls) -> Self:
        """A new identity with fresh random keys."""
        return cls(nacl.signing.SigningKey.generate(), nacl.public.PrivateKey.generate())

    @property
    def public(self) -> PlatformPublicKeys:
        """The public halves, to install on hubs."""
        return PlatformPublicKeys(self.signing_key.verify_key, self.box_key.public_key)


# --- key files ---------------------------------------------------------------------------------------------------


def _write_atomic(path: Path, text: str, mode: int) -> None:
    """Write ``text`` to ``path`` with :func:`protocols.atomic.write_atomic` (temp file, fsync, rename, dir fsync)."""
    try:
        atomic.write_atomic(path, text.encode(), mode=mode)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot write key file ({exc.strerror or exc})") from exc


def _read(path: Path, *, private: bool) -> dict[str, str]:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot open key file ({exc.strerror})") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{path}: not a regular file")
        if private and info.st_mode & 0o077:
            raise KeyFileError(
                f"{path}: private key file is accessible by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run chmod 600 on it"
            )
        raw = os.read(fd, _MAX_KEY_FILE + 1)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file ({exc.strerror})") from exc
    finally:
        os.close(fd)
    if len(raw) > _MAX_KEY_FILE:
        raise KeyFileError(f"{path}: longer than {_MAX_KEY_FILE} bytes, not a key file")
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise KeyFileError(f"{path}: not UTF-8 text") from exc
    fields: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()  # noqa: PLW2901 - the stripped line replaces the raw one on purpose
        if not line or line.startswith("#"):
            continue
        label, _, value = line.partition(" ")
        if not value.strip():
            raise KeyFileError(f"{path}:{number}: expected '<label> <value>'")
        if label in fields:
            raise KeyFileError(f"{path}:{number}: {label!r} appears twice")
        fields[label] = value.strip()
    return fields


def _need(fields: Mapping[str, str], label: str, path: Path) -> str:
    value = fields.get(label)
    if value is None:
        raise KeyFileError(f"{path}: no {label!r} line")
    return value


def _key_bytes(value: str, label: str, path: Path) -> bytes:
    """32 bytes from 64 hex digits or standard base64."""
    raw: bytes | None = None
    if len(value) == 2 * KEY_LEN:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = None
    if raw is None:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = None
    if raw is None or len(raw) != KEY_LEN:
        raise KeyFileError(f"{path}: {label} is not {KEY_LEN} bytes of hex or base64")
    return raw


def _hub_id(fields: Mapping[str, str], path: Path) -> str:
    hub = _need(fields, "hub", path)
    if not is_valid_hub_id(hub):
        raise KeyFileError(f"{path}: {hub!r} is not a valid hub id")
    return hub


def save_hub_identity(path: str | os.PathLike[str], identity: HubIdentity) -> None:
    """Write the hub's private key file (mode 0600, atomic).

    Raises:
        KeyFileError: the file cannot be written.
    """
    text = (
        "# carehub hub identity v1 - private, keep mode 0600\n"
        f"hub {identity.hub_id}\n"
        f"ed25519-seed {bytes(identity.signing_key).hex()}\n"
    )
    _write_atomic(Path(path), text, 0o600)


def load_hub_identity(path: str | os.PathLike[str]) -> HubIdentity:
    """Read a hub's private key file.

    Raises:
        KeyFileError: missing, unreadable, malformed, or readable by group/others (the message names the path).
    """
    p = Path(path)
    fields = _read(p, private=True)
    seed = _key_bytes(_need(fields, "ed25519-seed", p), "ed25519-seed", p)
    return HubIdentity(_hub_id(fields, p), nacl.signing.SigningKey(seed))


def save_hub_public_key(path: str | os.PathLike[str], hub: HubPublicKey) -> None:
    """Write a hub's public key file (mode 0644, atomic), for enrolment at the platform."""
    text = f"# carehub hub public key v1\nhub {hub.hub_id}\ned25519-public {bytes(hub.verify_key).hex()}\n"
    _write_atomic(Path(path), text, 0o644)


def load_hub_public_key(path: str | os.PathLike[str]) -> HubPublicKey:
    """Read a hub's public key file.

    Raises:
        KeyFileError: missing, unreadable or malformed.
    """
    p = Path(path)
    fields = _read(p, private=False)
    public = _key_bytes(_need(fields, "ed25519-public", p), "ed25519-public", p)
    return HubPublicKey(_hub_id(fields, p), nacl.signing.VerifyKey(public))


def save_platform_identity(path: str | os.PathLike[str], identity: PlatformIdentity) -> None:
    """Write the platform's private key file (mode 0600, atomic)."""
    text = (
        "# carehub platform identity v1 - private, keep mode 0600\n"
        f"ed25519-seed {bytes(identity.signing_key).hex()}\n"
        f"x25519-private {bytes(identity.box_key).hex()}\n"
    )
    _write_atomic(Path(path), text, 0o600)


def load_platform_identity(path: str | os.PathLike[str]) -> PlatformIdentity:
    """Read the platform's private key file.

    Raises:
        KeyFileError: missing, unreadable, malformed, or readable by group/others (the message names the path).
    """
    p = Path(path)
    fields = _read(p, private=True)
    seed = _key_bytes(_need(fields, "ed25519-seed", p), "ed25519-seed", p)
    box = _key_bytes(_need(fields, "x25519-private", p), "x25519-private", p)
    return PlatformIdentity(nacl.signing.SigningKey(seed), nacl.public.PrivateKey(box))


def save_platform_public_keys(path: str | os.PathLike[str], keys: PlatformPublicKeys) -> None:
    """Write the platform's public key file (mode 0644, atomic), to install on hubs."""
    text = (
        "# carehub platform public keys v1\n"
        f"ed25519-public {bytes(keys.verify_key).hex()}\n"
        f"x25519-public {bytes(keys.box_key).hex()}\n"
    )
    _write_atomic(Path(path), text, 0o644)


def load_platform_public_keys(path: str | os.PathLike[str]) -> PlatformPublicKeys:
    """Read the platform's public key file (values in hex or base64).

    Raises:
        KeyFileError: missing, unreadable or malformed.
    """
    p = Path(path)
    fields = _read(p, private=False)
    verify = _key_bytes(_need(fields, "ed25519-public", p), "ed25519-public", p)
    box = _key_bytes(_need(fields, "x25519-public", p), "x25519-public", p)
    return PlatformPublicKeys(nacl.signing.VerifyKey(verify), nacl.public.PublicKey(box))


def save_pendant_key(path: str | os.PathLike[str], pendant_id: str, key: bytes) -> None:
    """Write a pendant's 32-byte key (provisioned at pairing) to a private key file (mode 0600, atomic).

    Raises:
        KeyFileError: the key is not 32 bytes, or the file cannot be written.
    """
    if len(key) != KEY_LEN:
        raise KeyFileError(f"{path}: a pendant key is {KEY_LEN} bytes, not {len(key)}")
    text = f"# carehub pendant key: keep private\npendant {pendant_id}\npendant-key {key.hex()}\n"
    _write_atomic(Path(path), text, 0o600)


def load_pendant_key(path: str | os.PathLike[str]) -> tuple[str, bytes]:
    """Read a pendant key file written by :func:`save_pendant_key`: ``(pendant id, key)``.

    Raises:
        KeyFileError: missing, too widely readable, or malformed.
    """
    p = Path(path)
    fields = _read(p, private=True)
    return _need(fields, "pendant", p), _key_bytes(_need(fields, "pendant-key", p), "pendant-key", p)
