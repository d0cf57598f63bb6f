"""HTML of the console's pages (server-rendered; no script or style from elsewhere: issue 18 item 3)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from html import escape

from community.console.accounts import Account
from community.console.analytics import ResidentOverview, Vital
from community.console.web_i18n import Lang, t
from community.console.web_store import ThresholdChange
from community.console.web_views import QueueItem, ThresholdStatus

__all__ = ["STYLE", "page", "queue_rows", "resident_card", "threshold_rows"]

STYLE = """
body{font-family:sans-serif;margin:0;background:#f5f6f8;color:#222}
header{background:#1f3a5f;color:#fff;padding:.6em 1em;display:flex;gap:1.5em;align-items:center}
header a{color:#fff}
main{padding:1em}
table{border-collapse:collapse;width:100%;background:#fff}
td,th{border-bottom:1px solid #ddd;padding:.4em;text-align:left;vertical-align:top}
.tier-critical{border-left:6px solid #c0392b}.tier-warning{border-left:6px solid #e67e22}
.tier-notice{border-left:6px solid #d4ac0d}
tr.escalated{background:#fdecea;animation:blink 1s step-start infinite alternate}
@keyframes blink{50%{background:#f5b7b1}}
.badge{padding:.1em .5em;border-radius:.6em;color:#fff}
.red{background:#c0392b}.yellow{background:#d4ac0d}.green{background:#27ae60}
.flag{color:#c0392b;font-weight:bold}
.card{background:#fff;margin:0 0 1em;padding:.8em;border-radius:.4em;box-shadow:0 1px 2px #0002}
form.inline{display:inline}
"""


def _h(text: object) -> str:
    return escape(str(text), quote=True)


def _ago(lang: Lang, delta: _dt.timedelta) -> str:
    return f"{int(delta.total_seconds() // 60)} {t(lang, 'min')}"


def page(lang: Lang, title: str, body: str, account: Account | None, csrf: str | None = None) -> str:
    """A whole page; the header links and the language toggle when someone is logged in."""
    other = "zh" if lang is Lang.EN else "en"
    nav = ""
    if account is not None and csrf is not None:
        nav = (
            f'<a href="/">{t(lang, "queue")}</a><a href="/residents">{t(lang, "residents")}</a>'
            f"<span>{_h(account.display_name)} ({_h(account.role.value)})</span>"
            f'<form class="inline" method="post" action="/logout"><input type="hidden" name="csrf" value="{_h(csrf)}">'
            f'<button id="logout">{t(lang, "logout")}</button></form>'
        )
    return (
        f'<!doctype html><html lang="{lang.value}"><head><meta charset="utf-8"><title>{_h(title)}</title>'
        f'<meta name="viewport" content="width=device-width"><style>{STYLE}</style></head><body>'
        f"<header><strong>{t(lang, 'title')}</strong>{nav}"
        f'<a id="lang" href="?lang={other}">{t(lang, "language")}</a></header><main>{body}</main></body></html>'
    )


def _trigger_text(item: QueueItem, lang: Lang) -> str:
    parts = []
    for v in item.triggers:
        values = ", ".join(f"{vital.value} {value:g} {vital.unit}" for vital, value in v.values.items())
        parts.append(f"{_h(values)} ({_h(v.taken_at.strftime('%H:%M'))})")
    if not parts and item.alarm.value is not None:
        limit = "" if item.alarm.threshold is None else f" / {item.alarm.threshold:g}"
        parts.append(_h(f"{t(lang, 'value')} {item.alarm.value:g}{limit}"))
    if not parts and item.alarm.is_panic:
        parts.append(t(lang, "panic"))
    return "<br>".join(parts)


def _action_form(item: QueueItem, action: str, csrf: str, lang: Lang, extra: str = "") -> str:
    a = item.alarm
    return (
        f'<form class="inline" method="post" action="/alarms/{_h(a.hub)}/{_h(a.alarm_id)}/{action}">'
        f'<input type="hidden" name="csrf" value="{_h(csrf)}">{extra}'
        f'<button name="do" value="{action}">{t(lang, action)}</button></form>'
    )


def queue_rows(items: Sequence[QueueItem], lang: Lang, csrf: str) -> str:
    """The queue's table body (also what each server-sent event carries)."""
    if not items:
        return f'<tr><td colspan="6" id="empty">{t(lang, "no_alarms")}</td></tr>'
    rows = []
    for item in items:
        a = item.alarm
        cls = f"tier-{a.tier.value}" + (" escalated" if item.escalated else "")
        condition = t(lang, "panic") if a.is_panic else _h(a.condition)
        status = ""
        if item.escalated:
            status = f'<div class="flag escalation">{t(lang, "escalated")}</div>'
        for ack in item.acks:
            status += f"<div>{t(lang, 'ack_sent')} {_h(ack.actor)} {_h(ack.at.strftime('%H:%M'))}</div>"
        notes = "".join(f"<div><em>{_h(n.actor)}:</em> {_h(n.text)}</div>" for n in item.notes)
        note_field = f'<input name="text" maxlength="500" placeholder="{t(lang, "note")}" required>'
        rows.append(
            f'<tr class="{cls}" data-alarm="{_h(a.alarm_id)}" data-hub="{_h(a.hub)}">'
            f"<td>{_h(a.resident_id or t(lang, 'unknown_resident'))}</td><td>{condition}{status}{notes}</td>"
            f"<td>{t(lang, a.tier.value)}</td><td>{_trigger_text(item, lang)}</td>"
            f'<td class="since">{_ago(lang, item.waiting)}</td><td>'
            + _action_form(item, "ack", csrf, lang)
            + _action_form(item, "note", csrf, lang, note_field)
            + _action_form(item, "resolve", csrf, lang)
            + "</td></tr>"
        )
    return "".join(rows)


def resident_card(o: ResidentOverview, lang: Lang) -> str:
    """One resident on the residents panel."""
    tier = o.risk.tier.value
    reasons = "; ".join(_h(r.text) for r in o.risk.reasons[:3])
    vitals = []
    bp = o.latest.blood_pressure
    if bp is not None:
        vitals.append(f"BP {bp[0].value:g}/{bp[1].value:g} mmHg")
    for vital in (Vital.PULSE, Vital.GLUCOSE, Vital.SPO2, Vital.TEMPERATURE, Vital.WEIGHT):
        v = o.latest.get(vital)
        if v is not None:
            vitals.append(f"{vital.value} {v.value:g} {vital.unit}")
    devices = "".join(
        f"<li>{_h(d.role.value)} {_h(d.device)}: {t(lang, 'battery')} "
        f"{'?' if d.battery is None else _h(d.battery) + '%'}, {t(lang, 'last_seen')} "
        f"{_h(d.last_seen.strftime('%Y-%m-%d %H:%M'))}</li>"
        for d in o.devices
    )
    if o.upload is None or o.upload.percent is None:
        upload = t(lang, "no_plan")
    else:
        flag = f' <span class="flag">{t(lang, "failing")}</span>' if o.upload.failing else ""
        upload = (
            f'<span class="upload">{o.upload.percent:.0f}%</span> ({o.upload.received}/{o.upload.scheduled})'
            f"{flag}, {t(lang, 'missed')} {len(o.upload.missed)}"
        )
    return (
        f'<div class="card resident" id="r-{_h(o.resident_id)}"><h3><a href="/residents/{_h(o.resident_id)}">'
        f'{_h(o.resident_id)}</a> <span class="badge {tier}">{t(lang, tier)}</span></h3>'
        f"<div>{t(lang, 'reasons')}: {reasons}</div><div>{t(lang, 'latest')}: {_h(', '.join(vitals) or '-')}</div>"
        f"<div>{t(lang, 'upload')}: {upload}</div><div>{t(lang, 'devices')}:<ul>{devices}</ul></div></div>"
    )


def threshold_rows(changes: Sequence[tuple[ThresholdChange, ThresholdStatus]], lang: Lang) -> str:
    """Each threshold change sent, and whether the hub confirmed it."""
    rows = []
    for change, status in changes:
        what = ", ".join(f"{k} = {'default' if v is None else f'{v:g}'}" for k, v in change.changes.items())
        if status.state == "applied" and status.confirmed_at is not None:
            state = f"{t(lang, 'applied')} {status.confirmed_at.strftime('%Y-%m-%d %H:%M:%S')} UTC"
        elif status.state in ("refused", "expired"):
            state = f"{t(lang, status.state)} {_h(status.reason or '')}"
        else:
            state = t(lang, "sent")
        rows.append(
            f'<tr class="change"><td>{_h(change.at.strftime("%Y-%m-%d %H:%M"))}</td><td>{_h(change.actor)}</td>'
            f'<td>{_h(what)}</td><td class="state-{_h(status.state)}">{state}</td></tr>'
        )
    return "".join(rows)
