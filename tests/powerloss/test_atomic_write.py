"""protocols.atomic.write_atomic, the one helper every file outside SQLite is written with; its behaviour at a
power cut is checked by test_powerloss.py (config and key files of the traced workload)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from bumble.keys import JsonKeyStore, PairingKeys

from gateway.provision.errors import ConfigWriteError
from gateway.provision.files import write_atomic as provision_write
from protocols import atomic
from protocols.errors import KeyFileError
from protocols.keys import save_pendant_key
from sim.ble.keystore import DurableJsonKeyStore


def test_replaces_the_file_with_the_requested_mode(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    atomic.write_atomic(target, b"new", mode=0o600)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["f"]


def test_short_writes_are_continued(tmp_path: Path) -> None:
    def two_bytes(fd: int, data: bytes) -> int:
        return os.write(fd, data[:2])

    atomic.write_atomic(tmp_path / "f", b"0123456789", writer=two_bytes)
    assert (tmp_path / "f").read_bytes() == b"0123456789"


@pytest.mark.parametrize("result", [0, OSError(errno.ENOSPC, "No space left on device")])
def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path, result: int | OSError) -> None:
    def failing(fd: int, data: bytes) -> int:
        if isinstance(result, OSError):
            raise result
        return result

    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(OSError, match=r"space|progress"):
        atomic.write_atomic(target, b"new", writer=failing)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f"]


def test_missing_directories_only_with_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "f"
    with pytest.raises(FileNotFoundError):
        atomic.write_atomic(target, b"x")
    atomic.write_atomic(target, b"x", parents=True)
    assert target.read_bytes() == b"x"


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "f").symlink_to(victim)
    atomic.write_atomic(tmp_path / "f", b"new")
    assert victim.read_bytes() == b"keep"
    assert not (tmp_path / "f").is_symlink()


def test_callers_turn_os_errors_into_their_own_types(tmp_path: Path) -> None:
    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(ConfigWriteError, match="No space left"):
        provision_write(tmp_path / "hub.toml", b"x", writer=full)
    with pytest.raises(KeyFileError, match="cannot write key file"):
        save_pendant_key(tmp_path / "missing-dir" / "p.key", "pendant-1", bytes(32))


async def test_bonds_are_saved_private_and_read_back_by_bumble(tmp_path: Path) -> None:
    path = tmp_path / "data" / "bonds.json"
    store = DurableJsonKeyStore(namespace="F0:F1:F2:F3:F4:F5", filename=str(path))
    keys = PairingKeys(ltk=PairingKeys.Key(bytes(range(16)), authenticated=True))
    await store.update("C0:FF:EE:00:01:01", keys)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == ["bonds.json"]
    again = JsonKeyStore(namespace="F0:F1:F2:F3:F4:F5", filename=str(path))
    [(name, loaded)] = await again.get_all()
    assert name == "C0:FF:EE:00:01:01"
    assert loaded.ltk is not None
    assert loaded.ltk.value == bytes(range(16))
