"""Issue 17 item 6 (smaller holes): reading hub.toml is bounded, and a NUL byte in a path is a config error.

``carehub doctor -c /dev/zero`` read until memory ran out, and ``key_file = "a\\u0000b"`` ended in a ``ValueError``
traceback. The loader now reads only a regular file of at most ``MAX_CONFIG_BYTES``, opened without blocking and
checked on its descriptor, and refuses a NUL byte in any path key with one line naming the key.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from carehub.bench import provision
from gateway.config import MAX_CONFIG_BYTES, ConfigError, load_config


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COLUMNS": "400"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, check=False, env=env)


def _refused(path: Path, detail: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "(file)"
    assert detail in str(info.value)


def test_a_device_is_not_read() -> None:
    _refused(Path("/dev/zero"), "not a regular file")


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "hub.toml"
    os.mkfifo(fifo)
    _refused(fifo, "not a regular file")


def test_a_directory_is_refused(tmp_path: Path) -> None:
    _refused(tmp_path, "not a regular file")


def test_a_huge_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    huge = tmp_path / "hub.toml"
    with huge.open("wb") as f:
        f.truncate(8 * 2**30)  # sparse: 8 GiB that take no disk space
    _refused(huge, "too large")


def test_the_largest_config_is_still_read(tmp_path: Path) -> None:
    home = provision(tmp_path, "mqtt://127.0.0.1:9")
    text = home.path.read_text(encoding="utf-8")
    padded = text + "#" * (MAX_CONFIG_BYTES - len(text.encode()) - 1) + "\n"
    home.path.write_text(padded, encoding="utf-8")
    assert load_config(home.path).hub_id == "bench-hub"
    home.path.write_text(padded + "#", encoding="utf-8")
    _refused(home.path, "too large")


def test_bytes_that_are_not_utf8_are_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_bytes(b'[hub]\nid = "\xff"\n')
    _refused(path, "not UTF-8 text (byte 12)")


def test_a_nul_byte_in_the_config_path_is_a_config_error() -> None:
    _refused(Path("hub\0.toml"), "NUL byte")


def _with_nul_key_path(tmp_path: Path) -> Path:
    home = provision(tmp_path, "mqtt://127.0.0.1:9")
    text = home.path.read_text(encoding="utf-8")
    assert 'key_file = "hub.key"' in text
    home.path.write_text(text.replace('key_file = "hub.key"', 'key_file = "a\\u0000b"'), encoding="utf-8")
    return home.path


def test_a_nul_byte_in_a_key_path_names_the_key(tmp_path: Path) -> None:
    path = _with_nul_key_path(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "hub.key_file"
    assert "NUL byte" in str(info.value)


def test_the_entry_points_say_so_in_one_line(tmp_path: Path) -> None:
    path = _with_nul_key_path(tmp_path)
    check = _run("-m", "gateway", "--config", str(path), "--check")
    assert check.returncode == 2
    assert check.stderr.strip().splitlines() == [
        f"error: {path}: hub.key_file: a path cannot contain a NUL byte, got 'a\\x00b'"
    ]
    doctor = _run("-c", "from carehub.cli import main; main()", "doctor", "-c", str(path))
    assert doctor.returncode != 0
    assert "hub.key_file" in doctor.stdout
    assert "Traceback" not in doctor.stdout + doctor.stderr


def test_doctor_refuses_a_huge_config_without_reading_it(tmp_path: Path) -> None:
    huge = tmp_path / "hub.toml"
    with huge.open("wb") as f:
        f.truncate(8 * 2**30)
    doctor = _run("-c", "from carehub.cli import main; main()", "doctor", "-c", str(huge))
    assert doctor.returncode != 0
    assert "too large" in doctor.stdout + doctor.stderr
    assert "Traceback" not in doctor.stdout + doctor.stderr


def test_a_100000_character_resident_name_is_refused_by_the_installer_tool(tmp_path: Path) -> None:
    home = provision(tmp_path, "mqtt://127.0.0.1:9")
    before = home.path.read_bytes()
    long_name = "A" * 100_000
    result = _run(
        "-c", "from carehub.cli import main; main()", "provision", "resident", "resident-1", "-c", str(home.path),
        "--name", long_name,
    )  # fmt: skip
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert "residents[0].name: expected at most 100 characters, got 100000" in lines[0]
    assert home.path.read_bytes() == before
    ok = _run(
        "-c", "from carehub.cli import main; main()", "provision", "resident", "resident-1", "-c", str(home.path),
        "--name", "Wang Fang",
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert load_config(home.path).residents[0].name == "Wang Fang"


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('name = "Bench"', f'name = "{"x" * 101}"', "residents[0].name"),
        ('id = "resident-1"', 'id = "line\\nbreak"', "residents[0].id"),
        ('id = "resident-1"', f'id = "{"r" * 65}"', "residents[0].id"),
        ('name = "BP-0"', f'name = "{"m" * 101}"', "devices[0].name"),
    ],
)
def test_names_and_ids_are_bounded(tmp_path: Path, old: str, new: str, key: str) -> None:
    home = provision(tmp_path, "mqtt://127.0.0.1:9")
    text = home.path.read_text(encoding="utf-8")
    assert old in text
    home.path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(home.path)
    assert info.value.key == key
