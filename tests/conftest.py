"""Shared fixtures (a real Mosquitto on a free loopback port) and the harness every test runs in.

The harness guarantees two things, proved by ``tests/test_harness.py``:

**A hung test fails within its limit.** The limit is pytest-timeout's (``timeout`` in pyproject.toml, or a
``@pytest.mark.timeout(n)`` marker). pytest-timeout's own ``signal`` method cannot stop a test on uvloop: its SIGALRM
handler raises inside uvloop's signal callback, which logs the exception and carries on, so the test waits forever.
Instead, every task that pytest-asyncio's runner starts on a test loop (a fixture's setup or teardown, the test
itself) is watched from that loop: when the limit passes, the task is cancelled (again every second, in case a
library loses the cancellation, see ``gateway.aio``) and the test is reported failed with the stack of every task
of the loop, even if it swallowed the cancellation. Its teardown then has ``timeout_grace`` more seconds. Only if the
loop itself is blocked (or a synchronous test hangs) does the last resort fire, ``timeout_grace`` after that:
pytest-timeout's ``thread`` method, which dumps every thread's stack and ends the worker (after the processes below).

**Every process a test starts dies with it.** Each child process (``subprocess.Popen`` and
``asyncio.create_subprocess_exec``/``_shell``, whichever loop runs them) gets ``PR_SET_PDEATHSIG = SIGKILL`` and a
process group of its own before it executes: when the test worker dies, however it dies, the kernel kills its
children, and a watchdog process (told of each group) kills what is left of their groups, their own children
included. When a test ends, whatever is left in the process groups of the children it started (a forgotten
Mosquitto, a relay's own children) is killed and reported as a warning. Processes a fixture of wider scope starts
are left to that fixture (and killed, if still there, when the session ends). A child that starts a session of its
own (``start_new_session``) keeps its own children out of reach of the group kills; only the death signal covers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import inspect
import io
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_timeout  # type: ignore[import-untyped]

from gateway import aio
from sim.broker import MosquittoBroker, mosquitto_available

requires_mosquitto = pytest.mark.skipif(
    not mosquitto_available(), reason="mosquitto is not installed (scripts/test installs it)"
)

_GRACE_DEFAULT = "15"  # seconds; see the module docstring
_RECANCEL_EVERY = 1.0  # seconds between cancellations of a timed-out task that carries on regardless


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "timeout_grace",
        "seconds a timed-out test's teardown may take, and then the margin before the worker is ended",
        default=_GRACE_DEFAULT,
    )


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """Async tests run on the event loop carehub's processes run on (uvloop), watched by the harness."""
    del config, item
    return {"uvloop": _test_loop}


# -- a hung test fails within its limit ------------------------------------------------------------------------


@dataclass(slots=True)
class _Deadline:
    """The limit of the test running now (one at a time per worker)."""

    limit: float
    grace: float
    at: float  # time.monotonic() when the limit passes
    expired_at: float | None = None
    where: str = ""  # the loop's task stacks when the limit passed
    reported: bool = False
    handles: list[asyncio.TimerHandle] = field(default_factory=list)

    def watch(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        """Cancel ``task`` when the limit (or, after it, the teardown's grace) passes."""
        at = self.at if self.expired_at is None else self.expired_at + self.grace
        handle = loop.call_later(max(0.0, at - time.monotonic()), self._expire, loop, task)
        self.handles.append(handle)
        task.add_done_callback(lambda _t: handle.cancel())

    def _expire(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        if task.done() or _debugging():
            return
        if self.expired_at is None:
            self.expired_at = time.monotonic()
            self.where = _task_stacks(loop)
        task.cancel(f"the test exceeded its {self.limit:g} s limit (cancelled by the test harness)")
        self.handles.append(loop.call_later(_RECANCEL_EVERY, self._expire, loop, task))

    def close(self) -> None:
        for handle in self.handles:
            handle.cancel()
        self.handles.clear()


@dataclass(slots=True)
class _Now:
    """What this worker is running now."""

    deadline: _Deadline | None = None
    owner: str = ""  # who starts processes now: a test's node id, or a fixture of wider scope


_now = _Now()
_DEADLINE = pytest.StashKey[_Deadline]()


def _test_loop() -> asyncio.AbstractEventLoop:
    loop = aio.new_event_loop()
    loop.set_task_factory(_watched_task)
    return loop


def _watched_task(loop: asyncio.AbstractEventLoop, coro: Any, *, context: Any = None) -> asyncio.Task[Any]:
    """Every task, watched when the loop is not running: a runner's main task (a fixture step or the test)."""
    task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, context=context)
    if _now.deadline is not None and not loop.is_running():
        _now.deadline.watch(loop, task)
    return task


def _task_stacks(loop: asyncio.AbstractEventLoop) -> str:
    """Each task of ``loop`` with its whole await chain (a suspended task's own stack is only its outer frame)."""
    out = io.StringIO()
    for task in sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name()):
        out.write(f"{task!r}\n")
        awaiting: Any = task.get_coro()
        while awaiting is not None:
            frame = _first_attribute(awaiting, "cr_frame", "ag_frame", "gi_frame")
            if frame is not None:
                out.write(f'  File "{frame.f_code.co_filename}", line {frame.f_lineno}, in {frame.f_code.co_name}\n')
            awaiting = _first_attribute(awaiting, "cr_await", "ag_await", "gi_yieldfrom")
    return out.getvalue()


def _first_attribute(obj: object, *names: str) -> Any:
    return next((getattr(obj, name) for name in names if hasattr(obj, name)), None)


def _debugging() -> bool:
    return bool(pytest_timeout.is_debugging())


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool:
    """Replaces pytest-timeout's timer (see the module docstring); its ``thread`` method is the last resort."""
    grace = float(item.config.getini("timeout_grace"))
    deadline = _Deadline(float(settings.timeout), grace, time.monotonic() + float(settings.timeout))
    item.stash[_DEADLINE] = deadline
    _now.deadline = deadline

    def last_resort() -> None:
        if _debugging():
            return
        _kill_groups(list(_children), why="the test worker is being ended")
        if deadline.where:
            sys.stderr.write(f"carehub test harness: the tasks at the limit:\n{deadline.where}\n")
        pytest_timeout.timeout_timer(item, settings)  # dumps every thread's stack, then os._exit(1)

    backstop = threading.Timer(settings.timeout + 2 * grace, last_resort)
    backstop.name = f"harness backstop {item.nodeid}"
    backstop.daemon = True
    backstop.start()

    def cancel() -> None:
        backstop.cancel()
        deadline.close()
        if _now.deadline is deadline:
            _now.deadline = None

    item.cancel_timeout = cancel  # type: ignore[attr-defined]  # pytest-timeout's cancel hook calls it
    return True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """The first report after the limit passed says so, and fails even if the test swallowed the cancellation."""
    del call
    report = yield
    deadline = item.stash.get(_DEADLINE, None)
    if deadline is None or deadline.expired_at is None or deadline.reported:
        return report
    deadline.reported = True
    headline = f"Timeout: the test exceeded its {deadline.limit:g} s limit; its tasks were cancelled"
    report.sections.append(("Timeout: where the tasks were waiting", deadline.where))
    if report.passed:
        report.outcome = "failed"
        report.longrepr = f"{headline}, and it swallowed the cancellation.\n\n{deadline.where}"
    else:
        report.sections.append(("Timeout", headline))
    return report


# -- every process a test starts dies with it -------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl  # resolved here, not in the forked child

# A group is killed only while its leader is the process the harness started (or gone): process ids are reused
# (pid_max is often 32768), and a group id that another user's job has by now must be left alone.


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time in clock ticks) of process ``pid``, or None when there is none."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
            text = file.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp ...; starttime is 20th
    return fields[0], int(fields[2]), int(fields[19])


def _group_is_ours(pgid: int, started: int) -> bool:
    """Whether process group ``pgid`` is still the one whose leader started at ``started``."""
    leader = _proc_stat(pgid)
    return leader is None or leader[2] == started  # gone: what is left are its orphans


@dataclass(frozen=True, slots=True)
class _Child:
    owner: str  # the test (node id) or wider fixture that started it
    started: int  # its start time (clock ticks since boot), to tell it from a later process with its id


_children: dict[int, _Child] = {}  # pid (= its process group) -> who started it


def _die_with(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child is killed when ``parent`` dies, and leads a process group of its own."""

    def preexec() -> None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the death signal was armed
            os._exit(1)
        if os.getpgrp() != os.getpid():  # not when it asked for a session of its own (already a group leader)
            os.setpgid(0, 0)

    return preexec


class _Watchdog:
    """A process of its own that outlives a killed test worker and kills the process groups of its children.

    The kernel kills a worker's children when it dies (PR_SET_PDEATHSIG), but not their children (a relay's,
    ``carehub demo``'s Mosquitto). The worker tells the watchdog each group it starts and ends; when the worker's
    end closes the pipe, however it ended, the watchdog kills what is left of the groups and exits.
    """

    SCRIPT = (
        inspect.getsource(_proc_stat)
        + inspect.getsource(_group_is_ours)
        + """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C is for the tests; the watchdog's work starts when they end
groups = {}
for line in sys.stdin:
    sign, pgid, started = line.split()
    if sign == "+":
        groups[int(pgid)] = int(started)
    else:
        groups.pop(int(pgid), None)
for pgid, started in groups.items():
    if _group_is_ours(pgid, started):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass
"""
    )

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None

    def tell(self, sign: str, pgid: int, started: int) -> None:
        if self._process is None:
            self._process = subprocess.Popen.__new__(subprocess.Popen)
            # Not through the harness's own Popen: the watchdog must not die with the worker.
            _popen_init(
                self._process,
                [sys.executable, "-c", self.SCRIPT],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
            )
        stdin = self._process.stdin
        if stdin is not None:
            with contextlib.suppress(OSError):  # a watchdog killed by someone else: nothing more to do
                stdin.write(f"{sign} {pgid} {started}\n")
                stdin.flush()

    def close(self) -> None:
        if self._process is not None and self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(30)


_watchdog = _Watchdog()


def _record(pid: int) -> None:
    stat = _proc_stat(pid)
    if stat is None:  # it has already exited and been reaped
        return
    _children[pid] = _Child(_now.owner, stat[2])
    _watchdog.tell("+", pid, stat[2])


_popen_init = subprocess.Popen.__init__


@functools.wraps(_popen_init)
def _popen(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
    if len(args) < 7 and kwargs.get("preexec_fn") is None:  # preexec_fn is Popen's 7th positional parameter
        kwargs["preexec_fn"] = _die_with(os.getpid())
    _popen_init(self, *args, **kwargs)
    _record(self.pid)


def _wrap_async_spawn(
    spawn: Callable[..., Any],
) -> Callable[..., Any]:
    @functools.wraps(spawn)
    async def wrapper(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        kwargs.setdefault("preexec_fn", _die_with(os.getpid()))
        process: asyncio.subprocess.Process = await spawn(*args, **kwargs)
        _record(process.pid)
        return process

    return wrapper


# uvloop spawns through libuv, not subprocess.Popen: the asyncio entry points are wrapped as well.
subprocess.Popen.__init__ = _popen  # type: ignore[method-assign]
asyncio.create_subprocess_exec = _wrap_async_spawn(asyncio.create_subprocess_exec)
asyncio.create_subprocess_shell = _wrap_async_spawn(asyncio.create_subprocess_shell)
asyncio.subprocess.create_subprocess_exec = asyncio.create_subprocess_exec
asyncio.subprocess.create_subprocess_shell = asyncio.create_subprocess_shell


def _group_members(pgid: int) -> list[str]:
    """Living (not zombie) processes of process group ``pgid``, as ``pid command`` strings."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _proc_stat(int(entry))
        if stat is not None and stat[1] == pgid and stat[0] != "Z":
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                members.append(f"{entry} {cmdline.strip()[:200]}")
    return members


def _kill_groups(pids: list[int], *, why: str) -> list[str]:
    """SIGKILL every living process of the groups of these children (forgotten); returns what was killed."""
    killed = []
    for pid in pids:
        child = _children.pop(pid, None)
        if child is None:
            continue
        members = _group_members(pid) if _group_is_ours(pid, child.started) else []
        if members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            killed += members
        _watchdog.tell("-", pid, child.started)
    if killed:
        sys.stderr.write(f"carehub test harness: {why}; killed {len(killed)} process(es)\n")
    return killed


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, Any, Any]:
    """Processes started by this test (and their process groups) are killed once its teardown is done."""
    del nextitem
    _now.owner = item.nodeid
    try:
        return (yield)
    finally:
        mine = [pid for pid, child in _children.items() if child.owner == item.nodeid]
        leaked = _kill_groups(mine, why=f"{item.nodeid} left processes behind")
        if leaked:
            warnings.warn(
                pytest.PytestWarning(f"{item.nodeid} left {len(leaked)} process(es) running, killed: {leaked}"),
                stacklevel=1,
            )
        _now.owner = ""


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, Any, Any]:
    """A process started by a fixture of wider scope than a test belongs to that fixture, not to the test that
    happened to set it up: it lives until the fixture's own teardown (or the session's end)."""
    del request
    outer = _now.owner
    if fixturedef.scope != "function":
        _now.owner = f"{fixturedef.scope}-scoped fixture {fixturedef.argname}"
    try:
        return (yield)
    finally:
        _now.owner = outer


def pytest_unconfigure(config: pytest.Config) -> None:
    del config
    _kill_groups(list(_children), why="the test session ended with processes left")
    _watchdog.close()


# -- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Generator[Any, None, None]:
    """One real PostgreSQL server per test worker (``pg_server.PostgresServer``); each test makes its own database
    with ``pg_server.create_database()``. Skips only when PostgreSQL's server is not installed."""
    # Imported here: tests/test_harness.py runs copies of this conftest where tests/ is not on the path.
    from pg_server import PostgresServer, PostgresUnavailableError  # noqa: PLC0415

    try:
        server = PostgresServer()
    except PostgresUnavailableError as exc:
        pytest.skip(str(exc))
    # pytest asks only the root's conftest files (none here) for a session-scoped fixture's setup hook, so
    # pytest_fixture_setup above never sees this fixture: claim its processes for it here, or the first test
    # that used it would be blamed for the server and kill it.
    outer, _now.owner = _now.owner, "session-scoped fixture pg_server"
    try:
        server.__enter__()
    finally:
        _now.owner = outer
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def own_pg_server() -> Generator[Any, None, None]:
    """A PostgreSQL server of the test's own (``pg_server.PostgresServer``), for a test that stops or restarts it:
    the session's ``pg_server`` is shared. Skips only when PostgreSQL's server is not installed."""
    from pg_server import PostgresServer, PostgresUnavailableError  # noqa: PLC0415  (see pg_server above)

    try:
        server = PostgresServer()
    except PostgresUnavailableError as exc:
        pytest.skip(str(exc))
    with server:
        yield server


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    """An anonymous Mosquitto on 127.0.0.1; ``stop()``/``start()`` bring it down and back on the same port."""
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed (scripts/test installs it)")
    async with MosquittoBroker(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture
async def relay_link() -> AsyncIterator[str]:
    """The simulated radio's relay in its own process (``python -m sim.ble.relay --port 0``): its ``tcp:`` link,
    reachable from a hub or carehub command in another process."""
    # Imported here, not at the top: tests/test_harness.py runs this conftest alone in a scratch tree without the
    # other helper modules of tests/ (as pg_server's fixture does).
    from relay_process import running_relay  # noqa: PLC0415

    async with running_relay(60.0) as link:
        yield link
