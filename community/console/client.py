"""A small client of the console's HTTP API (issue 18 item 1): how a program (the demo's simulated family doctor)
logs in and acknowledges alarms through the same web application, rules and audit log as a person does."""

from __future__ import annotations

import dataclasses
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import aiohttp

__all__ = ["ConsoleAlarm", "ConsoleClient", "ConsoleClientError"]


class ConsoleClientError(Exception):
    """The console refused a request (``status``: its HTTP status) or could not be reached (``status`` None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True, slots=True)
class ConsoleAlarm:
    """One open alarm of ``GET /api/alarms``."""

    hub: str
    alarm_id: str
    resident: str | None
    condition: str
    tier: str
    state: str
    raised_at: str
    acknowledged: bool
    escalated: bool


class ConsoleClient:
    """``async with ConsoleClient("http://127.0.0.1:8080") as c: await c.login(user, password); await c.ack(...)``."""

    def __init__(self, base_url: str) -> None:
        self._base = base_url.rstrip("/")
        self._http: aiohttp.ClientSession | None = None
        self._csrf = ""
        self._login: tuple[str, str] | None = None

    async def __aenter__(self) -> Self:
        self._http = aiohttp.ClientSession(
            headers={"Origin": self._base},
            cookie_jar=aiohttp.CookieJar(unsafe=True),  # the console may be served on an IP address
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._http is not None:
            await self._http.close()

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise ConsoleClientError("use the client in `async with`")
        return self._http

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            async with self._session().request(method, self._base + path, **kw) as response:
                if response.status >= 400:
                    text = (await response.text())[:200]
                    raise ConsoleClientError(f"{method} {path}: HTTP {response.status} {text}", response.status)
                if response.content_type == "application/json":
                    return await response.json()
                return await response.text()
        except aiohttp.ClientError as exc:
            raise ConsoleClientError(f"{method} {path}: {exc}") from None

    async def login(self, username: str, password: str) -> None:
        """Log in (a wrong password is a ConsoleClientError) and keep the session's CSRF token."""
        await self._call("POST", "/login", data={"username": username, "password": password})
        session = await self._call("GET", "/api/session")
        if not isinstance(session, dict) or session.get("username") != username:
            raise ConsoleClientError(f"not logged in as {username}")
        self._csrf = str(session["csrf"])
        self._login = (username, password)

    async def alarms(self) -> list[ConsoleAlarm]:
        """The open alarms this account may see, most urgent first."""
        rows = await self._call("GET", "/api/alarms")
        return [ConsoleAlarm(**row) for row in rows]

    async def act(self, hub: str, alarm_id: str, action: str, text: str = "") -> None:
        """``ack``, ``note`` (with ``text``) or ``resolve`` an alarm."""
        data = {"text": text} if text else {}
        path = f"/api/alarms/{quote(hub, safe='')}/{quote(alarm_id, safe='')}/{action}"
        try:
            await self._call("POST", path, data=data, headers={"X-CSRF-Token": self._csrf})
        except ConsoleClientError as exc:
            if exc.status != 401 or self._login is None:
                raise
            await self.login(*self._login)  # the session expired (8 hours): log in again, once
            await self._call("POST", path, data=data, headers={"X-CSRF-Token": self._csrf})

    async def ack(self, hub: str, alarm_id: str) -> None:
        """Acknowledge an alarm: the console sends the signed acknowledgement down to the hub."""
        await self.act(hub, alarm_id, "ack")
