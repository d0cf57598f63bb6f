"""What the hub tells the resident: a light pattern, a sound and a spoken sentence (pure values, no I/O).

The sans-I/O parts of the hub (``gateway.core``, ``gateway.panic``) decide *which* cue to give; ``gateway.feedback``
gives it (LEDs, buzzer, espeak-ng, a log). Keeping the vocabulary here lets those parts be imported and tested without
the feedback machinery (asyncio, subprocesses, GPIO).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from gateway.catalogue import render

__all__ = ["MESSAGE_KEYS", "Cue", "Light", "Sound"]


class Light(enum.StrEnum):
    """Light patterns; the GPIO implementation maps each to (colour, on seconds, off seconds)."""

    OFF = "off"
    OK = "ok"  # green, steady for a moment
    NOTICE = "notice"  # amber, slow blink
    WARNING = "warning"  # amber, fast blink
    CRITICAL = "critical"  # red, fast blink
    HELP_CALLED = "help_called"  # red, steady pulse until answered
    ANSWERED = "answered"  # green, slow pulse
    SIREN = "siren"  # red, strobe


class Sound(enum.StrEnum):
    """Buzzer patterns."""

    NONE = "none"
    CHIME = "chime"
    BEEP = "beep"
    ALARM = "alarm"
    SIREN = "siren"


@dataclass(frozen=True, slots=True)
class Cue:
    """One thing to tell the resident."""

    message: str | None
    language: str = "en"
    light: Light = Light.OFF
    sound: Sound = Sound.NONE
    urgent: bool = False
    params: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    def text(self) -> str | None:
        """The spoken sentence, or None for a light/sound-only cue."""
        return None if self.message is None else render(self.message, self.language, **self.params)


# Every message key the rule engine and the alarm book use; `gateway.catalogue` holds the English and Mandarin
# texts. English gloss of each:
MESSAGE_KEYS: tuple[str, ...] = (
    "bp_high",  # blood pressure is high: rest, measure again later
    "bp_very_high",  # blood pressure is very high: sit down and rest
    "bp_crisis_remeasure",  # dangerously high: sit quietly five minutes, then measure again
    "bp_crisis_confirmed",  # still dangerously high: the doctor is being told now
    "bp_low",  # blood pressure is low: sit or lie down
    "glucose_low",  # blood sugar is low: eat or drink something sweet now
    "glucose_hypo_critical",  # blood sugar is very low: eat something sweet now, help is being called
    "glucose_high",  # blood sugar is high: drink water, follow the plan
    "glucose_very_high",  # blood sugar is very high: the doctor is being told
    "glucose_swing",  # blood sugar changed a lot since last time: the doctor will review the medicine
    "spo2_low",  # oxygen level is low: sit upright, breathe slowly
    "spo2_critical",  # oxygen level is very low: help is being called
    "pulse_abnormal",  # pulse is outside the usual range: rest
    "pulse_critical",  # pulse is dangerously abnormal: help is being called
    "temperature_low",  # temperature is low: keep warm, measure again
    "temperature_fever",  # fever: drink water and rest
    "temperature_critical",  # temperature is dangerous: help is being called
    "weight_gain",  # weight went up quickly: the doctor or nurse will be told
    "measure_reminder",  # the scheduled measurement was not taken in time
    "device_silent",  # a device has not been heard from for a while
    "battery_low_meter",  # a meter's battery is low: change it soon
    "battery_low_pendant",  # the call button's battery is low: change it today
    "reading_unreliable",  # that reading did not work: measure again
    "all_clear",  # readings are back in range
)
