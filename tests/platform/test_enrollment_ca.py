"""The site CA in an enrollment bundle (issue 15 item 8): signed with the rest, checked, optional."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from community.enrollment import BundleError, create_bundle, read_bundle
from community.tls import SiteAuthority
from protocols.keys import PlatformIdentity

PLATFORM = PlatformIdentity.generate()


def _bundle(url: str, ca: str | None) -> bytes:
    return create_bundle(PLATFORM, hub_id="hub-9", broker_url=url, username="hub-9", password="pw", broker_ca=ca)  # noqa: S106


def test_the_ca_travels_signed_and_an_altered_one_is_refused(tmp_path: Path) -> None:
    ca = SiteAuthority.create(tmp_path / "a", "site A").pem
    data = _bundle("mqtts://broker.example:8883", ca)
    assert read_bundle(data).broker_ca == ca
    other = SiteAuthority.create(tmp_path / "b", "site B").pem
    fields = json.loads(data)
    fields["broker_ca"] = other  # a different CA slipped into a genuine bundle
    with pytest.raises(BundleError, match="signature"):
        read_bundle(json.dumps(fields).encode())


def test_a_bundle_without_a_ca_still_reads() -> None:
    assert read_bundle(_bundle("mqtts://broker.example:8883", None)).broker_ca is None


@pytest.mark.parametrize(
    ("url", "ca", "match"),
    [
        ("mqtt://127.0.0.1:1883", "CA", "a broker CA is for an mqtts:// broker url"),
        ("mqtts://b:8883", "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", "not a PEM certificate"),
        ("mqtt://192.168.1.10:1883", None, "plain mqtt:// only to a loopback broker"),
    ],
)
def test_unusable_bundles_are_refused(tmp_path: Path, url: str, ca: str | None, match: str) -> None:
    pem = SiteAuthority.create(tmp_path, "site").pem if ca == "CA" else ca
    with pytest.raises(BundleError, match=match):
        _bundle(url, pem)


def test_a_server_certificate_is_not_a_ca(tmp_path: Path) -> None:
    authority = SiteAuthority.create(tmp_path, "site")
    broker = authority.issue_broker(["broker.example"])
    with pytest.raises(BundleError, match="not a CA"):
        _bundle("mqtts://broker.example:8883", broker.cert_file.read_text())
