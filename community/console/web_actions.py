"""The console's alarm actions, residents panel, trends and threshold changes (issue 18 items 1-5).

Access is checked against the resident's sharing setting on every request; a refusal is a 403 page and an audit
entry ``access.denied``. Views and changes are audited (``view.residents``, ``view.resident``, ``alarm.ack``,
``alarm.note``, ``alarm.resolve``, ``thresholds.change``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Final
from urllib.parse import quote

import aiomqtt
from aiohttp import web

from community.console.accounts import Access, Account, Role, access
from community.console.analytics import resident_overview, vital_readings
from community.console.charts import EN_LABELS, PERIODS, ZH_LABELS, trend_charts
from community.console.web import CONSOLE, Console, current, html
from community.console.web_i18n import Lang, t
from community.console.web_render import page, resident_card, threshold_rows
from community.console.web_store import AlarmAction, ThresholdChange
from community.console.web_views import (
    alarm_resident,
    hub_of_resident,
    queue_items,
    residents_of,
    threshold_status,
)
from community.down_types import QueuedDown
from community.storage import StoredReading
from protocols.thresholds import Key, ThresholdError, Thresholds, resolve_thresholds

__all__ = ["add_routes"]

_ACTIONS: Final = frozenset({"ack", "note", "resolve"})
_NOTE_MAX: Final = 500


def _forbidden(console: Console, account: Account, resident: str | None, what: str, lang: Lang) -> web.Response:
    console.audit.record(account.username, "access.denied", resident, what)
    return html(page(lang, "403", f'<p class="flag" id="forbidden">{t(lang, "forbidden")}</p>', account), 403)


async def _alarm_action(request: web.Request) -> web.StreamResponse:
    console = request.config_dict[CONSOLE]
    account, _ = current(request)
    lang = console.lang(request)
    hub, alarm_id, action = request.match_info["hub"], request.match_info["alarm_id"], request.match_info["action"]
    if action not in _ACTIONS:
        raise web.HTTPNotFound
    readings = await console.storage.readings(hub)
    mine = [r for r in readings if r.alarm_id == alarm_id and r.kind == "alarm"]
    if not mine:
        raise web.HTTPNotFound(text=f"no alarm {alarm_id} of hub {hub}")
    resident = alarm_resident(readings, hub, alarm_id)
    allowed = (
        access(account, console.accounts.sharing(resident)) is Access.FULL
        if resident is not None
        else account.role in (Role.DOCTOR, Role.NURSE)
    )
    if not allowed:
        return _forbidden(console, account, resident, f"{action} {hub}/{alarm_id}", lang)
    form = await request.post()
    now = console.clock()
    detail = f"{hub}/{alarm_id}"
    if action == "ack":
        try:
            sent = await console.sender.ack_alarm(hub, alarm_id, account.display_name, now, role=account.role.value)
        except aiomqtt.MqttError as exc:
            raise web.HTTPServiceUnavailable(text=f"not sent: {exc}") from None
        console.store.add_action(AlarmAction(hub, alarm_id, "ack", account.display_name, now, down_seq=sent.seq))
        detail += f" down seq {sent.seq}"
    elif action == "note":
        text = " ".join(str(form.get("text", "")).split())[:_NOTE_MAX]
        if not text:
            raise web.HTTPBadRequest(text="an empty note")
        console.store.add_action(AlarmAction(hub, alarm_id, "note", account.display_name, now, text=text))
        detail += f": {text}"
    else:
        revision = max(int(r.body.get("revision", 0)) for r in mine)
        console.store.add_action(AlarmAction(hub, alarm_id, "resolve", account.display_name, now, revision=revision))
        detail += f" at revision {revision}"
    console.audit.record(account.username, f"alarm.{action}", resident, detail)
    console.feed.publish()
    if request.path.startswith("/api/"):
        return web.json_response({"hub": hub, "alarm_id": alarm_id, "action": action, "detail": detail})
    raise web.HTTPSeeOther("/")


async def _residents(request: web.Request) -> web.Response:
    console = request.config_dict[CONSOLE]
    account, session = current(request)
    lang = console.lang(request)
    readings = await console.storage.readings()
    cards = []
    for resident, level in residents_of(readings, account, console.accounts.sharing):
        plan = await console.plans.get(resident)
        overview = resident_overview(
            resident,
            readings,
            plan=plan,
            thresholds=_thresholds(console, resident, await _down(console, readings, resident)),
            now=console.clock(),
            resolved=console.store.resolved(),
        )
        console.audit.record(account.username, "view.residents", resident, level.name.lower())
        if level is Access.FULL:
            cards.append(resident_card(overview, lang))
        else:
            tier = overview.risk.tier.value
            cards.append(
                f'<div class="card resident"><h3>{escape(resident)} '
                f'<span class="badge {tier}">{t(lang, tier)}</span></h3>'
                f"<p>{t(lang, 'status_only')}</p></div>"
            )
    body = f"<h2>{t(lang, 'residents')}</h2>" + "".join(cards)
    return html(page(lang, t(lang, "residents"), body, account, session.csrf))


def _thresholds(console: Console, resident: str, down: Sequence[QueuedDown] | None) -> Thresholds:
    """The resident's thresholds from the defaults and the changes the console sent: all of them (``down`` is
    None), or those the hub confirmed applying (the hub's down-messages ``down``)."""
    overrides: dict[str, float] = {}
    for change in console.store.threshold_changes(resident):
        if down is not None and threshold_status(down, change.hub, change.down_seq).state != "applied":
            continue
        for key, value in change.changes.items():
            if value is None:
                overrides.pop(key, None)
            else:
                overrides[key] = value
    try:
        return resolve_thresholds(overrides=overrides)
    except ThresholdError:
        return resolve_thresholds()


async def _down(console: Console, readings: Sequence[StoredReading], resident: str) -> list[QueuedDown]:
    hub = hub_of_resident(readings, resident)
    return [] if hub is None else await console.storage.down_messages(hub)


def _own(console: Console, account: Account, resident: str) -> bool:
    return access(account, console.accounts.sharing(resident)) is Access.FULL


async def _resident_page(request: web.Request) -> web.Response:
    console = request.config_dict[CONSOLE]
    account, session = current(request)
    lang = console.lang(request)
    resident = request.match_info["resident"]
    if not _own(console, account, resident):
        return _forbidden(console, account, resident, "view resident", lang)
    name = escape(resident)
    days = int(request.query.get("days", "7")) if request.query.get("days", "7").isdigit() else 7
    days = days if days in PERIODS else 7
    readings = await console.storage.readings()
    hub = hub_of_resident(readings, resident)
    down = await console.storage.down_messages(hub) if hub is not None else []
    thresholds = _thresholds(console, resident, down)
    plan = await console.plans.get(resident)
    zone = plan.zone if plan is not None else None
    charts = trend_charts(
        vital_readings(readings, zone, resident_id=resident),
        now=console.clock(),
        days=days,
        thresholds=thresholds,
        labels=ZH_LABELS if lang is Lang.ZH else EN_LABELS,
    )
    console.audit.record(account.username, "view.resident", resident, f"trends {days} days")
    periods = " ".join(f'<a href="?days={p}">{p} {t(lang, "days")}</a>' for p in PERIODS)
    changes = [(c, threshold_status(down, c.hub, c.down_seq)) for c in console.store.threshold_changes(resident)]
    keys = "".join(f'<option value="{k.value}">{k.value} ({thresholds[k]:g})</option>' for k in Key)
    form = (
        f'<form method="post" action="/residents/{name}/thresholds" id="thresholds-form">'
        f'<input type="hidden" name="csrf" value="{session.csrf}"><select name="key" id="key">{keys}</select> '
        f'<input name="value" id="value" placeholder="{t(lang, "value")}"> <button id="send">{t(lang, "change")}'
        f"</button></form>"
    )
    body = (
        f"<h2>{name}</h2><h3>{t(lang, 'trends')}</h3><p>{periods}</p>"
        + "".join(f'<div class="card chart" id="chart-{k.value}">{svg}</div>' for k, svg in charts.items())
        + f'<h3>{t(lang, "thresholds")}</h3><div class="card">{form}<table id="changes">'
        + threshold_rows(changes, lang)
        + "</table></div>"
    )
    return html(page(lang, resident, body, account, session.csrf))


async def _change_thresholds(request: web.Request) -> web.StreamResponse:
    console = request.config_dict[CONSOLE]
    account, _ = current(request)
    lang = console.lang(request)
    resident = request.match_info["resident"]
    if not _own(console, account, resident):
        return _forbidden(console, account, resident, "change thresholds", lang)
    form = await request.post()
    key, text = str(form.get("key", "")), str(form.get("value", "")).strip()
    value: float | None = None
    if text:
        try:
            value = float(text)
        except ValueError:
            raise web.HTTPBadRequest(text=f"{t(lang, 'bad_value')} {text!r}") from None
        if not math.isfinite(value):
            raise web.HTTPBadRequest(text=f"{t(lang, 'bad_value')} {text!r}")
    readings: list[StoredReading] = await console.storage.readings()
    hub = hub_of_resident(readings, resident)
    if hub is None:
        raise web.HTTPNotFound(text=f"no hub is known for {resident}")
    current_overrides = {k.value: v for k, v in _thresholds(console, resident, None).values.items()}
    try:
        resolve_thresholds(overrides={**current_overrides, **({} if value is None else {key: value})})
        Key(key)
    except (ThresholdError, ValueError) as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    try:
        sent = await console.sender.update_thresholds(hub, resident, {key: value})
    except aiomqtt.MqttError as exc:
        raise web.HTTPServiceUnavailable(text=f"not sent: {exc}") from None
    now = console.clock()
    console.store.add_threshold_change(
        ThresholdChange(resident, hub, account.display_name, now, {key: value}, sent.seq)
    )
    console.audit.record(account.username, "thresholds.change", resident, f"{key}={value} down seq {sent.seq}")
    raise web.HTTPSeeOther(f"/residents/{quote(resident)}")


async def _api_session(request: web.Request) -> web.Response:
    account, session = current(request)
    return web.json_response({"username": account.username, "role": account.role.value, "csrf": session.csrf})


async def _api_alarms(request: web.Request) -> web.Response:
    """The queue as JSON, for programs (the demo's simulated doctor): what the page shows, same access rules."""
    console = request.config_dict[CONSOLE]
    account, _ = current(request)
    items = queue_items(
        await console.storage.readings(),
        account,
        console.accounts.sharing,
        console.store.actions(),
        console.store.resolved(),
        now=console.clock(),
        escalate_after=console.settings.escalate_after,
    )
    for resident in sorted({i.alarm.resident_id for i in items if i.alarm.resident_id}):
        console.audit.record(account.username, "view.queue", resident, "api")
    return web.json_response(
        [
            {
                "hub": i.alarm.hub,
                "alarm_id": i.alarm.alarm_id,
                "resident": i.alarm.resident_id,
                "condition": i.alarm.condition,
                "tier": i.alarm.tier.value,
                "state": i.alarm.state.value,
                "raised_at": i.alarm.raised_at.isoformat(),
                "acknowledged": i.alarm.acknowledged or bool(i.acks),
                "escalated": i.escalated,
            }
            for i in items
        ]
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/session", _api_session)
    app.router.add_get("/api/alarms", _api_alarms)
    app.router.add_post("/api/alarms/{hub}/{alarm_id}/{action}", _alarm_action)
    app.router.add_post("/alarms/{hub}/{alarm_id}/{action}", _alarm_action)
    app.router.add_get("/residents", _residents)
    app.router.add_get("/residents/{resident}", _resident_page)
    app.router.add_post("/residents/{resident}/thresholds", _change_thresholds)
