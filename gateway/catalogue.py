"""What the hub says to the resident, in English and Mandarin Chinese.

Residents have no screen: every alarm, instruction and confirmation is spoken (espeak-ng) and shown as a light
pattern. Messages are short, calm and say what to do. Placeholders use ``str.format`` names (``{value}``).
The keys are shared with the alarm engine (`gateway.alarms`) and the panic lifecycle (`gateway.panic`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from gateway.errors import GatewayError

__all__ = ["CATALOGUES", "LANGUAGES", "UnknownMessageError", "render"]

LANGUAGES = ("en", "zh")

_EN: dict[str, str] = {
    # Panic pendant lifecycle.
    "panic_help_called": "Help is being called. Stay calm, someone will answer soon.",
    "panic_still_calling": "Still calling for help. If you can, stay near the hub.",
    "panic_answered": "Your call has been answered. Help is on the way.",
    "panic_cancelled": "The call for help was cancelled.",
    "checkin_ok": "Thank you. Your daily check-in is recorded.",
    "checkin_missed": "You have not checked in today. Please press your button once.",
    # Blood pressure.
    "bp_high": "Your blood pressure is high. Please rest and measure again later.",
    "bp_very_high": "Your blood pressure is very high. Please sit down and rest.",
    "bp_crisis_remeasure": "Your blood pressure is dangerously high. Sit quietly for five minutes, then measure again.",
    "bp_crisis_confirmed": "Your blood pressure is still dangerously high. Your doctor is being told now.",
    "bp_low": "Your blood pressure is low. Please sit or lie down.",
    # Glucose.
    "glucose_low": "Your blood sugar is low. Please eat or drink something sweet now.",
    "glucose_hypo_critical": "Your blood sugar is very low. Eat something sweet now. Help is being called.",
    "glucose_high": "Your blood sugar is high. Please drink water and follow your plan.",
    "glucose_very_high": "Your blood sugar is very high. Your doctor is being told.",
    "glucose_swing": "Your blood sugar changed a lot since last time. Your doctor will review your medicine.",
    # Oxygen, pulse, temperature, weight.
    "spo2_low": "Your oxygen level is low. Please sit upright and breathe slowly.",
    "spo2_critical": "Your oxygen level is very low. Help is being called.",
    "pulse_abnormal": "Your pulse is outside the usual range. Please rest.",
    "pulse_critical": "Your pulse is dangerously abnormal. Help is being called.",
    "temperature_fever": "You have a fever. Please drink water and rest.",
    "temperature_critical": "Your temperature is dangerous. Help is being called.",
    "temperature_low": "Your temperature is low. Please keep warm and measure again.",
    "weight_gain": "Your weight went up quickly. Your doctor or nurse will be told.",
    # Devices and routine.
    "measure_due": "It is time for your measurement.",
    "measure_reminder": "You have not taken your measurement yet. Please measure now.",
    "device_silent": "One of your devices has not been heard from for a while.",
    "battery_low_meter": "A meter's battery is low. Please change it soon.",
    "battery_low_pendant": "Your call button's battery is low. Please change it today.",
    "reading_unreliable": "That reading did not work. Please measure again.",
    "all_clear": "Your readings are back in range. Thank you.",
    "siren": "Emergency. Calling for help.",
}

_ZH: dict[str, str] = {
    "panic_help_called": "正在为您呼叫帮助。请保持冷静，很快会有人回应。",
    "panic_still_calling": "仍在呼叫帮助。如果可以，请留在设备附近。",
    "panic_answered": "您的呼叫已得到回应，帮助正在路上。",
    "panic_cancelled": "求助呼叫已取消。",
    "checkin_ok": "谢谢，您今天的报平安已记录。",
    "checkin_missed": "您今天还没有报平安，请按一下按钮。",
    "bp_high": "您的血压偏高。请休息，稍后再量一次。",
    "bp_very_high": "您的血压很高。请坐下休息。",
    "bp_crisis_remeasure": "您的血压非常高。请安静坐五分钟，然后再量一次。",
    "bp_crisis_confirmed": "您的血压仍然非常高。正在通知您的医生。",
    "bp_low": "您的血压偏低。请坐下或躺下。",
    "glucose_low": "您的血糖偏低。请马上吃点或喝点甜的东西。",
    "glucose_hypo_critical": "您的血糖非常低。请马上吃甜的东西。正在为您呼叫帮助。",
    "glucose_high": "您的血糖偏高。请喝水，并按计划处理。",
    "glucose_very_high": "您的血糖很高。正在通知您的医生。",
    "glucose_swing": "您的血糖比上次变化很大。医生会检查您的用药。",
    "spo2_low": "您的血氧偏低。请坐直，慢慢呼吸。",
    "spo2_critical": "您的血氧非常低。正在为您呼叫帮助。",
    "pulse_abnormal": "您的脉搏不在正常范围。请休息。",
    "pulse_critical": "您的脉搏非常异常。正在为您呼叫帮助。",
    "temperature_fever": "您发烧了。请多喝水，好好休息。",
    "temperature_critical": "您的体温很危险。正在为您呼叫帮助。",
    "temperature_low": "您的体温偏低。请注意保暖，再量一次。",
    "weight_gain": "您的体重上升很快。会通知您的医生或护士。",
    "measure_due": "该测量了。",
    "measure_reminder": "您还没有测量。请现在测量。",
    "device_silent": "您的一台设备已经有一段时间没有消息了。",
    "battery_low_meter": "测量仪的电池电量低，请尽快更换。",
    "battery_low_pendant": "您的呼叫按钮电量低，请今天更换电池。",
    "reading_unreliable": "这次测量没有成功，请再量一次。",
    "all_clear": "您的读数已恢复正常。谢谢。",
    "siren": "紧急情况，正在呼叫帮助。",
}

CATALOGUES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {"en": MappingProxyType(_EN), "zh": MappingProxyType(_ZH)}
)


class UnknownMessageError(GatewayError, KeyError):
    """A message key or language the catalogues do not have."""


def render(key: str, language: str, **params: object) -> str:
    """The text of message `key` in `language`, with placeholders filled; English when the language is unknown."""
    catalogue = CATALOGUES.get(language, CATALOGUES["en"])
    try:
        template = catalogue[key]
    except KeyError:
        raise UnknownMessageError(key) from None
    return template.format(**params) if params else template
