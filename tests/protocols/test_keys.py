"""Keys: ids, key files with 0600 permissions, refusal of widely readable private keys, domain-separated signatures."""

from __future__ import annotations

import base64
import os
import re
import stat
from pathlib import Path

import nacl.signing
import pytest

from protocols.errors import AuthenticationError, KeyFileError
from protocols.keys import (
    HubIdentity,
    PlatformIdentity,
    key_id,
    load_hub_identity,
    load_hub_public_key,
    load_pendant_key,
    load_platform_identity,
    load_platform_public_keys,
    save_hub_identity,
    save_hub_public_key,
    save_pendant_key,
    save_platform_identity,
    save_platform_public_keys,
    sign_detached,
    verify_detached,
)

SEED = bytes(range(32))


def test_key_id_is_blake2b_8_bytes_hex() -> None:
    verify = nacl.signing.SigningKey(SEED).verify_key
    assert key_id(verify) == key_id(bytes(verify))
    assert len(key_id(verify)) == 16
    assert key_id(verify) != key_id(nacl.signing.SigningKey(bytes(32)).verify_key)


def test_hub_identity_round_trips_with_mode_0600(tmp_path: Path) -> None:
    hub = HubIdentity("home-0042", nacl.signing.SigningKey(SEED))
    path = tmp_path / "hub.key"
    save_hub_identity(path, hub)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_hub_identity(path) == hub
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_saving_replaces_an_existing_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "hub.key"
    save_hub_identity(path, HubIdentity.generate("home-1"))
    second = HubIdentity.generate("home-1")
    save_hub_identity(path, second)
    assert load_hub_identity(path) == second


def test_platform_identity_and_public_files(tmp_path: Path) -> None:
    platform = PlatformIdentity.generate()
    save_platform_identity(tmp_path / "platform.key", platform)
    save_platform_public_keys(tmp_path / "platform.pub", platform.public)
    loaded = load_platform_identity(tmp_path / "platform.key")
    assert loaded.signing_key == platform.signing_key
    assert bytes(loaded.box_key) == bytes(platform.box_key)
    public = load_platform_public_keys(tmp_path / "platform.pub")
    assert public.verify_key == platform.public.verify_key
    assert bytes(public.box_key) == bytes(platform.public.box_key)
    assert stat.S_IMODE((tmp_path / "platform.pub").stat().st_mode) == 0o644


def test_public_keys_accept_base64(tmp_path: Path) -> None:
    hub = HubIdentity.generate("home-7")
    path = tmp_path / "hub.pub"
    path.write_text(f"hub home-7\ned25519-public {base64.b64encode(bytes(hub.verify_key)).decode()}\n")
    assert load_hub_public_key(path) == hub.public
    save_hub_public_key(tmp_path / "again.pub", hub.public)
    assert load_hub_public_key(tmp_path / "again.pub") == hub.public


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_widely_readable_private_keys_are_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "hub.key"
    save_hub_identity(path, HubIdentity.generate("home-1"))
    os.chmod(path, mode)
    with pytest.raises(KeyFileError, match=re.escape(str(path))) as info:
        load_hub_identity(path)
    assert "chmod 600" in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hub home-1\n",
        "hub home-1\ned25519-seed abcd\n",
        "hub home-1\ned25519-seed " + "zz" * 32 + "\n",
        "hub UPPER\ned25519-seed " + "00" * 32 + "\n",
        "hub home-1\nhub home-2\ned25519-seed " + "00" * 32 + "\n",
        "hub\n",
    ],
)
def test_malformed_key_files_are_key_file_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "hub.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, text.encode())
    os.close(fd)
    with pytest.raises(KeyFileError, match=re.escape(str(path))):
        load_hub_identity(path)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"nowhere\.key"):
        load_platform_identity(tmp_path / "nowhere.key")


def test_symlinked_key_file_is_refused(tmp_path: Path) -> None:
    save_hub_identity(tmp_path / "real.key", HubIdentity.generate("home-1"))
    (tmp_path / "link.key").symlink_to(tmp_path / "real.key")
    with pytest.raises(KeyFileError):
        load_hub_identity(tmp_path / "link.key")


def test_signatures_are_bound_to_their_domain() -> None:
    key = nacl.signing.SigningKey(SEED)
    signature = sign_detached(key, b"a\x00", b"message")
    verify_detached(key.verify_key, b"a\x00", b"message", signature)
    with pytest.raises(AuthenticationError):
        verify_detached(key.verify_key, b"b\x00", b"message", signature)
    with pytest.raises(AuthenticationError):
        verify_detached(key.verify_key, b"a\x00", b"messagE", signature)
    with pytest.raises(AuthenticationError):
        verify_detached(key.verify_key, b"a\x00", b"message", signature[:10])


def test_pendant_key_file_round_trip_and_permissions(tmp_path: Path) -> None:
    path = tmp_path / "pendant.key"
    save_pendant_key(path, "AA:BB:CC:DD:EE:02", bytes(range(32)))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_pendant_key(path) == ("AA:BB:CC:DD:EE:02", bytes(range(32)))
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_pendant_key(path)
    with pytest.raises(KeyFileError, match="32 bytes"):
        save_pendant_key(tmp_path / "short.key", "p1", b"short")
