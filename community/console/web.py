"""The family doctor's web console (issue 18 items 1-5): an aiohttp application served by the platform worker.

``carehub platform run -c platform.toml --console HOST:PORT`` serves it inside the ingest worker's process, so an
acknowledgement or a threshold change calls the worker's :meth:`~community.ingest.IngestWorker.ack_alarm` /
:meth:`~community.ingest.IngestWorker.update_thresholds` directly (signed down-messages, kept until the hub confirms
them). Pages and their rules: ``docs/console.md``. Security: a session cookie (HttpOnly, SameSite=Strict, Secure
on HTTPS), the session's CSRF token on every POST, and the ``Origin`` (or ``Referer``) of every POST must be the
console's own. Every view of a resident's data, every alarm action, every threshold change and every refused access
is written to the hash-chained audit log (:mod:`community.console.audit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from aiohttp import web

from community.console.accounts import (
    Access,
    Account,
    AccountError,
    AccountStore,
    Role,
    Session,
    access,
    accounts_path,
)
from community.console.audit import AuditError, AuditLog, SqliteAuditStore, audit_path
from community.console.careplan import CarePlanStore, console_database
from community.console.web_i18n import Lang, choose_lang, t
from community.console.web_render import page, queue_rows
from community.console.web_store import ConsoleStore, ConsoleStoreError, console_web_path
from community.console.web_views import queue_items
from community.fhir.api import fhir_app
from community.storage import Storage
from protocols.messages import DownMessage

__all__ = ["AlarmFeed", "Console", "ConsoleError", "ConsoleSettings", "DownSender", "console_app", "serve_console"]

COOKIE = "carehub_session"
LANG_COOKIE = "carehub_lang"


class ConsoleError(Exception):
    """The console cannot start (a file it keeps cannot be opened)."""


class DownSender(Protocol):
    """What the console needs of the ingest worker (:class:`community.ingest.IngestWorker`)."""

    async def ack_alarm(
        self,
        hub: str,
        alarm_id: str,
        caregiver: str,
        at: _dt.datetime,
        *,
        role: str | None = None,
        note: str | None = None,
    ) -> DownMessage: ...

    async def update_thresholds(
        self, hub: str, resident_id: str, thresholds: Mapping[str, float | None]
    ) -> DownMessage: ...


class AlarmFeed:
    """Wakes the queue's server-sent event streams when an alarm record is stored or a console user acts."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def publish(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, within: float) -> None:
        """Return at the next change, or after ``within`` seconds (the queue's times and escalations move on)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), within)


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    """``escalate_after``: an unanswered critical alarm is shown escalated after this long; ``refresh_s``: how often
    an open queue is re-sent without a change (elapsed times, escalation)."""

    escalate_after: _dt.timedelta = _dt.timedelta(minutes=5)
    refresh_s: float = 15.0


@dataclass
class Console:
    """Everything a handler needs; ``app[CONSOLE]``."""

    storage: Storage
    sender: DownSender
    accounts: AccountStore
    audit: AuditLog
    store: ConsoleStore
    plans: CarePlanStore
    clock: Callable[[], _dt.datetime]
    settings: ConsoleSettings
    feed: AlarmFeed

    def lang(self, request: web.Request) -> Lang:
        return choose_lang(
            request.query.get("lang"), request.cookies.get(LANG_COOKIE), request.headers.get("Accept-Language")
        )


CONSOLE = web.AppKey("console", Console)
_ACCOUNT = web.RequestKey("carehub.account", Account)
_SESSION = web.RequestKey("carehub.session", Session)
_PUBLIC = frozenset({"/login"})


def _same_origin(request: web.Request) -> bool:
    claimed = request.headers.get("Origin") or request.headers.get("Referer")
    if not claimed:
        return False
    parts = urlsplit(claimed)
    return f"{parts.scheme}://{parts.netloc}" == f"{request.scheme}://{request.host}"


def current(request: web.Request) -> tuple[Account, Session]:
    """The logged-in account and session (set by the middleware)."""
    if _ACCOUNT not in request or _SESSION not in request:
        raise web.HTTPUnauthorized(text="log in first")
    return request[_ACCOUNT], request[_SESSION]


@web.middleware
async def _guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    console = request.config_dict[CONSOLE]
    if request.method not in ("GET", "HEAD") and not _same_origin(request):
        raise web.HTTPForbidden(text="cross-origin request refused")
    lang = console.lang(request)
    if request.path not in _PUBLIC:
        session = console.accounts.session(request.cookies.get(COOKIE, ""))
        account = None if session is None else console.accounts.account(session.username)
        if session is None or account is None:
            if request.method == "GET" and not request.path.startswith(("/events", "/fhir")):
                raise web.HTTPSeeOther("/login")
            raise web.HTTPUnauthorized(text="log in first")
        if request.method not in ("GET", "HEAD"):
            presented = request.headers.get("X-CSRF-Token") or str((await request.post()).get("csrf", ""))
            if not console.accounts.csrf_ok(session, presented):
                console.audit.record(account.username, "csrf.refused", None, request.path)
                raise web.HTTPForbidden(text="bad or missing CSRF token")
        request[_ACCOUNT], request[_SESSION] = account, session
        if request.path.startswith("/fhir"):
            await _fhir_allowed(console, account, request.path_qs)
    response = await handler(request)
    if "lang" in request.query and request.query["lang"] in (Lang.EN.value, Lang.ZH.value):
        response.set_cookie(LANG_COOKIE, lang.value, httponly=True, samesite="Strict", path="/")
    return response


async def _fhir_allowed(console: Console, account: Account, path: str) -> None:
    """The FHIR API serves every stored resident's resources, unfiltered: only to an account with full access to
    every resident named in the stored records (else 403, audited ``access.denied``); each read is audited."""
    named = {r.resident_id for r in await console.storage.readings() if r.resident_id}
    hidden = sorted(r for r in named if access(account, console.accounts.sharing(r)) is not Access.FULL)
    if hidden or account.role not in (Role.DOCTOR, Role.NURSE):
        console.audit.record(
            account.username, "access.denied", None, f"fhir {path}: {len(hidden)} residents not shared"
        )
        raise web.HTTPForbidden(text="the FHIR API needs access to every resident's data")
    console.audit.record(account.username, "fhir.read", None, path)


def html(text: str, status: int = 200) -> web.Response:
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        headers={
            "Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; script-src 'self'",
            "X-Frame-Options": "DENY",
            "Cache-Control": "no-store",
        },
    )


async def _login_form(request: web.Request, error: str = "", status: int = 200) -> web.Response:
    lang = request.config_dict[CONSOLE].lang(request)
    message = f'<p class="flag" id="error">{error}</p>' if error else ""
    body = (
        f'<div class="card"><h2>{t(lang, "login")}</h2>{message}<form method="post" action="/login">'
        f'<p><label>{t(lang, "username")} <input name="username" id="username" autocomplete="username" required>'
        f'</label></p><p><label>{t(lang, "password")} <input name="password" id="password" type="password" '
        f'autocomplete="current-password" required></label></p><button id="submit">{t(lang, "login")}</button>'
        "</form></div>"
    )
    return html(page(lang, t(lang, "login"), body, None), status)


async def _login(request: web.Request) -> web.StreamResponse:
    console = request.config_dict[CONSOLE]
    form = await request.post()
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    try:
        session = console.accounts.login(username, password)
    except AccountError:
        console.audit.record(username[:64] or "-", "login.failed")
        return await _login_form(request, t(console.lang(request), "bad_login"), 401)
    console.audit.record(username, "login")
    response = web.HTTPSeeOther("/")
    response.set_cookie(COOKIE, session.token, httponly=True, samesite="Strict", secure=request.secure, path="/")
    raise response


async def _logout(request: web.Request) -> web.StreamResponse:
    console = request.config_dict[CONSOLE]
    account, session = current(request)
    console.accounts.logout(session.token)
    console.audit.record(account.username, "logout")
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


async def render_queue(console: Console, account: Account, csrf: str, lang: Lang) -> tuple[str, list[str]]:
    """The queue's rows for ``account`` and the residents they name."""
    readings = await console.storage.readings()
    items = queue_items(
        readings,
        account,
        console.accounts.sharing,
        console.store.actions(),
        console.store.resolved(),
        now=console.clock(),
        escalate_after=console.settings.escalate_after,
    )
    return queue_rows(items, lang, csrf), sorted({i.alarm.resident_id for i in items if i.alarm.resident_id})


async def _queue_page(request: web.Request) -> web.Response:
    console = request.config_dict[CONSOLE]
    account, session = current(request)
    lang = console.lang(request)
    rows, residents = await render_queue(console, account, session.csrf, lang)
    for resident in residents:
        console.audit.record(account.username, "view.queue", resident)
    body = (
        f'<h2>{t(lang, "queue")}</h2><table id="queue"><thead><tr><th>{t(lang, "resident")}</th>'
        f"<th>{t(lang, 'condition')}</th><th>{t(lang, 'tier')}</th><th>{t(lang, 'readings')}</th>"
        f'<th>{t(lang, "since")}</th><th>{t(lang, "actions")}</th></tr></thead><tbody id="queue-body">{rows}</tbody>'
        f'</table><script src="/static/queue.js?lang={lang.value}"></script>'
    )
    return html(page(lang, t(lang, "queue"), body, account, session.csrf))


_QUEUE_JS = """
(function () {
  var body = document.getElementById("queue-body");
  var source = new EventSource("/events" + location.search);
  source.addEventListener("queue", function (event) {
    body.innerHTML = event.data;
    document.body.setAttribute("data-updates", String(Number(document.body.getAttribute("data-updates") || 0) + 1));
  });
})();
"""


async def _queue_js(_request: web.Request) -> web.Response:
    return web.Response(text=_QUEUE_JS, content_type="application/javascript", headers={"Cache-Control": "no-store"})


async def _events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the queue's rows now, and again at every change (or every ``refresh_s``)."""
    console = request.config_dict[CONSOLE]
    account, session = current(request)
    lang = console.lang(request)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
    await response.prepare(request)
    seen: set[str] = set()
    while True:
        if console.accounts.session(session.token) is None:
            break  # logged out or expired: stop streaming
        rows, residents = await render_queue(console, account, session.csrf, lang)
        for resident in set(residents) - seen:
            console.audit.record(account.username, "view.queue", resident)
        seen |= set(residents)
        data = "".join(f"data: {line}\n" for line in rows.splitlines() or [""])
        try:
            await response.write(f"event: queue\n{data}\n".encode())
        except ConnectionResetError:
            break
        await console.feed.wait(console.settings.refresh_s)
    return response


def console_app(console: Console) -> web.Application:
    """The console as an aiohttp application (the FHIR API mounted under ``/fhir``)."""
    from community.console import web_actions  # noqa: PLC0415 - the action handlers import this module

    app = web.Application(middlewares=[_guard])
    app[CONSOLE] = console
    app.router.add_get("/login", _login_form)
    app.router.add_post("/login", _login)
    app.router.add_post("/logout", _logout)
    app.router.add_get("/", _queue_page)
    app.router.add_get("/static/queue.js", _queue_js)
    app.router.add_get("/events", _events)
    web_actions.add_routes(app)
    fhir = fhir_app(console.storage)
    fhir[CONSOLE] = console
    app.add_subapp("/fhir", fhir)
    return app


@contextlib.asynccontextmanager
async def open_console(
    storage: Storage,
    sender: DownSender,
    database: Path,
    *,
    clock: Callable[[], _dt.datetime] = lambda: _dt.datetime.now(_dt.UTC),
    settings: ConsoleSettings | None = None,
) -> AsyncIterator[Console]:
    """The console's parts beside the platform database ``database`` (accounts, audit log, care plans, its own).

    Raises:
        ConsoleError: one of its files cannot be opened.
    """
    try:
        accounts = AccountStore(accounts_path(database), clock)
        audit_store = SqliteAuditStore(audit_path(database))
        store = ConsoleStore(console_web_path(database))
    except (AccountError, AuditError, ConsoleStoreError) as exc:
        raise ConsoleError(str(exc)) from None
    try:
        async with CarePlanStore(console_database(database)) as plans:
            yield Console(
                storage,
                sender,
                accounts,
                AuditLog(audit_store, clock),
                store,
                plans,
                clock,
                settings or ConsoleSettings(),
                AlarmFeed(),
            )
    finally:
        store.close()
        audit_store.close()
        accounts.close()


@contextlib.asynccontextmanager
async def serve_console(console: Console, host: str, port: int) -> AsyncIterator[int]:
    """Serve ``console`` on ``host:port`` while the block runs; yields the port listened on (0: any free port)."""
    runner = web.AppRunner(console_app(console), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound = runner.addresses
        yield int(bound[0][1]) if bound else port
    finally:
        await runner.cleanup()
