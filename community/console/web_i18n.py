"""The console's words in English and Chinese, and how a request's language is chosen (issue 18)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = ["Lang", "choose_lang", "t"]


class Lang(enum.StrEnum):
    EN = "en"
    ZH = "zh"


_WORDS: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {
        "title": ("carehub console", "carehub 家庭医生工作台"),
        "login": ("Log in", "登录"),
        "logout": ("Log out", "退出"),
        "username": ("Username", "用户名"),
        "password": ("Password", "密码"),
        "bad_login": ("Wrong username or password.", "用户名或密码错误。"),
        "queue": ("Alarm queue", "告警队列"),
        "residents": ("Residents", "居民"),
        "resident": ("Resident", "居民"),
        "condition": ("Condition", "情况"),
        "tier": ("Tier", "级别"),
        "readings": ("Triggering readings", "触发读数"),
        "since": ("Since raised", "已过时间"),
        "actions": ("Actions", "操作"),
        "ack": ("Acknowledge", "确认"),
        "note": ("Add note", "添加备注"),
        "resolve": ("Resolve", "标记已处理"),
        "no_alarms": ("No open alarms.", "没有未处理的告警。"),
        "escalated": ("ESCALATED: unanswered", "已升级：无人应答"),
        "ack_sent": ("acknowledgement sent by", "已发送确认："),
        "panic": ("Panic call (pendant)", "紧急呼叫 (呼叫器)"),
        "unknown_resident": ("unknown resident", "未知居民"),
        "risk": ("Risk tier", "风险分层"),
        "latest": ("Latest vitals", "最新体征"),
        "devices": ("Devices", "设备"),
        "battery": ("battery", "电量"),
        "last_seen": ("last seen", "最后在线"),
        "upload": ("Upload rate", "上传率"),
        "failing": ("under 90%", "低于 90%"),
        "missed": ("missed", "漏测"),
        "no_plan": ("no care plan", "无监测计划"),
        "trends": ("Trends", "趋势"),
        "days": ("days", "天"),
        "thresholds": ("Thresholds", "阈值"),
        "change": ("Send to hub", "发送到网关"),
        "sent": ("sent, not yet confirmed by the hub", "已发送，网关尚未确认"),
        "applied": ("applied by the hub at", "网关已应用于"),
        "refused": ("refused by the hub", "网关拒绝"),
        "expired": ("superseded before the hub confirmed it", "网关确认前已被取代"),
        "forbidden": ("You have no access to this resident.", "您无权查看该居民。"),
        "status_only": ("Status only (family sharing)", "仅状态 (家属共享)"),
        "red": ("red", "红"),
        "yellow": ("yellow", "黄"),
        "green": ("green", "绿"),
        "notice": ("notice", "提示"),
        "warning": ("warning", "警告"),
        "critical": ("critical", "危急"),
        "min": ("min", "分钟"),
        "language": ("中文", "English"),
        "reasons": ("Why", "原因"),
        "changes_sent": ("Changes sent", "已发送的修改"),
        "value": ("value", "数值"),
        "bad_value": ("Not a number:", "不是数字："),
    }
)


def t(lang: Lang, key: str) -> str:
    """The word for ``key`` in ``lang`` (a missing key is a programming error: KeyError)."""
    en, zh = _WORDS[key]
    return zh if lang is Lang.ZH else en


def choose_lang(query: str | None, cookie: str | None, accept_language: str | None) -> Lang:
    """The language asked for by the toggle (``?lang=``), then the cookie, then ``Accept-Language`` (q-ordered)."""
    for chosen in (query, cookie):
        if chosen in (Lang.EN.value, Lang.ZH.value):
            return Lang(chosen)
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        ranked.append((-q, i, tag.strip().lower()))
    for _, _, tag in sorted(ranked):
        if tag.startswith("zh"):
            return Lang.ZH
        if tag.startswith("en"):
            return Lang.EN
    return Lang.EN
