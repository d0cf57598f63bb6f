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

__all__ = ["Cue", "Light", "Sound"]


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
