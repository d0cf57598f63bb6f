"""``carehub platform tls``: the site CA and the broker's certificate (`community.tls`).

``init`` makes the site CA (once; hubs pin it) and a certificate for the broker at the names hubs use; run again, it
keeps the CA and renews the broker's certificate. ``show`` prints what the directory holds. Errors are one line on
standard error with exit status 2.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from rich.console import Console
from rich.markup import escape

from community.tls import SiteAuthority, TlsError

__all__ = ["app"]

app = typer.Typer(help="The site CA and the broker's TLS certificate.", no_args_is_help=True, add_completion=False)

_out = Console()
_err = Console(stderr=True)

DirOption = Annotated[Path, typer.Option("--dir", help="Directory of the site CA (ca.pem, ca.key) and broker.pem.")]


def _fail(message: str) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _fingerprint(authority: SiteAuthority) -> str:
    digest = hashlib.sha256(authority.cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, 16, 2))


@app.command()
def init(
    directory: DirOption,
    names: Annotated[
        list[str],
        typer.Option("--name", help="A host name or IP address hubs use for the broker (repeat for each)."),
    ],
    ca_name: Annotated[str, typer.Option("--ca-name", help="The CA's common name.")] = "carehub site CA",
) -> None:
    """Create the site CA (kept if it exists) and issue the broker's certificate for NAMEs."""
    try:
        if (directory / "ca.pem").exists():
            authority, made = SiteAuthority.load(directory), "kept the"
        else:
            authority, made = SiteAuthority.create(directory, ca_name), "created a"
        broker = authority.issue_broker(names)
    except TlsError as exc:
        raise _fail(str(exc)) from None
    _out.print(f"{made} site CA {authority.cert_file} (sha256 {_fingerprint(authority)}…)", highlight=False)
    _out.print(
        f"broker certificate {broker.cert_file} for {', '.join(broker.names)}, valid until "
        f"{broker.not_after:%Y-%m-%d}; key {broker.key_file}",
        highlight=False,
    )
    _out.print(
        f"next: carehub platform broker-config --tls-dir {directory} …; carehub platform bundle --broker-ca "
        f"{authority.cert_file} …",
        highlight=False,
    )


@app.command()
def show(directory: DirOption) -> None:
    """Print the site CA and the broker certificate in DIR."""
    try:
        authority = SiteAuthority.load(directory)
    except TlsError as exc:
        raise _fail(str(exc)) from None
    cert = authority.cert
    _out.print(
        f"site CA {cert.subject.rfc4514_string()}, sha256 {_fingerprint(authority)}…, valid until "
        f"{cert.not_valid_after_utc:%Y-%m-%d}",
        highlight=False,
    )
    broker_file = directory / "broker.pem"
    if not broker_file.exists():
        _out.print("no broker certificate yet (carehub platform tls init --name HOST)", highlight=False)
        return
    try:
        broker = x509.load_pem_x509_certificate(broker_file.read_bytes())
        names = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound) as exc:
        raise _fail(f"{broker_file}: not a broker certificate ({exc})") from None
    shown = [str(n.value) for n in names]
    signed_here = broker.issuer == cert.subject
    _out.print(
        f"broker certificate for {', '.join(shown)}, valid until {broker.not_valid_after_utc:%Y-%m-%d}"
        + ("" if signed_here else "; NOT issued by this CA"),
        highlight=False,
    )
