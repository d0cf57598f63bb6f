"""The simulated radio's relay as a child process, for tests that run a hub or carehub command in another process."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def running_relay(bound_s: float = 60.0) -> AsyncIterator[str]:
    """``python -m sim.ble.relay --port 0`` while entered; the value is its ``tcp:`` link. ``bound_s`` bounds the wait
    for its READY line (an awaited event, not a sleep); the relay is killed and reaped on exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sim.ble.relay", "--port", "0", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(bound_s):
            while True:
                line = (await process.stdout.readline()).decode()
                assert line, "the relay exited before it was ready"
                if line.startswith("READY"):
                    break
        yield f"tcp:127.0.0.1:{line.split()[1]}"
    finally:
        process.kill()
        await process.wait()
