"""Issue 13.3: a command's output is complete, or the command fails loudly.

``carehub platform readings --json`` into a slow reader stopped at 65,536 bytes and exited 0 when standard output was
a non-blocking pipe (an event loop, here or in another process sharing the pipe, had set ``O_NONBLOCK``). These run
the real entry point with such a pipe and a reader that sleeps between reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import CAREHUB, environment, one_error_line

from community.samples import bp_record
from community.storage import EnvelopeToStore, SqliteStorage, StoredReading
from runtime.output import OutputClosedError, write_all

READINGS = 1500  # about 800 bytes of JSON each: 1.2 MB in all


def _platform(root: Path) -> Path:
    config = root / "platform.toml"
    config.write_text(
        '[broker]\nurl = "mqtt://127.0.0.1:1883"\n[storage]\ndatabase = "platform.db"\n'
        '[keys]\nidentity = "platform.key"\n',
        encoding="utf-8",
    )

    async def seed() -> None:
        async with SqliteStorage(root / "platform.db") as storage:
            rows = tuple(StoredReading.from_record(bp_record("hub-a", n), 1, 1.7e9) for n in range(1, READINGS + 1))
            await storage.store_batch([EnvelopeToStore("hub-a", 1, rows)])

    asyncio.run(seed())
    return config


@pytest.fixture(scope="module")
def platform_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _platform(tmp_path_factory.mktemp("platform"))


def _run_into_pipe(args: list[str], *, blocking: bool, read_delay_s: float) -> tuple[int, bytes, str]:
    """Run ``carehub ARGS`` with standard output on a pipe (non-blocking unless ``blocking``) read slowly."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, blocking)
    try:
        process = subprocess.Popen(
            [*CAREHUB, *args], stdout=write_end, stderr=subprocess.PIPE, env=environment(), text=True
        )
    finally:
        os.close(write_end)
    chunks = []
    with os.fdopen(read_end, "rb", buffering=0) as reader:
        while chunk := reader.read(65536):
            chunks.append(chunk)
            time.sleep(read_delay_s)  # a slow consumer (not synchronisation: EOF ends the loop)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, b"".join(chunks), stderr


@pytest.mark.parametrize("blocking", [False, True], ids=["non-blocking pipe", "blocking pipe"])
def test_json_through_a_slow_pipe_is_complete(platform_config: Path, blocking: bool) -> None:
    code, data, stderr = _run_into_pipe(
        ["platform", "readings", "-c", str(platform_config), "--json"], blocking=blocking, read_delay_s=0.02
    )
    assert code == 0, stderr
    assert len(data) > 2**20
    rows = json.loads(data)
    assert len(rows) == READINGS
    assert [row["record_seq"] for row in rows] == list(range(1, READINGS + 1))


def test_a_reader_that_goes_away_is_one_line_and_a_failure(platform_config: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read: the first write fails with EPIPE
    try:
        result = subprocess.run(
            [*CAREHUB, "platform", "readings", "-c", str(platform_config), "--json"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=environment(),
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 1
    assert "standard output closed before the output was complete" in one_error_line(result)


@pytest.fixture
def nonblocking_pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    yield read_end, write_end
    for fd in (read_end, write_end):
        with contextlib.suppress(OSError):  # a test may have closed it already
            os.close(fd)


def test_write_all_waits_out_a_full_non_blocking_pipe(nonblocking_pipe: tuple[int, int]) -> None:
    read_end, write_end = nonblocking_pipe
    data = bytes(range(256)) * 8192  # 2 MiB, 32 times a Linux pipe's buffer
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_end, 65536):
            received.extend(chunk)

    reader = threading.Thread(target=drain, name="drain")
    reader.start()
    write_all(write_end, data)
    os.close(write_end)
    reader.join(timeout=60)
    assert not reader.is_alive()
    assert bytes(received) == data


def test_write_all_reports_a_closed_reader(nonblocking_pipe: tuple[int, int]) -> None:
    read_end, write_end = nonblocking_pipe
    os.close(read_end)
    with pytest.raises(OutputClosedError, match="Broken pipe") as caught:
        write_all(write_end, b"x" * 100_000)
    assert caught.value.fd == write_end
