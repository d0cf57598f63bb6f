"""Enrollment bundles: what the platform hands an installer so a hub can be set up without typing keys.

A bundle is a small UTF-8 JSON file, signed by the platform's Ed25519 key::

    {"carehub_enrollment": 1, "hub_id": "...", "broker_url": "mqtts://...", "username": "...", "password": "...",
     "platform_verify_key": "<hex>", "platform_box_key": "<hex>", "issued_at": "2024-03-04T07:00:00+00:00",
     "signature": "<hex>"}

and optionally ``"broker_ca"``: the site CA's certificate in PEM (`community.tls`), which the hub pins for its
``mqtts://`` broker. Plain ``mqtt://`` is accepted only for a broker on the hub's own machine (loopback): it would
carry the hub's broker password in clear.

Version 2 (issue 15 item 3) names the MQTT listeners of a broker cluster's nodes, in the order the hub tries them:
``"carehub_enrollment": 2`` with ``"broker_urls": ["mqtts://nats1...:8883", "mqtts://nats2...:8883", ...]`` (1 to
16 URLs, one scheme, each node once) in place of ``"broker_url"``; everything else is as in version 1, and the CA,
user and password hold for every node. :func:`create_bundle` writes version 1 when there is one URL (so hubs of any
version read it) and version 2 only for several; :func:`read_bundle` reads both.

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
from collections.abc import Sequence
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

__all__ = [
    "BUNDLE_VERSION",
    "MAX_BROKER_URLS",
    "BundleError",
    "EnrollmentBundle",
    "bundle_command",
    "create_bundle",
    "read_bundle",
]

BUNDLE_VERSION: Final = 2
"""The newest bundle version (2: ``broker_urls``, a cluster's nodes); version 1 (one ``broker_url``) is still read
and still written for one broker."""
_ONE_URL_VERSION: Final = 1
MAX_BROKER_URLS: Final = 16  # as many nodes as a hub config's [broker] urls takes
_DOMAIN: Final = b"carehub/v1/enrollment-bundle\0"
_MAX_BUNDLE: Final = 16 * 1024
_COMMON: Final = (
    "carehub_enrollment",
    "hub_id",
    "issued_at",
    "password",
    "platform_box_key",
    "platform_verify_key",
    "signature",
    "username",
)
_FIELDS: Final = {1: ("broker_url", *_COMMON), 2: ("broker_urls", *_COMMON)}  # by version
_OPTIONAL: Final = ("broker_ca",)  # the site CA the hub pins (issue 15 item 8), for mqtts:// brokers


class BundleError(ValueError):
    """A bundle that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class EnrollmentBundle:
    """A verified enrollment bundle.

    Attributes:
        hub_id: the hub id the platform expects (also its broker user name unless ``username`` says otherwise).
        broker_urls: ``mqtt://`` or ``mqtts://`` host and port of the broker, or of each node of a broker cluster in
            the order the hub tries them (one scheme; the CA and credentials hold for each).
        username: the hub's broker user.
        password: the hub's broker password.
        platform: the platform's public keys.
        issued_at: when the platform made the bundle.
        broker_ca: the site CA certificate (PEM) the hub pins for its ``mqtts://`` broker, or ``None`` (the
            system's CAs).
    """

    hub_id: str
    broker_urls: tuple[str, ...]
    username: str
    password: str
    platform: PlatformPublicKeys
    issued_at: datetime
    broker_ca: str | None = None

    @property
    def broker_url(self) -> str:
        """The first (or only) broker URL."""
        return self.broker_urls[0]

    @property
    def platform_key_id(self) -> str:
        """The platform's key id, as `carehub platform keygen` prints it (compare it with what the operator says)."""
        return self.platform.key_id


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _node(broker_url: str) -> tuple[str, str, int]:
    """A broker URL's scheme, host and port (checked)."""
    parts = urlsplit(broker_url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise BundleError(f"broker url {broker_url!r} is not mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        raise BundleError(f"broker url {broker_url!r}: port out of range") from None
    if parts.scheme == "mqtt" and not is_loopback_host(parts.hostname):
        # Plaintext MQTT carries the hub's broker password: only to a broker on the same machine (the demo).
        raise BundleError(f"broker url {broker_url!r}: plain mqtt:// only to a loopback broker; use mqtts://")
    return parts.scheme, parts.hostname, port


def _check(
    hub_id: str, broker_urls: tuple[str, ...], username: str, password: str, broker_ca: str | None = None
) -> None:
    if not is_valid_hub_id(hub_id):
        raise BundleError(f"hub id {hub_id!r} is not valid (lowercase letters, digits and '-', 2..63 long)")
    if not 1 <= len(broker_urls) <= MAX_BROKER_URLS:
        raise BundleError(f"a bundle names 1..{MAX_BROKER_URLS} broker urls, not {len(broker_urls)}")
    nodes = [_node(url) for url in broker_urls]
    if len({scheme for scheme, _, _ in nodes}) > 1:
        raise BundleError("every broker url needs the same scheme (mqtts://): the hub's TLS settings hold for each")
    if len(set(nodes)) != len(nodes):
        raise BundleError(f"each broker node once, got {', '.join(broker_urls)}")
    if not username or not password:
        raise BundleError("a bundle needs the hub's broker user name and password")
    if broker_ca is not None:
        if nodes[0][0] != "mqtts":
            raise BundleError("a broker CA is for an mqtts:// broker url")
        try:
            check_ca_pem(broker_ca)
        except TlsError as exc:
            raise BundleError(f"broker_ca: {exc}") from None


def create_bundle(
    identity: PlatformIdentity,
    *,
    hub_id: str,
    broker_url: str | Sequence[str],
    username: str,
    password: str,
    issued_at: datetime | None = None,
    broker_ca: str | None = None,
) -> bytes:
    """The signed bundle's bytes.

    ``broker_url`` is one URL (a version 1 bundle) or a cluster's nodes in the order the hub tries them (version 2
    when there are several).

    Raises:
        BundleError: an invalid hub id, broker url or missing credentials.
    """
    urls = (broker_url,) if isinstance(broker_url, str) else tuple(broker_url)
    _check(hub_id, urls, username, password, broker_ca)
    public = identity.public
    where: dict[str, Any] = (
        {"carehub_enrollment": _ONE_URL_VERSION, "broker_url": urls[0]}
        if len(urls) == 1
        else {"carehub_enrollment": BUNDLE_VERSION, "broker_urls": list(urls)}
    )
    fields: dict[str, Any] = {
        **where,
        "hub_id": hub_id,
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
    version = fields.get("carehub_enrollment") if isinstance(fields, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version not in _FIELDS:
        raise BundleError(f"not a carehub enrollment bundle of version 1..{BUNDLE_VERSION}")
    expected = _FIELDS[version]
    if not set(expected) <= set(fields) <= {*expected, *_OPTIONAL}:
        raise BundleError(
            f"a version {version} bundle has the fields {', '.join(sorted(expected))}"
            f" (and optionally {', '.join(_OPTIONAL)})"
        )
    if not all(isinstance(fields[k], str) for k in fields if k not in ("carehub_enrollment", "broker_urls")):
        raise BundleError("every field but carehub_enrollment and broker_urls is a string")
    listed = fields.get("broker_urls", [fields.get("broker_url")])
    if not isinstance(listed, list) or not all(isinstance(url, str) for url in listed):
        raise BundleError("broker_urls is a list of strings")
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
    broker_urls = tuple(listed)
    _check(fields["hub_id"], broker_urls, fields["username"], fields["password"], broker_ca)
    try:
        issued = datetime.fromisoformat(fields["issued_at"])
    except ValueError:
        raise BundleError(f"issued_at {fields['issued_at']!r} is not an ISO 8601 time") from None
    return EnrollmentBundle(
        hub_id=fields["hub_id"],
        broker_urls=broker_urls,
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
    broker_url: Annotated[
        list[str],
        typer.Option(
            "--broker-url",
            help="mqtt(s)://HOST[:PORT] as the hub will reach it; repeat it for each node of a broker cluster, in the"
            " order the hub should try them.",
        ),
    ],
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
    """Write a signed enrollment bundle for a new hub: platform keys, broker address(es) and the hub's credentials."""
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
