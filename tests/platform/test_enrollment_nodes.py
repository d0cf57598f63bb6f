"""Enrollment bundles naming a broker cluster's nodes (issue 15 item 3): version 2's ``broker_urls``, signed with the
rest and checked; version 1 (one ``broker_url``) still written for one broker and still read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from community.enrollment import BUNDLE_VERSION, BundleError, create_bundle, read_bundle
from community.tls import SiteAuthority
from protocols.keys import PlatformIdentity, sign_detached

PLATFORM = PlatformIdentity.generate()
NODES = ("mqtts://nats1.example:8883", "mqtts://nats2.example:8883", "mqtts://nats3.example:8883")


def _make(urls: str | tuple[str, ...], ca: str | None = None) -> bytes:
    return create_bundle(PLATFORM, hub_id="hub-9", broker_url=urls, username="hub-9", password="pw", broker_ca=ca)  # noqa: S106


def _resigned(fields: dict[str, Any]) -> bytes:
    """``fields`` signed by the platform (to reach the checks that come after the signature)."""
    signed = {k: v for k, v in fields.items() if k != "signature"}
    canonical = json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    signature = sign_detached(PLATFORM.signing_key, b"carehub/v1/enrollment-bundle\0", canonical)
    return json.dumps({**signed, "signature": signature.hex()}).encode()


def test_a_cluster_bundle_is_version_2_and_reads_back_in_order(tmp_path: Path) -> None:
    ca = SiteAuthority.create(tmp_path / "ca", "district").pem
    data = _make(NODES, ca)
    fields = json.loads(data)
    assert fields["carehub_enrollment"] == BUNDLE_VERSION == 2
    assert "broker_url" not in fields
    bundle = read_bundle(data, expect_key_id=PLATFORM.public.key_id)
    assert bundle.broker_urls == NODES
    assert bundle.broker_url == NODES[0]
    assert bundle.broker_ca == ca
    fields["broker_urls"] = [NODES[1], NODES[0], NODES[2]]  # the order is signed too
    with pytest.raises(BundleError, match="signature"):
        read_bundle(json.dumps(fields).encode())


def test_one_url_is_still_a_version_1_bundle_that_reads_as_before() -> None:
    fields = json.loads(_make(NODES[0]))
    assert fields["carehub_enrollment"] == 1
    assert fields["broker_url"] == NODES[0]
    assert read_bundle(_make((NODES[0],))).broker_urls == (NODES[0],)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"carehub_enrollment": 3}, r"version 1\.\.2"),
        ({"carehub_enrollment": True}, r"version 1\.\.2"),
        ({"broker_urls": "mqtts://nats1.example:8883"}, "list of strings"),
        ({"broker_urls": ["mqtts://nats1.example:8883", 7]}, "list of strings"),
        ({"broker_urls": []}, r"1\.\.16 broker urls"),
        ({"broker_urls": [f"mqtts://n{i}.example:8883" for i in range(17)]}, r"1\.\.16 broker urls"),
        ({"broker_urls": ["mqtts://a.example", "mqtts://a.example:8883"]}, "each broker node once"),
        ({"broker_urls": ["mqtts://a.example", "mqtt://127.0.0.1"]}, "same scheme"),
        ({"broker_urls": ["mqtt://127.0.0.1", "mqtt://10.0.0.2"]}, "only to a loopback broker"),
        ({"broker_urls": ["mqtts://a.example:70000"]}, "port out of range"),
        ({"broker_url": NODES[0]}, "a version 2 bundle has the fields"),
    ],
)
def test_bad_node_lists_are_refused(change: dict[str, Any], match: str) -> None:
    fields = json.loads(_make(NODES))
    fields.update(change)
    with pytest.raises(BundleError, match=match):
        read_bundle(_resigned(fields))


def test_a_version_1_bundle_with_a_list_is_refused() -> None:
    fields = json.loads(_make(NODES[0]))
    fields["broker_urls"] = list(NODES)
    with pytest.raises(BundleError, match="a version 1 bundle has the fields"):
        read_bundle(_resigned(fields))


def test_create_refuses_what_read_would() -> None:
    with pytest.raises(BundleError, match="same scheme"):
        _make(("mqtts://a.example", "mqtt://127.0.0.1"))
    with pytest.raises(BundleError, match=r"1\.\.16"):
        _make(())
