"""The console as ``carehub demo --console HOST:PORT`` serves it (issue 18): the demo's platform worker behind the
doctor's web console, a family doctor's account (``dr-li``, a fresh random password printed once) sharing every
resident of the scenario, and the simulated doctor logged in as her through :class:`ConsoleClient`, so the demo's
acknowledgements go through the console's HTTP API, access rules and audit log like a person's."""

from __future__ import annotations

import contextlib
import datetime as _dt
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from community.console.accounts import AccountStore, Role, Sharing, SharingLevel, accounts_path
from community.console.client import ConsoleClient
from community.console.web import DownSender, open_console, serve_console
from community.storage import Storage

__all__ = ["DEMO_DOCTOR", "DemoConsole", "attach_console"]

DEMO_DOCTOR = "dr-li"


@dataclass(frozen=True, slots=True)
class DemoConsole:
    """The served console: its URL, the doctor's login, the logged-in client and the queue's wake-up call."""

    url: str
    username: str
    password: str
    doctor: ConsoleClient
    on_alarm: Callable[[], None]


async def attach_console(
    stack: contextlib.AsyncExitStack,
    *,
    storage: Storage,
    worker: DownSender,
    database: Path,
    residents: Sequence[str],
    host: str,
    port: int,
    clock: Callable[[], _dt.datetime],
) -> DemoConsole:
    """Serve the console on ``host:port`` (0: any free port) until ``stack`` closes."""
    password = secrets.token_urlsafe(9)
    with AccountStore(accounts_path(database), clock) as accounts:
        if accounts.account(DEMO_DOCTOR) is None:
            accounts.add(DEMO_DOCTOR, Role.DOCTOR, password, "Dr. Li")
        else:
            raise ValueError(f"{database}: the demo's doctor account exists already; use a new work directory")
        for resident in residents:
            accounts.set_sharing(Sharing(resident, DEMO_DOCTOR, SharingLevel.CARE_TEAM))
    console = await stack.enter_async_context(open_console(storage, worker, database, clock=clock))
    bound = await stack.enter_async_context(serve_console(console, host, port))
    url = f"http://{host}:{bound}"
    doctor = await stack.enter_async_context(ConsoleClient(url))
    await doctor.login(DEMO_DOCTOR, password)
    return DemoConsole(url + "/", DEMO_DOCTOR, password, doctor, console.feed.publish)
