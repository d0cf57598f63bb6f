"""The installer's web page: the provisioning workflow on a phone, served by the hub on the local network.

One HTML page (inline CSS and script, no external assets, no build step) talks JSON to a few routes; scanning and
the installation test stream their progress as server-sent events. Every ``/api`` route but ``/api/login`` needs the
session cookie that a correct one-time PIN (``carehub provision pin``) opens; PINs are rate-limited
(:class:`gateway.provision.pin.PinGate`). The cookie is HttpOnly and SameSite=Strict, and a strict Content Security
Policy with a per-response nonce admits only the page's own script and style.

Routes::

    GET  /                   the page
    POST /api/login          {"pin"} -> session cookie | 401 wrong | 429 locked out (Retry-After)
    GET  /api/state          hub, steps done, residents and thresholds, devices, profiles, kinds
    POST /api/init           {"bundle": <bundle JSON text>, "platform_key_id"?}
    POST /api/enroll         {"replace"?}  (needs the server's --platform-config)
    POST /api/resident       {"id", "name"?, "language"?}
    GET  /api/scan           SSE: "devices" (rows) ... "done"
    POST /api/pair           {"address", "resident", "kind"?, "user_id"?, "consent_code"?, "name"?, "pendant_key"?,
                              "passkey"?}
    GET  /api/passkey        {"waiting": the address of a meter asking for its PIN right now, or null}
    POST /api/passkey        {"passkey": 6 digits} -> handed to the pairing in progress | 400 none asks, not 6 digits
    POST /api/thresholds     {"resident", "profiles"?, "set": ["key=value", ...]}
    GET  /api/test?installer=NAME   SSE: "prompt" / "arrived" / "result" ... "report" | "failed"
    GET  /api/report         the latest installation report (Markdown text)

Every failure answers ``{"error": what happened, "fix": what to do}`` and changes nothing.

A meter that shows a 6-digit PIN asks for it while it bonds (issue 14 item 3): the radio's pairing asks the app's
:class:`~gateway.ble_passkey.PasskeyDesk`, which hands the request to the page (``GET /api/passkey`` names the meter
asking; the page polls it while a pairing runs and shows a PIN field) unless the pair request carried the PIN; the
installer's ``POST /api/passkey`` answers it. A wrong PIN fails the pairing with one message and nothing saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner

from gateway.ble_passkey import (
    FixedPasskey,
    PasskeyDesk,
    PasskeyFormatError,
    PasskeySource,
    WaitingPasskey,
    parse_passkey,
)
from gateway.config import ConfigError, DeviceKind, load_config
from gateway.provision.consent import consent_to_check
from gateway.provision.document import load_document
from gateway.provision.errors import LockedOutError, NotInitialisedError, ProvisionError, WrongPinError
from gateway.provision.files import HubPaths, load_state, mark_step
from gateway.provision.pin import PinGate
from gateway.provision.radio import INSTRUCTIONS, open_radio, pair_device, scan_devices
from gateway.provision.steps import (
    ReferencePlatformEnroller,
    add_device,
    apply_thresholds,
    check_assignment,
    check_user_id,
    effective_thresholds,
    enroll_hub,
    init_hub,
    parse_edit,
    pendant_key_to_check,
    provision_pendant_key,
    set_resident,
)
from gateway.provision.testrun import run_installation_test, write_report
from gateway.thresholds import DEFAULTS, PROFILES

__all__ = ["WebSettings", "make_app", "serve"]

_COOKIE: Final = "carehub_installer"
_MAX_BODY: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class WebSettings:
    """What the page works on.

    Attributes:
        paths: the hub's files.
        link: simulated radio link, or None for the platform's Bluetooth.
        platform_config: the reference platform's config, to enroll from the page (None: show the operator step).
        scan_seconds: how long a scan listens.
        test_timeout: seconds per device in the installation test.
    """

    paths: HubPaths
    link: str | None = None
    platform_config: Path | None = None
    scan_seconds: float = 10.0
    test_timeout: float = 120.0


_SETTINGS: Final = web.AppKey("settings", WebSettings)
_GATE: Final = web.AppKey("gate", PinGate)
_SESSIONS: Final = web.AppKey("sessions", dict[str, str])  # session cookie -> its CSRF token
_RADIO: Final = web.AppKey("radio", tuple)
_BUSY: Final = web.AppKey("busy", asyncio.Lock)
_DESK: Final = web.AppKey("desk", PasskeyDesk)
_ASKING: Final = web.AppKey("asking", WaitingPasskey)
_PIN_PATIENCE: Final = 60.0  # seconds the page has to type a meter's PIN once it asks


def _problem(status: int, what: str, fix: str, **extra: Any) -> web.Response:
    return web.json_response({"error": what, "fix": fix, **extra}, status=status)


def _from_error(exc: ProvisionError) -> web.Response:
    status = 409 if isinstance(exc, NotInitialisedError) else 400
    return _problem(status, exc.what, exc.fix)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _session(request: web.Request) -> str | None:
    """The CSRF token of the request's session cookie, or None when it carries no live session."""
    token = request.cookies.get(_COOKIE, "")
    for session, csrf in request.app[_SESSIONS].items():
        if secrets.compare_digest(token, session):
            return csrf
    return None


def _forged(request: web.Request, csrf: str | None) -> web.Response | None:
    """Why ``request`` may not have come from this page (cross-site request forgery), or None.

    The session cookie alone proves nothing: another port of the same host is the same *site*, so SameSite=Strict
    still sends it, and a ``text/plain`` form post needs no preflight. So a write must be JSON, come from this
    page's own origin when the browser says where it came from, and every API call must carry the session's token
    (a header from ``fetch``, a query parameter for ``EventSource``, which cannot set headers).
    """
    if request.method not in ("GET", "HEAD"):
        if request.content_type != "application/json":
            return _problem(415, "the request is not JSON", "use the installer page")
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            return _problem(403, f"a request from {origin} was refused", "use the installer page on the hub itself")
    if csrf is not None:
        sent = request.headers.get("X-CSRF-Token") or request.query.get("csrf", "")
        if not secrets.compare_digest(sent, csrf):
            return _problem(403, "the request has no valid page token", "reload the installer page and log in")
    return None


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/api/"):
        csrf = None
        if request.path != "/api/login":
            csrf = _session(request)
            if csrf is None:
                return _problem(401, "not logged in", "type the installer PIN shown by `carehub provision pin`")
        refused = _forged(request, csrf)
        if refused is not None:
            return refused
    try:
        response = await handler(request)
    except ProvisionError as exc:
        return _from_error(exc)
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise ProvisionError("the request is not JSON", "reload the page and try again") from None
    if not isinstance(data, dict):
        raise ProvisionError("the request is not a JSON object", "reload the page and try again")
    return data


def _text(data: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise ProvisionError(f"{name} is missing", f"fill in {name}")
        return None
    if not isinstance(value, str):
        raise ProvisionError(f"{name} must be text", f"fill in {name}")
    return value.strip()


async def _page(_request: web.Request) -> web.Response:
    nonce = secrets.token_urlsafe(16)
    response = web.Response(text=_HTML.replace("{nonce}", nonce), content_type="text/html", charset="utf-8")
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
        "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    return response


async def _login(request: web.Request) -> web.Response:
    data = await _json(request)
    pin = data.get("pin")
    if not isinstance(pin, str):
        return _problem(400, "no PIN given", "type the PIN shown by `carehub provision pin`")
    try:
        request.app[_GATE].check(pin, request.remote or "unknown")
    except LockedOutError as exc:
        response = _problem(429, exc.what, exc.fix, retry_after=round(exc.retry_after_s))
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
        return response
    except (WrongPinError, NotInitialisedError) as exc:
        return _problem(401, exc.what, exc.fix)
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    request.app[_SESSIONS][token] = csrf
    response = web.json_response({"ok": True, "csrf": csrf})
    response.set_cookie(_COOKIE, token, httponly=True, samesite="Strict", path="/")
    return response


def _state(settings: WebSettings) -> dict[str, Any]:
    paths = settings.paths
    state = load_state(paths)
    out: dict[str, Any] = {
        "steps": sorted(state.steps),
        "profiles": list(PROFILES),
        "kinds": [k.value for k in DeviceKind],
        "instructions": {k.value: v for k, v in INSTRUCTIONS.items()},
        "can_enroll": settings.platform_config is not None,
        "initialised": paths.config.exists(),
    }
    if not paths.config.exists():
        return out
    try:
        config = load_config(paths.config)
    except ConfigError as exc:
        out["config_error"] = str(exc)
        return out
    out["hub_id"] = config.hub_id
    out["residents"] = []
    for r in config.residents:
        values = effective_thresholds(config, r.id).values
        changed = {k.value: v for k, v in values.items() if DEFAULTS[k] != v}
        out["residents"].append(
            {"id": r.id, "name": r.name, "language": r.language, "profiles": list(r.profiles), "changed": changed}
        )
    out["devices"] = [
        {"address": d.address, "kind": d.kind.value, "resident": d.resident, "name": d.name, "user_id": d.user_id}
        for d in config.devices
    ]
    return out


async def _get_state(request: web.Request) -> web.Response:
    return web.json_response(_state(request.app[_SETTINGS]))


async def _init(request: web.Request) -> web.Response:
    from community.enrollment import BundleError, read_bundle  # noqa: PLC0415 - bundle format lives with the platform

    data = await _json(request)
    text = _text(data, "bundle") or ""
    try:
        bundle = read_bundle(text.encode(), expect_key_id=_text(data, "platform_key_id", required=False))
    except BundleError as exc:
        raise ProvisionError(f"the bundle cannot be used: {exc}", "ask the platform operator for a new one") from exc
    settings = request.app[_SETTINGS]
    result = init_hub(
        settings.paths,
        hub_id=bundle.hub_id,
        platform=bundle.platform,
        broker_url=bundle.broker_urls,
        username=bundle.username,
        password=bundle.password,
        link=settings.link,
        broker_ca=bundle.broker_ca,
    )
    return web.json_response(
        {"hub_id": result.config.hub_id, "hub_key_id": result.hub_key_id, "platform_key_id": result.platform_key_id}
    )


async def _enroll(request: web.Request) -> web.Response:
    settings = request.app[_SETTINGS]
    data = await _json(request)
    if settings.platform_config is None:
        raise ProvisionError(
            "this page cannot reach the platform's enrollment",
            f"give the operator {settings.paths.hub_pub} (carehub platform enroll --key-file hub.pub)",
        )
    receipt = await enroll_hub(
        settings.paths, ReferencePlatformEnroller(settings.platform_config), replace=bool(data.get("replace"))
    )
    return web.json_response({"receipt": receipt})


async def _resident(request: web.Request) -> web.Response:
    data = await _json(request)
    config = set_resident(
        request.app[_SETTINGS].paths,
        _text(data, "id") or "",
        name=_text(data, "name", required=False),
        language=_text(data, "language", required=False),
    )
    return web.json_response({"residents": [r.id for r in config.residents]})


def _busy() -> ProvisionError:
    return ProvisionError("the radio is busy with another scan, pairing or test", "wait for it to finish")


async def _sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
    await response.prepare(request)
    return response


async def _send(response: web.StreamResponse, event: str, data: object) -> None:
    await response.write(f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode())


async def _scan(request: web.Request) -> web.StreamResponse:
    settings = request.app[_SETTINGS]
    lock = request.app[_BUSY]
    if lock.locked():
        raise _busy()
    paired = [d["address"] for d in _state(settings).get("devices", [])]
    scanner, _ = request.app[_RADIO]
    async with lock:
        response = await _sse(request)
        async for rows in scan_devices(settings.scan_seconds, paired=paired, scanner_backend=scanner):
            await _send(
                response,
                "devices",
                [
                    {
                        "address": f.address,
                        "name": f.name,
                        "kind": f.kind.value if f.kind else None,
                        "rssi": f.rssi,
                        "paired": f.paired,
                    }
                    for f in rows
                ],
            )
        await _send(response, "done", {})
    return response


async def _pair(request: web.Request) -> web.Response:
    settings = request.app[_SETTINGS]
    data = await _json(request)
    load_document(settings.paths)
    address = _text(data, "address") or ""
    resident = _text(data, "resident") or ""
    kind_name = _text(data, "kind", required=False)
    try:
        kind = DeviceKind(kind_name) if kind_name else None
    except ValueError:
        raise ProvisionError(f"unknown kind {kind_name!r}", "pick the kind from the list") from None
    user = data.get("user_id")
    if user in ("", None):
        user = None
    elif isinstance(user, str) and user.isdigit():
        user = int(user)
    if user is not None and not isinstance(user, int):
        raise ProvisionError(
            "the meter user must be a number", "type the meter's User ID for this person (0 to 254) or leave it empty"
        )
    consent_code = data.get("consent_code")  # a multi-user scale's UDS consent code (issue 14 item 6)
    if consent_code in ("", None):
        consent_code = None
    elif isinstance(consent_code, str) and consent_code.isdigit():
        consent_code = int(consent_code)
    if consent_code is not None and (isinstance(consent_code, bool) or not isinstance(consent_code, int)):
        raise ProvisionError(
            "the consent code must be a number",
            "type the code registered on the scale for this person (0 to 9999) or leave it empty",
        )
    key_text = _text(data, "pendant_key", required=False)
    key: bytes | None = None
    if key_text:
        try:
            key = bytes.fromhex(key_text)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise ProvisionError("the pendant key is not 64 hex digits", "copy the key loaded into the pendant")
    move = data.get("move") is True
    passkey_text = _text(data, "passkey", required=False)
    passkeys: PasskeySource = request.app[_ASKING]  # the page types the PIN when the meter asks
    if passkey_text:
        passkeys = FixedPasskey(_passkey(passkey_text))
    address = check_assignment(settings.paths, address, resident, move=move)  # before the radio: fail fast
    check_user_id(user)
    consent = consent_to_check(user, consent_code)
    lock = request.app[_BUSY]
    if lock.locked():
        raise _busy()
    scanner, client = request.app[_RADIO]
    key = pendant_key_to_check(settings.paths, address, key)  # typed, else the one kept for this pendant
    async with lock:  # a pendant proves the key before anything is saved (docs/protocol.md §9.7)
        result = await pair_device(
            address,
            expect=kind,
            scanner_backend=scanner,
            client_backend=client,
            pendant_key=key,
            desk=request.app[_DESK],
            passkeys=passkeys,
            consent=consent,
        )
    key_file = None
    note = ""
    if result.kind is DeviceKind.PENDANT:
        key_file, _, _ = provision_pendant_key(settings.paths, result.address, key)
        note = "The pendant proved it holds this key."
    config = add_device(
        settings.paths,
        address=result.address,
        kind=result.kind,
        resident=resident,
        name=_text(data, "name", required=False) or result.name,
        user_id=user,
        move=move,
        pendant_key_file=key_file,
        consent_code=consent_code,
    )
    return web.json_response(
        {
            "address": result.address,
            "kind": result.kind.value,
            "battery": result.battery,
            "note": note,
            "devices": len(config.devices),
        }
    )


def _passkey(text: str) -> int:
    try:
        return parse_passkey(text)
    except PasskeyFormatError as exc:
        raise ProvisionError(str(exc), "type the 6 digits the meter shows on its display") from exc


async def _get_passkey(request: web.Request) -> web.Response:
    return web.json_response({"waiting": request.app[_ASKING].waiting})


async def _post_passkey(request: web.Request) -> web.Response:
    data = await _json(request)
    passkey = _passkey(_text(data, "passkey") or "")
    if not request.app[_ASKING].answer(passkey):
        raise ProvisionError("no meter is asking for a PIN now", "press Pair, then type the PIN when the page asks")
    return web.json_response({"accepted": True})


async def _thresholds(request: web.Request) -> web.Response:
    data = await _json(request)
    resident = _text(data, "resident") or ""
    profiles = data.get("profiles")
    if profiles is not None and not (isinstance(profiles, list) and all(isinstance(p, str) for p in profiles)):
        raise ProvisionError("profiles must be a list of names", "tick the doctor's profiles")
    edits_raw = data.get("set", [])
    if not isinstance(edits_raw, list) or not all(isinstance(e, str) for e in edits_raw):
        raise ProvisionError("edits must be lines of KEY=VALUE", "write one KEY=VALUE per line")
    edits = [parse_edit(e) for e in edits_raw if e.strip()]
    resolved = apply_thresholds(request.app[_SETTINGS].paths, resident, profiles=profiles, edits=edits)
    changed = {k.value: v for k, v in resolved.values.items() if DEFAULTS[k] != v}
    return web.json_response({"resident": resident, "profiles": list(resolved.profiles), "changed": changed})


async def _test(request: web.Request) -> web.StreamResponse:
    settings = request.app[_SETTINGS]
    installer = request.query.get("installer", "").strip()
    if not installer:
        raise ProvisionError("no installer name", "type your name for the sign-off")
    try:
        config = load_config(settings.paths.config)
    except ConfigError as exc:
        raise ProvisionError(str(exc), "fix the config (carehub doctor) and run the test again") from exc
    lock = request.app[_BUSY]
    if lock.locked():
        raise _busy()
    scanner, client = request.app[_RADIO]
    async with lock:
        response = await _sse(request)
        queue: asyncio.Queue[tuple[str, Mapping[str, Any]]] = asyncio.Queue()

        async def forward() -> None:
            while True:
                kind, details = await queue.get()
                await _send(response, kind, details)

        async with asyncio.TaskGroup() as tasks:
            forwarder = tasks.create_task(forward(), name="web.test.forward")
            try:
                report = await run_installation_test(
                    config,
                    installer=installer,
                    per_device_timeout=settings.test_timeout,
                    scanner_backend=scanner,
                    client_backend=client,
                    progress=lambda kind, details: queue.put_nowait((kind, dict(details))),
                )
                json_path, _ = write_report(settings.paths, report)
                mark_step(settings.paths, "test", {"passed": report.passed, "report": str(json_path)})
            except ProvisionError as exc:
                while not queue.empty():
                    await _send(response, *queue.get_nowait())
                forwarder.cancel()
                await _send(response, "failed", {"error": exc.what, "fix": exc.fix})
                return response
            while not queue.empty():
                await _send(response, *queue.get_nowait())
            forwarder.cancel()
        await _send(
            response,
            "report",
            {"passed": report.passed, "text": report.to_text(), "devices": [asdict(d) for d in report.devices]},
        )
    return response


async def _report(request: web.Request) -> web.Response:
    path = request.app[_SETTINGS].paths.reports / "latest.md"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return _problem(404, "no installation report yet", "run the installation test")
    return web.Response(text=text, content_type="text/markdown", charset="utf-8")


def make_app(
    settings: WebSettings,
    *,
    gate: PinGate | None = None,
    radio: tuple[type[BaseBleakScanner] | None, type[BaseBleakClient] | None] | None = None,
    desk: PasskeyDesk | None = None,
) -> web.Application:
    """The web application.

    Args:
        settings: what to work on.
        gate: the PIN gate (default: one over the hub's PIN file with the standard limits).
        radio: bleak backends to use; None opens them from ``settings.link`` for the app's lifetime, pairing through
            the app's passkey desk.
        desk: the passkey desk pairing asks (default: a new one); with ``radio`` given, its backend must already
            ask this desk (`gateway.provision.radio.open_radio`'s ``desk``).
    """
    app = web.Application(middlewares=[_guard], client_max_size=_MAX_BODY)
    app[_SETTINGS] = settings
    app[_GATE] = gate or PinGate(settings.paths)
    app[_SESSIONS] = {}
    app[_BUSY] = asyncio.Lock()
    app[_DESK] = desk or PasskeyDesk()
    app[_ASKING] = WaitingPasskey(_PIN_PATIENCE)

    async def radio_context(application: web.Application) -> AsyncIterator[None]:
        if radio is not None:
            application[_RADIO] = radio
            yield
            return
        async with open_radio(settings.link, keystore=settings.paths.bonds, desk=application[_DESK]) as backends:
            application[_RADIO] = backends
            yield

    app.cleanup_ctx.append(radio_context)
    app.router.add_get("/", _page)
    app.router.add_post("/api/login", _login)
    app.router.add_get("/api/state", _get_state)
    app.router.add_post("/api/init", _init)
    app.router.add_post("/api/enroll", _enroll)
    app.router.add_post("/api/resident", _resident)
    app.router.add_get("/api/scan", _scan)
    app.router.add_post("/api/pair", _pair)
    app.router.add_get("/api/passkey", _get_passkey)
    app.router.add_post("/api/passkey", _post_passkey)
    app.router.add_post("/api/thresholds", _thresholds)
    app.router.add_get("/api/test", _test)
    app.router.add_get("/api/report", _report)
    return app


async def serve(settings: WebSettings, *, host: str, port: int, ready: asyncio.Event | None = None) -> None:
    """Serve the page until cancelled."""
    runner = web.AppRunner(make_app(settings), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()
    finally:
        with contextlib.suppress(RuntimeError):
            await runner.cleanup()


_HTML: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>carehub installer</title>
<style nonce="{nonce}">
body{font:16px/1.4 system-ui,sans-serif;margin:0;background:#f4f6f8;color:#1b2430}
header{background:#1f5f8b;color:#fff;padding:.8rem 1rem}h1{font-size:1.2rem;margin:0}
main{max-width:46rem;margin:auto;padding:.5rem}section{background:#fff;border-radius:.5rem;margin:.6rem 0;padding:.8rem}
h2{font-size:1.05rem;margin:.1rem 0 .6rem}label{display:block;margin:.4rem 0 .1rem;font-size:.9rem}
input,select,textarea,button{font:inherit;box-sizing:border-box;width:100%;padding:.55rem;border:1px solid #b8c2cc;
border-radius:.35rem}button{background:#1f5f8b;color:#fff;border:0;margin-top:.6rem}button:disabled{opacity:.5}
table{width:100%;border-collapse:collapse;font-size:.9rem}td,th{padding:.35rem;border-bottom:1px solid #e3e7eb;
text-align:left}.err{color:#a4161a;white-space:pre-wrap}.ok{color:#2b7a0b}.hidden{display:none}
pre{white-space:pre-wrap;font-size:.85rem;background:#f4f6f8;padding:.5rem}.row{display:flex;gap:.4rem}
.row>*{flex:1}#log li{margin:.2rem 0}
</style></head><body>
<header><h1>carehub installer <span id="hub"></span></h1></header>
<main>
<section id="login"><h2>Log in</h2>
<label for="pin">Installer PIN (run <code>carehub provision pin</code> on the hub)</label>
<input id="pin" inputmode="numeric" autocomplete="one-time-code" maxlength="7">
<button id="login-btn">Log in</button><p id="login-msg" class="err"></p></section>
<div id="app" class="hidden">
<section id="init-sec"><h2>1. Set up the hub</h2>
<label for="bundle">Enrollment bundle from the platform (paste its text)</label>
<textarea id="bundle" rows="4"></textarea>
<label for="pkid">Platform key id (from the operator, optional)</label><input id="pkid">
<button id="init-btn">Set up</button><p id="init-msg"></p></section>
<section id="enroll-sec"><h2>2. Enroll with the platform</h2>
<button id="enroll-btn">Enroll</button><p id="enroll-msg"></p></section>
<section id="residents-sec"><h2>3. Residents</h2><div id="residents"></div>
<div class="row"><div><label for="rid">Id</label><input id="rid" placeholder="r1"></div>
<div><label for="rname">Name</label><input id="rname"></div>
<div><label for="rlang">Voice</label><select id="rlang"><option>en</option><option>zh</option></select></div></div>
<button id="resident-btn">Save resident</button><p id="resident-msg"></p></section>
<section id="pair-sec"><h2>4. Pair the kit</h2><p id="paired"></p><button id="scan-btn">Scan for devices</button>
<table><thead><tr><th>Device</th><th>Kind</th><th>Signal</th><th></th></tr></thead><tbody id="found"></tbody></table>
<div id="pair-form" class="hidden"><p id="pair-what"></p><p id="pair-how"></p>
<label for="pres">Resident</label><select id="pres"></select>
<label for="puser">Meter user (multi-user meters: its User ID, 0 to 254)</label><input id="puser" inputmode="numeric">
<label for="pconsent">Consent code (multi-user scales: the code registered for this user, 0 to 9999)</label>
<input id="pconsent" inputmode="numeric" autocomplete="off">
<label for="pkey">Key loaded into the pendant (64 hex digits; empty: the one the hub keeps)</label><input id="pkey">
<button id="pair-btn">Pair</button></div>
<div id="mpin-form" class="hidden"><p id="mpin-what"></p><label for="mpin">PIN on the meter's display</label>
<input id="mpin" inputmode="numeric" autocomplete="off" maxlength="7"><button id="mpin-btn">Send PIN</button>
<p id="mpin-msg"></p></div><p id="pair-msg"></p></section>
<section id="thr-sec"><h2>5. Doctor's thresholds</h2><label for="tres">Resident</label><select id="tres"></select>
<div id="profiles"></div><label for="tset">Changes, one per line (bp.systolic.critical_high=175)</label>
<textarea id="tset" rows="3"></textarea><button id="thr-btn">Apply</button><p id="thr-msg"></p></section>
<section id="test-sec"><h2>6. Test and sign off</h2><label for="installer">Your name</label><input id="installer">
<button id="test-btn">Run the installation test</button><ul id="log"></ul><pre id="report"></pre></section>
</div></main>
<script nonce="{nonce}">
"use strict";
const $ = (id) => document.getElementById(id);
let state = null, chosen = null, csrf = "", pairing = false, asking = null;
function say(id, text, good) { const el = $(id); el.textContent = text; el.className = good ? "ok" : "err"; }
function problem(body) { return body.error + (body.fix ? ". Fix: " + body.fix : ""); }
async function api(path, body) {
  const r = await fetch(path, {method: body === undefined ? "GET" : "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
    body: body === undefined ? undefined : JSON.stringify(body)});
  const data = await r.json().catch(() => ({error: "unexpected answer " + r.status}));
  if (!r.ok) throw new Error(problem(data));
  return data;
}
function option(sel, value, text) { const o = document.createElement("option"); o.value = value;
  o.textContent = text; sel.appendChild(o); }
async function refresh() {
  state = await api("/api/state");
  $("hub").textContent = state.hub_id ? "- " + state.hub_id : "";
  const res = state.residents || [];
  const steps = state.steps || [];
  const done = {"init-sec": state.initialised, "enroll-sec": steps.includes("enroll"),
    "residents-sec": res.length > 0, "pair-sec": (state.devices || []).length > 0,
    "thr-sec": steps.some(s => s.startsWith("thresholds:")), "test-sec": steps.includes("test")};
  for (const [id, ok] of Object.entries(done)) { const h = $(id).querySelector("h2");
    h.textContent = h.textContent.replace(/ \\(done\\)$/, "") + (ok ? " (done)" : ""); }
  $("residents").textContent = res.map(r => r.id + ": " + r.name + " (" + r.language + ")").join(", ") || "none yet";
  for (const sel of [$("pres"), $("tres")]) { const keep = sel.value; sel.textContent = "";
    res.forEach(r => option(sel, r.id, r.name)); if (res.some(r => r.id === keep)) sel.value = keep; }
  const paired = (state.devices || []).map(d => d.kind + " " + d.address).join(", ");
  $("paired").textContent = "Paired: " + (paired || "none");
  const box = $("profiles"); box.textContent = "";
  state.profiles.forEach(p => { const l = document.createElement("label"); const c = document.createElement("input");
    c.type = "checkbox"; c.value = p; c.className = "profile"; c.style.width = "auto"; l.appendChild(c);
    l.append(" " + p); box.appendChild(l); });
  tickProfiles();
}
// The doctor's profiles of the chosen resident start ticked: applying one override must keep them.
function tickProfiles() {
  const r = (state.residents || []).find(x => x.id === $("tres").value);
  const have = r ? r.profiles : [];
  document.querySelectorAll(".profile").forEach(c => { c.checked = have.includes(c.value); });
}
$("tres").onchange = tickProfiles;
$("login-btn").onclick = async () => {
  try { csrf = (await api("/api/login", {pin: $("pin").value.replace(/\\s/g, "")})).csrf;
    $("login").classList.add("hidden"); $("app").classList.remove("hidden"); await refresh();
  } catch (e) { say("login-msg", e.message); }
};
$("init-btn").onclick = async () => { try { const r = await api("/api/init", {bundle: $("bundle").value,
  platform_key_id: $("pkid").value}); say("init-msg", "hub " + r.hub_id + ", key id " + r.hub_key_id, true);
  await refresh(); } catch (e) { say("init-msg", e.message); } };
$("enroll-btn").onclick = async () => { try { const r = await api("/api/enroll", {});
  say("enroll-msg", r.receipt, true); await refresh(); } catch (e) { say("enroll-msg", e.message); } };
$("resident-btn").onclick = async () => { try { await api("/api/resident", {id: $("rid").value,
  name: $("rname").value, language: $("rlang").value}); say("resident-msg", "saved", true); await refresh();
  } catch (e) { say("resident-msg", e.message); } };
function choose(row) {
  chosen = row; $("pair-form").classList.remove("hidden");
  $("pair-what").textContent = "Pair " + (row.name || "") + " " + row.address + " (" + row.kind + ")";
  $("pair-how").textContent = state.instructions[row.kind] || "";
}
$("scan-btn").onclick = () => {
  $("scan-btn").disabled = true; say("pair-msg", "listening...", true);
  const es = new EventSource("/api/scan?csrf=" + encodeURIComponent(csrf));
  es.addEventListener("devices", (ev) => { const body = $("found"); body.textContent = "";
    JSON.parse(ev.data).forEach(row => { const tr = document.createElement("tr");
      [(row.name || "?") + " " + row.address, row.kind || "-", row.rssi + " dBm"].forEach(t => {
        const td = document.createElement("td"); td.textContent = t; tr.appendChild(td); });
      const td = document.createElement("td"); const b = document.createElement("button");
      b.textContent = row.paired ? "Paired" : "Pair"; b.disabled = row.paired; b.dataset.address = row.address;
      b.className = "choose"; b.onclick = () => choose(row); td.appendChild(b); tr.appendChild(td);
      body.appendChild(tr); }); });
  es.addEventListener("done", () => { es.close(); $("scan-btn").disabled = false;
    say("pair-msg", "scan done", true); });
  es.onerror = () => { es.close(); $("scan-btn").disabled = false; };
};
// While a pairing runs, ask the hub whether the meter wants its PIN; show the PIN field while it does.
function showPin(address) {
  asking = address; $("mpin-form").classList.toggle("hidden", !address);
  if (address) { $("mpin-what").textContent = address + " shows a 6-digit PIN: type it here.";
    $("mpin").value = ""; $("mpin-msg").textContent = ""; $("mpin").focus(); }
}
async function watchPin() {
  while (pairing) {
    try { const r = await api("/api/passkey"); if (pairing && r.waiting !== asking) showPin(r.waiting); }
    catch (e) { say("pair-msg", e.message); }
    await new Promise(done => setTimeout(done, 300));
  }
  showPin(null);
}
$("mpin-btn").onclick = async () => {
  try { await api("/api/passkey", {passkey: $("mpin").value.replace(/\\s/g, "")}); showPin(null);
    say("pair-msg", "PIN sent; pairing...", true);
  } catch (e) { say("mpin-msg", e.message); }
};
$("pair-btn").onclick = async () => {
  $("pair-btn").disabled = true; say("pair-msg", "pairing...", true);
  pairing = true; watchPin();
  try { const r = await api("/api/pair", {address: chosen.address, kind: chosen.kind, resident: $("pres").value,
      user_id: $("puser").value, consent_code: $("pconsent").value, pendant_key: $("pkey").value});
    say("pair-msg", "Paired " + r.address + " (" + r.kind + ")" + (r.note ? ". " + r.note : ""), true);
    $("pair-form").classList.add("hidden"); await refresh();
  } catch (e) { say("pair-msg", e.message); }
  pairing = false; showPin(null);
  $("pair-btn").disabled = false;
};
$("thr-btn").onclick = async () => {
  const profiles = [...document.querySelectorAll(".profile")].filter(c => c.checked).map(c => c.value);
  try { const r = await api("/api/thresholds", {resident: $("tres").value, profiles,
      set: $("tset").value.split("\\n")});
    say("thr-msg", "saved; differs from defaults: " + JSON.stringify(r.changed), true); await refresh();
  } catch (e) { say("thr-msg", e.message); }
};
$("test-btn").onclick = () => {
  $("test-btn").disabled = true; $("log").textContent = ""; $("report").textContent = "";
  const line = (t, cls) => { const li = document.createElement("li"); li.textContent = t;
    if (cls) li.className = cls; $("log").appendChild(li); };
  const es = new EventSource("/api/test?installer=" + encodeURIComponent($("installer").value) +
    "&csrf=" + encodeURIComponent(csrf));
  es.addEventListener("prompt", ev => { const d = JSON.parse(ev.data);
    line(d.address + " (" + d.kind + "): " + d.text); });
  es.addEventListener("arrived", ev => { const d = JSON.parse(ev.data);
    line("received after " + d.seconds + " s; waiting for the platform"); });
  es.addEventListener("result", ev => { const d = JSON.parse(ev.data);
    line((d.ok ? "ok: " : "FAILED: ") + d.address + " " + d.detail, d.ok ? "ok" : "err"); });
  es.addEventListener("report", ev => { const d = JSON.parse(ev.data); es.close();
    $("report").textContent = d.text; $("test-btn").disabled = false; });
  es.addEventListener("failed", ev => { const d = JSON.parse(ev.data); es.close();
    line(problem(d), "err"); $("test-btn").disabled = false; });
  es.onerror = () => { es.close(); $("test-btn").disabled = false; };
};
</script></body></html>
"""
