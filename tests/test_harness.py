"""The test harness itself (tests/conftest.py): a hung test fails within its limit on uvloop, and every process a
test starts dies with it, also when the worker running it is killed.

Each case runs an inner pytest in a subprocess on a scratch directory holding a verbatim copy of tests/conftest.py,
bounded from outside by ``subprocess`` timeouts, so a regression makes these tests fail instead of hang.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)

CONFTEST = Path(__file__).with_name("conftest.py")
OUTER_BOUND = 90.0  # seconds an inner run may take before this test fails instead


def _inner(tmp_path: Path, tests: str, *, limit: float, grace: float = 2.0) -> Path:
    root = tmp_path / "inner"
    root.mkdir()
    (root / "conftest.py").write_text(CONFTEST.read_text(encoding="utf-8"), encoding="utf-8")
    (root / "pytest.ini").write_text(
        "[pytest]\n"
        "asyncio_mode = auto\n"
        "asyncio_default_fixture_loop_scope = function\n"
        f"timeout = {limit:g}\n"
        f"timeout_grace = {grace:g}\n",
        encoding="utf-8",
    )
    (root / "test_inner.py").write_text(textwrap.dedent(tests), encoding="utf-8")
    return root


def _run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", "-rA", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=OUTER_BOUND,
        check=False,
    )


def _gone(pid: int, within: float = 30.0) -> bool:
    """Whether process ``pid`` has ended (or ends within ``within`` s; awaited on its pidfd, not polled)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], within)
        return bool(readable)
    finally:
        os.close(fd)


HUNG = """
    import asyncio

    import pytest


    async def test_waits_forever():
        await asyncio.Event().wait()


    async def test_swallows_the_cancellation_and_returns():
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return


    @pytest.fixture
    async def stuck_teardown():
        yield
        await asyncio.Event().wait()


    async def test_fixture_teardown_hangs(stuck_teardown):
        del stuck_teardown


    async def test_quick():
        await asyncio.sleep(0)
"""


def test_a_hung_async_test_fails_within_its_limit_on_uvloop(tmp_path: Path) -> None:
    result = _run(_inner(tmp_path, HUNG, limit=2))
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "FAILED test_inner.py::test_waits_forever" in out
    assert "the test exceeded its 2 s limit" in out
    assert "in test_waits_forever" in out  # where it was waiting
    # A test that catches the cancellation and returns has still overrun its limit.
    assert "FAILED test_inner.py::test_swallows_the_cancellation_and_returns" in out
    # A fixture whose teardown hangs is an error of that test, not a hang of the run.
    assert "ERROR test_inner.py::test_fixture_teardown_hangs" in out
    assert "PASSED test_inner.py::test_quick" in out
    assert "2 failed, 2 passed, 1 error" in out


def test_a_test_that_never_yields_to_cancellation_ends_its_worker(tmp_path: Path) -> None:
    """The last resort: the loop cannot stop the test, so the worker dumps its stacks and exits; its processes
    die first."""
    tests = """
        import asyncio
        import sys


        async def test_ignores_every_cancellation():
            child = await asyncio.create_subprocess_exec("sleep", "1000")
            print("CHILD", child.pid, file=sys.stderr, flush=True)
            while True:
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    pass
    """
    result = _run(_inner(tmp_path, tests, limit=1, grace=1), "-s")
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "Timeout" in out
    assert "in test_ignores_every_cancellation" in out  # the task's stack, from the harness
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("CHILD")]
    assert _gone(int(line.split()[1]))


def test_processes_a_test_leaves_behind_are_killed_when_it_ends(tmp_path: Path) -> None:
    tests = """
        import asyncio
        import os
        import select
        import subprocess
        from pathlib import Path

        PIDS = Path("pids")


        async def test_leaves_processes_running():
            a = await asyncio.create_subprocess_exec("sleep", "1000")
            b = subprocess.Popen(["sleep", "1000"])
            # A grandchild: the shell's background job, in the shell's process group.
            c = await asyncio.create_subprocess_exec(
                "sh", "-c", "sleep 1000 & echo $!; wait", stdout=asyncio.subprocess.PIPE
            )
            grandchild = int(await c.stdout.readline())
            PIDS.write_text(f"{a.pid} {b.pid} {c.pid} {grandchild}")


        def test_they_are_gone():
            for pid in map(int, PIDS.read_text().split()):
                try:
                    fd = os.pidfd_open(pid)
                except ProcessLookupError:
                    continue
                readable, _, _ = select.select([fd], [], [], 30)
                os.close(fd)
                assert readable, f"process {pid} outlived the test that started it"
    """
    result = _run(_inner(tmp_path, tests, limit=60))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "2 passed" in out
    assert "left 4 process(es) running, killed" in out


def test_a_killed_worker_takes_its_processes_with_it(tmp_path: Path) -> None:
    """SIGKILL leaves the worker no chance to clean up: the kernel kills its children (PR_SET_PDEATHSIG), and the
    harness's watchdog their children."""
    tests = """
        import asyncio
        import subprocess
        import sys


        async def test_runs_until_killed():
            a = await asyncio.create_subprocess_exec("sleep", "1000")
            b = subprocess.Popen(["sleep", "1000"])
            c = await asyncio.create_subprocess_exec(
                "sh", "-c", "sleep 1000 & echo $!; wait", stdout=asyncio.subprocess.PIPE
            )
            grandchild = int(await c.stdout.readline())
            print("CHILDREN", a.pid, b.pid, c.pid, grandchild, file=sys.stderr, flush=True)
            await asyncio.Event().wait()
    """
    root = _inner(tmp_path, tests, limit=0)
    worker = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", "-s"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stderr is not None
        pids: list[int] = []
        for line in worker.stderr:
            if line.startswith("CHILDREN"):
                pids = [int(p) for p in line.split()[1:]]
                break
        assert len(pids) == 4
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=OUTER_BOUND)
        assert all(_gone(pid) for pid in pids)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_a_process_of_a_wider_fixture_lives_until_the_session_ends(tmp_path: Path) -> None:
    tests = """
        import os
        import subprocess
        from pathlib import Path

        import pytest


        @pytest.fixture(scope="module")
        def server():
            process = subprocess.Popen(["sleep", "1000"])
            Path("pid").write_text(str(process.pid))
            return process  # no teardown: the harness ends it with the session


        def test_first(server):
            assert server.poll() is None


        def test_second(server):
            assert server.poll() is None  # not killed at the end of the test that set the fixture up
    """
    root = _inner(tmp_path, tests, limit=60)
    result = _run(root)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "2 passed" in out
    assert "running, killed" not in out  # no test was blamed for it
    assert "the test session ended with processes left; killed 1" in out
    assert _gone(int((root / "pid").read_text()))
