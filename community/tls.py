"""The platform's transport security: a site certificate authority and the broker's certificates.

A district runs its own small CA (issue 15 item 8): hubs pin it (it reaches them in their enrollment bundle, signed
with the platform's key, see `community.enrollment`), so a hub talks only to its own district's broker, whatever
certificates the public web trusts. The CA signs the broker's server certificates (one per broker host: Mosquitto
on a one-box install, each NATS node of a cluster), with the names and addresses hubs use to reach it.

Files, in the directory the operator names (``carehub platform tls init --out DIR``):

- ``ca.pem``: the CA certificate (public; goes into bundles and broker configs);
- ``ca.key``: its private key (mode 0600; only needed to issue certificates, keep it offline if you can);
- ``broker.pem`` / ``broker.key``: a broker's certificate and key (0600), for its TLS listener.

Keys are ECDSA P-256 and signatures SHA-256: what Mosquitto (OpenSSL), NATS (Go's crypto/tls) and the hub's Python
`ssl` all accept. The CA lives :data:`CA_DAYS` days; a broker certificate :data:`SERVER_DAYS` days (the longest
lifetime Apple's and Chrome's TLS policies accept, a common ceiling that also suits brokers; renew with the same
command). Every error is a :class:`TlsError` with one line saying what to do.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_DAYS",
    "SERVER_DAYS",
    "BrokerCertificate",
    "SiteAuthority",
    "TlsError",
    "check_ca_pem",
    "is_loopback_host",
]

CA_DAYS: Final = 3650
SERVER_DAYS: Final = 825
_BACKDATE: Final = dt.timedelta(hours=1)  # tolerate a broker or hub whose clock runs a little behind
_MAX_PEM_BYTES: Final = 64 * 1024


class TlsError(ValueError):
    """A CA or certificate that cannot be made, read or used; the message says why."""


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    path.chmod(0o600)


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    if len(data) > _MAX_PEM_BYTES:
        raise TlsError(f"{path}: {len(data)} bytes is too large for a {what}")
    return data


def _subject_names(names: Sequence[str]) -> list[x509.GeneralName]:
    """DNS names and IP addresses, as hubs will write them in their broker URL."""
    if not names:
        raise TlsError("a broker certificate needs at least one name or address (--name)")
    out: list[x509.GeneralName] = []
    for name in names:
        text = name.strip()
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(text)))
            continue
        except ValueError:
            pass
        labels = text.rstrip(".").split(".")
        if not text or len(text) > 253 or not all(_is_label(label) for label in labels):
            raise TlsError(f"{name!r} is neither a host name nor an IP address")
        out.append(x509.DNSName(text.rstrip(".").lower()))
    return out


def _is_label(label: str) -> bool:
    return (
        0 < len(label) <= 63
        and label[0] != "-"
        and label[-1] != "-"
        and all(c.isascii() and (c.isalnum() or c == "-") for c in label)
    )


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ::1): where plaintext MQTT may go."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_ca_pem(pem: str) -> x509.Certificate:
    """Parse a CA certificate handed to a hub; refuse anything that is not a CA certificate now in force.

    Raises:
        TlsError: not PEM, not a certificate, not a CA, or expired.
    """
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise TlsError("not a PEM certificate") from None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise TlsError("the certificate is not a CA (no basic constraints)") from None
    if not constraints.ca:
        raise TlsError("the certificate is not a CA")
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise TlsError(f"the CA certificate is not valid now (valid until {cert.not_valid_after_utc:%Y-%m-%d})")
    return cert


@dataclass(frozen=True, slots=True)
class BrokerCertificate:
    """A broker's certificate and key files, and the names it is valid for."""

    cert_file: Path
    key_file: Path
    names: tuple[str, ...]
    not_after: dt.datetime


@dataclass(frozen=True, slots=True)
class SiteAuthority:
    """The site CA: its certificate and key, loaded from (or created in) a directory."""

    directory: Path
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_file(self) -> Path:
        """``ca.pem``: what hubs pin and brokers name as their CA file."""
        return self.directory / "ca.pem"

    @property
    def pem(self) -> str:
        """The CA certificate in PEM, as it goes into an enrollment bundle."""
        return self.cert.public_bytes(serialization.Encoding.PEM).decode("ascii")

    @classmethod
    def create(cls, directory: Path, name: str, *, now: dt.datetime | None = None) -> SiteAuthority:
        """Create a new CA in ``directory``; refuses to replace one (hubs pin it: a new CA re-enrolls every hub).

        Raises:
            TlsError: a CA is already there, or the files cannot be written.
        """
        if (directory / "ca.pem").exists() or (directory / "ca.key").exists():
            raise TlsError(f"{directory}: a site CA is already there (ca.pem); hubs pin it, so it is kept")
        start = (now or dt.datetime.now(dt.UTC)) - _BACKDATE
        key = ec.generate_private_key(ec.SECP256R1())
        usage = x509.KeyUsage(
            digital_signature=False,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        try:
            directory.mkdir(parents=True, exist_ok=True)
            _write_private(directory / "ca.key", _key_bytes(key))
            (directory / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        except OSError as exc:
            raise TlsError(f"{directory}: cannot write the CA ({exc.strerror})") from None
        return cls(directory, cert, key)

    @classmethod
    def load(cls, directory: Path) -> SiteAuthority:
        """Load the CA in ``directory`` and check that its key matches its certificate.

        Raises:
            TlsError: missing, unreadable, or a key of another certificate.
        """
        try:
            cert = x509.load_pem_x509_certificate(_read(directory / "ca.pem", "CA certificate"))
            key = serialization.load_pem_private_key(_read(directory / "ca.key", "CA key"), password=None)
        except ValueError as exc:
            raise TlsError(f"{directory}: the CA files are damaged ({exc})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TlsError(f"{directory}/ca.key: not an EC private key")
        try:
            key.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise TlsError(f"{directory}: ca.key is not the key of ca.pem") from None
        return cls(directory, cert, key)

    def issue_broker(
        self, names: Sequence[str], out_dir: Path | None = None, *, now: dt.datetime | None = None
    ) -> BrokerCertificate:
        """A server certificate for a broker reachable at ``names`` (host names and IP addresses).

        Writes ``broker.pem`` and ``broker.key`` (0600) into ``out_dir`` (the CA's directory by default),
        replacing an older pair: renewing is issuing again.

        Raises:
            TlsError: a name that is neither a host name nor an address; files that cannot be written.
        """
        sans = _subject_names(names)
        start = (now or dt.datetime.now(dt.UTC)) - _BACKDATE
        not_after = start + dt.timedelta(days=SERVER_DAYS)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0].strip()))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            # Client authentication too: the nodes of a NATS cluster present this certificate to each other on
            # their TLS routes (community.brokerconf_nats), and NATS checks the usage.
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        target = out_dir or self.directory
        cert_file, key_file = target / "broker.pem", target / "broker.key"
        try:
            target.mkdir(parents=True, exist_ok=True)
            _write_private(key_file, _key_bytes(key))
            cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        except OSError as exc:
            raise TlsError(f"{target}: cannot write the broker certificate ({exc.strerror})") from None
        return BrokerCertificate(cert_file, key_file, tuple(n.strip() for n in names), not_after)
