"""Enrollment bundles: what the platform hands an installer so a hub can be set up without typing keys.

A bundle is a small UTF-8 JSON file, signed by the platform's Ed25519 key::

    {"carehub_enrollment": 1, "hub_id": "...", "broker_url": "mqtts://...", "username": "...", "password": "...",
     "platform_verify_key": "<hex>", "platform_box_key": "<hex>", "issued_at": "2024-03-04T07:00:00+00:00",
     "signature": "<hex>"}

and optionally ``"broker_ca"``: the site CA's certificate in PEM (`community.tls`), which the hub pins for its
``mqtts://`` broker. Plain ``mqtt://`` is accepted only for a broker on the hub's own machine (loopback): it would
carry the hub's broker password in clear.

``signature = Ed25519(platform key, "carehub/v1/enrollment-bundle\\0" || canonical JSON without "signature")``,
where canonical JSON has sorted keys, no spaces and ASCII escapes. The signature proves the bundle was not altered;
that it came from *your* platform is proven by comparing the platform key id (as ``carehub platform keygen``
prints it) the bundle names (printed when the
bundle is made, and by ``carehub provision init``) with the one the operator gave you, or by passing it to
:func:`read_bundle` as ``expect_key_id``. The bundle holds the hub's broker password: it is written with mode 0600;
delete it once the hub is set up.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

import nacl.public
import nacl.signing
import typer
from rich.console import Console
from rich.markup import escape

from community.config import PlatformConfigError, load_platform_config
from community.tls import TlsError, check_ca_pem, is_loopback_host
from protocols.errors import AuthenticationError, KeyFileError
from protocols.keys import PlatformIdentity, PlatformPublicKeys, sign_detached, verify_detached
from protocols.topics import is_valid_hub_id

__all__ = ["BUNDLE_VERSION", "BundleError", "EnrollmentBundle", "bundle_command", "create_bundle", "read_bundle"]

BUNDLE_VERSION: Final = 1
_DOMAIN: Final = b"carehub/v1/enrollment-bundle\0"
_MAX_BUNDLE: Final = 16 * 1024
_FIELDS: Final = (
    "broker_url",
    "carehub_enrollment",
    "hub_id",
    "issued_at",
    "password",
    "platform_box_key",
    "platform_verify_key",
    "signature",
    "username",
)
_OPTIONAL: Final = ("broker_ca",)  # the site CA the hub pins (issue 15 item 8), for mqtts:// brokers


class BundleError(ValueError):
    """A bundle that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class EnrollmentBundle:
    """A verified enrollment bundle.

    Attributes:
        hub_id: the hub id the platform expects (also its broker user name unless ``username`` says otherwise).
        broker_url: ``mqtt://`` or ``mqtts://`` host and port.
        username: the hub's broker user.
        password: the hub's broker password.
        platform: the platform's public keys.
        issued_at: when the platform made the bundle.
        broker_ca: the site CA certificate (PEM) the hub pins for its ``mqtts://`` broker, or ``None`` (the
            system's CAs).
    """

    hub_id: str
    broker_url: str
    username: str
    password: str
    platform: PlatformPublicKeys
    issued_at: datetime
    broker_ca: str | None = None

    @property
    def platform_key_id(self) -> str:
        """The platform's key id, as `carehub platform keygen` prints it (compare it with what the operator says)."""
        return self.platform.key_id


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _check(hub_id: str, broker_url: str, username: str, password: str, broker_ca: str | None = None) -> None:
    if not is_valid_hub_id(hub_id):
        raise BundleError(f"hub id {hub_id!r} is not valid (lowercase letters, digits and '-', 2..63 long)")
    parts = urlsplit(broker_url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise BundleError(f"broker url {broker_url!r} is not mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    if not username or not password:
        raise BundleError("a bundle needs the hub's broker user name and password")
    if parts.scheme == "mqtt" and not is_loopback_host(parts.hostname):
        # Plaintext MQTT carries the hub's broker password: only to a broker on the same machine (the demo).
        raise BundleError(f"broker url {broker_url!r}: plain mqtt:// only to a loopback broker; use mqtts://")
    if broker_ca is not None:
        if parts.scheme != "mqtts":
            raise BundleError("a broker CA is for an mqtts:// broker url")
        try:
            check_ca_pem(broker_ca)
        except TlsError as exc:
            raise BundleError(f"broker_ca: {exc}") from None


def create_bundle(
    identity: PlatformIdentity,
    *,
    hub_id: str,
    broker_url: str,
    username: str,
    password: str,
    issued_at: datetime | None = None,
    broker_ca: str | None = None,
) -> bytes:
    """The signed bundle's bytes.

    Raises:
        BundleError: an invalid hub id, broker url or missing credentials.
    """
    _check(hub_id, broker_url, username, password, broker_ca)
    public = identity.public
    fields: dict[str, Any] = {
        "carehub_enrollment": BUNDLE_VERSION,
        "hub_id": hub_id,
        "broker_url": broker_url,
        "username": username,
        "password": password,
        "platform_verify_key": bytes(public.verify_key).hex(),
        "platform_box_key": bytes(public.box_key).hex(),
        "issued_at": (issued_at or datetime.now(UTC)).isoformat(timespec="seconds"),
    }
    if broker_ca is not None:
        fields["broker_ca"] = broker_ca
    signature = sign_detached(identity.signing_key, _DOMAIN, _canonical(fields))
    return json.dumps({**fields, "signature": signature.hex()}, indent=2, sort_keys=True).encode() + b"\n"


def _key32(fields: dict[str, Any], name: str) -> bytes:
    value = fields.get(name)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise BundleError(f"{name} is not 32 bytes of hex")
    return raw


def read_bundle(data: bytes, *, expect_key_id: str | None = None) -> EnrollmentBundle:
    """Parse and verify a bundle.

    Args:
        data: the bundle file's bytes.
        expect_key_id: the platform key id the operator announced (of its X25519 key, docs/protocol.md §2); the
            bundle must name this key.

    Raises:
        BundleError: malformed, altered (signature), another platform's, or with invalid contents.
    """
    if len(data) > _MAX_BUNDLE:
        raise BundleError(f"longer than {_MAX_BUNDLE} bytes: not an enrollment bundle")
    try:
        fields = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"not JSON ({exc})") from None
    if not isinstance(fields, dict) or fields.get("carehub_enrollment") != BUNDLE_VERSION:
        raise BundleError(f"not a carehub enrollment bundle version {BUNDLE_VERSION}")
    if not set(_FIELDS) <= set(fields) <= {*_FIELDS, *_OPTIONAL}:
        raise BundleError(f"expected the fields {', '.join(_FIELDS)} (and optionally {', '.join(_OPTIONAL)})")
    if not all(isinstance(fields[k], str) for k in fields if k != "carehub_enrollment"):
        raise BundleError("every field but carehub_enrollment is a string")
    verify = nacl.signing.VerifyKey(_key32(fields, "platform_verify_key"))
    box = nacl.public.PublicKey(_key32(fields, "platform_box_key"))
    made_by = PlatformPublicKeys(verify, box).key_id
    if expect_key_id is not None and made_by != expect_key_id.strip().lower():
        raise BundleError(f"made by platform key id {made_by}, not the expected {expect_key_id}")
    signed = {k: v for k, v in fields.items() if k != "signature"}
    try:
        signature = bytes.fromhex(fields["signature"])
        verify_detached(verify, _DOMAIN, _canonical(signed), signature)
    except (ValueError, AuthenticationError):
        raise BundleError("the signature does not verify: the bundle was altered or damaged") from None
    broker_ca = fields.get("broker_ca")
    _check(fields["hub_id"], fields["broker_url"], fields["username"], fields["password"], broker_ca)
    try:
        issued = datetime.fromisoformat(fields["issued_at"])
    except ValueError:
        raise BundleError(f"issued_at {fields['issued_at']!r} is not an ISO 8601 time") from None
    return EnrollmentBundle(
        hub_id=fields["hub_id"],
        broker_url=fields["broker_url"],
        username=fields["username"],
        password=fields["password"],
        platform=PlatformPublicKeys(verify, box),
        issued_at=issued,
        broker_ca=broker_ca,
    )


_out = Console()
_err = Console(stderr=True)


def _password_from(credentials: Path | None, user: str) -> str:
    if credentials is None:
        raise BundleError("give --credentials (from broker-config) or --password")
    try:
        table = tomllib.loads(credentials.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BundleError(f"{credentials}: cannot read ({exc})") from None
    value = table.get(user)
    if not isinstance(value, str) or not value:
        raise BundleError(f"{credentials}: no password for broker user {user!r}")
    return value


def bundle_command(  # noqa: PLR0917 - typer options are parameters
    config: Annotated[Path, typer.Option("--config", "-c", help="The platform's TOML config file.")],
    hub: Annotated[str, typer.Option("--hub", help="The new hub's id.")],
    broker_url: Annotated[str, typer.Option("--broker-url", help="mqtt(s)://HOST[:PORT] as the hub will reach it.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the bundle (mode 0600).")],
    credentials: Annotated[
        Path | None, typer.Option("--credentials", help="credentials.toml from `carehub platform broker-config`.")
    ] = None,
    password: Annotated[
        str | None, typer.Option("--password", help="The hub's broker password (instead of --credentials).")
    ] = None,
    username: Annotated[str | None, typer.Option("--username", help="Broker user (default: the hub id).")] = None,
    broker_ca: Annotated[
        Path | None,
        typer.Option("--broker-ca", help="The site CA (ca.pem from `carehub platform tls init`) the hub will pin."),
    ] = None,
) -> None:
    """Write a signed enrollment bundle for a new hub: platform keys, broker address and the hub's credentials."""
    user = username or hub
    try:
        cfg = load_platform_config(config)
        identity = cfg.identity()
        if password is None:
            password = _password_from(credentials, user)
        ca_pem = None if broker_ca is None else broker_ca.read_text(encoding="ascii", errors="replace")
        data = create_bundle(
            identity, hub_id=hub, broker_url=broker_url, username=user, password=password, broker_ca=ca_pem
        )
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        out.chmod(0o600)
    except (BundleError, PlatformConfigError, KeyFileError, OSError) as exc:
        _err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    _out.print(
        f"wrote {out} for hub {hub}; platform key id {identity.public.key_id} "
        "(the installer checks it with `carehub provision init --bundle ... --platform-key-id ...`)",
        highlight=False,
    )
