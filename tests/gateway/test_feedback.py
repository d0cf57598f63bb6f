"""Feedback: catalogues in both languages, real espeak-ng speech, pre-emption, GPIO via gpiozero's mock pins."""

from __future__ import annotations

import array
import asyncio
import shutil
import sys
import wave
from pathlib import Path

import pytest

from gateway.alarms import MESSAGE_KEYS
from gateway.catalogue import CATALOGUES, LANGUAGES, UnknownMessageError, render
from gateway.feedback import (
    Cue,
    FanOutFeedback,
    FeedbackUnavailableError,
    GpioFeedback,
    Light,
    LogFeedback,
    RecordingFeedback,
    Sound,
    VoiceFeedback,
    render_speech,
)

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")

# Seconds of speech per character of text, measured on espeak-ng 1.51 at 140 wpm and widened by a factor of two
# either side: English letters are fast, Mandarin characters are whole syllables.
_SECONDS_PER_CHAR = {"en": (0.035, 0.17), "zh": (0.2, 1.0)}


def test_catalogues_cover_the_same_keys_in_every_language() -> None:
    assert set(CATALOGUES) == set(LANGUAGES)
    keys = set(CATALOGUES["en"])
    for language in LANGUAGES:
        assert set(CATALOGUES[language]) == keys
        assert all(text.strip() for text in CATALOGUES[language].values())


def test_catalogues_speak_every_alarm_message() -> None:
    missing = [key for key in MESSAGE_KEYS if key not in CATALOGUES["en"]]
    assert missing == []


def test_render_falls_back_to_english_and_rejects_unknown_keys() -> None:
    assert render("panic_answered", "fr") == CATALOGUES["en"]["panic_answered"]
    with pytest.raises(UnknownMessageError):
        render("no_such_message", "en")


def _speech_stats(path: Path) -> tuple[float, float]:
    with wave.open(str(path)) as wav:
        assert wav.getsampwidth() == 2
        frames = wav.readframes(wav.getnframes())
        duration = wav.getnframes() / wav.getframerate()
    samples = array.array("h", frames)
    if sys.byteorder == "big":
        samples.byteswap()
    loud = sum(1 for s in samples if abs(s) > 1000) / max(1, len(samples))
    return duration, loud


@needs_espeak
@pytest.mark.parametrize("language", LANGUAGES)
async def test_every_message_renders_to_plausible_speech(tmp_path: Path, language: str) -> None:
    for key, text in CATALOGUES[language].items():
        wav = await render_speech(text, language, tmp_path / f"{key}.wav")
        duration, loud_fraction = _speech_stats(wav)
        lo, hi = _SECONDS_PER_CHAR[language]
        assert lo * len(text) <= duration <= hi * len(text), (key, duration)
        # Speech is mostly voiced: a silent or clipped-off file has almost no loud samples.
        assert loud_fraction > 0.1, (key, loud_fraction)


@needs_espeak
async def test_voice_never_blocks_and_urgent_preempts_routine(tmp_path: Path) -> None:
    async with VoiceFeedback(wav_dir=tmp_path) as voice:
        for _ in range(3):
            voice.show(Cue("measure_reminder", "en"))
        voice.show(Cue("panic_help_called", "zh", Light.HELP_CALLED, Sound.ALARM, urgent=True))
        # show() returned without speaking anything yet: speech happens in the voice task.
        assert voice.spoken == []
        await voice.idle()
    messages = [cue.message for cue, _ in voice.spoken]
    assert "panic_help_called" in messages
    # The queued reminders were dropped for the urgent call; at most the one already speaking was cut off.
    assert messages.count("measure_reminder") == 0
    _, wav = voice.spoken[-1]
    assert wav is not None
    assert _speech_stats(wav)[0] > 1.0


async def test_recording_feedback_and_fan_out() -> None:
    ticks = iter(range(100))
    recorder = RecordingFeedback(clock=lambda: float(next(ticks)))
    async with FanOutFeedback([LogFeedback(), recorder]) as feedback:
        waiter = asyncio.create_task(recorder.wait_for("panic_answered"))
        feedback.show(Cue("panic_help_called", light=Light.HELP_CALLED, urgent=True))
        feedback.show(Cue("panic_answered", light=Light.ANSWERED))
        shown = await asyncio.wait_for(waiter, 5)
    assert shown.at == 1.0
    assert recorder.messages() == ["panic_help_called", "panic_answered"]


def test_gpio_feedback_drives_leds_and_buzzer() -> None:
    mock = pytest.importorskip("gpiozero.pins.mock")
    gpio = GpioFeedback(pin_factory=mock.MockFactory())
    gpio.show(Cue("siren", light=Light.SIREN, sound=Sound.SIREN, urgent=True))
    state = gpio.state()
    assert state["red"]
    assert not state["green"]
    gpio.show(Cue("panic_answered", light=Light.OK))
    assert gpio.state() == {"red": False, "amber": False, "green": True, "buzzer": False}
    asyncio.run(gpio.__aexit__(None, None, None))


def test_gpio_feedback_is_unavailable_without_gpiozero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gpiozero", None)
    with pytest.raises(FeedbackUnavailableError, match="gpiozero"):
        GpioFeedback()
