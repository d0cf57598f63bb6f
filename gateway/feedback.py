"""Telling the resident what is happening: voice, light and sound.

The resident has no screen. Each event the hub wants them to notice becomes a :class:`Cue`: a catalogue message
(`gateway.catalogue`) in the resident's language, a light pattern and a sound. A :class:`Feedback` shows cues.

Concurrency rules, the reason this module exists as it does:

- ``show()`` is synchronous and returns at once. Alarm handling calls it first and never awaits speech, so a
  slow or broken loudspeaker can never delay an alarm reaching the outbox (invariant 5).
- Speech runs in one named task per :class:`VoiceFeedback`. Urgent cues pre-empt: queued routine messages are
  dropped and a routine message being spoken is cut off; an urgent message is never cut off by a routine one.
- Hardware failures (a missing espeak-ng, a GPIO error) are logged and counted, never raised into the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Protocol, Self

from gateway.cues import Cue, Light, Sound
from gateway.errors import GatewayError

__all__ = [
    "Cue",
    "FanOutFeedback",
    "Feedback",
    "FeedbackUnavailableError",
    "GpioFeedback",
    "Light",
    "LogFeedback",
    "RecordingFeedback",
    "ShownCue",
    "Sound",
    "VoiceFeedback",
    "espeak_voice",
    "render_speech",
]

_log = logging.getLogger(__name__)


class FeedbackUnavailableError(GatewayError, RuntimeError):
    """The feedback hardware or program is not present on this machine."""


class Feedback(Protocol):
    """Something that can show cues to the resident. An async context manager owning its tasks."""

    def show(self, cue: Cue) -> None:
        """Start showing `cue` now; returns at once and never raises for device trouble."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class _NoResources:
    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


class LogFeedback(_NoResources):
    """Writes every cue to the log (the console in a terminal): the fallback that always works."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or _log

    def show(self, cue: Cue) -> None:
        level = logging.WARNING if cue.urgent else logging.INFO
        self._logger.log(level, "feedback light=%s sound=%s says: %s", cue.light, cue.sound, cue.text() or "")


@dataclass(frozen=True, slots=True)
class ShownCue:
    """A cue as the recorder saw it, with the monotonic time it was shown."""

    at: float
    cue: Cue


class RecordingFeedback(_NoResources):
    """Keeps every cue in memory, for tests and for the demo's latency figures."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.shown: list[ShownCue] = []
        self._changed = asyncio.Event()

    def show(self, cue: Cue) -> None:
        self.shown.append(ShownCue(self._clock(), cue))
        self._changed.set()

    def messages(self) -> list[str | None]:
        """The message keys shown so far, in order."""
        return [s.cue.message for s in self.shown]

    async def wait_for(self, message: str, *, after: int = 0) -> ShownCue:
        """Wait until a cue with this message key is shown (at index `after` or later)."""
        while True:
            for s in self.shown[after:]:
                if s.cue.message == message:
                    return s
            self._changed.clear()
            await self._changed.wait()


class FanOutFeedback:
    """Shows each cue on several feedbacks; one failing never stops the others."""

    def __init__(self, targets: Sequence[Feedback]) -> None:
        self._targets = tuple(targets)
        self._stack = contextlib.AsyncExitStack()

    def show(self, cue: Cue) -> None:
        for target in self._targets:
            target.show(cue)

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            for target in self._targets:
                await stack.enter_async_context(target)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()


# espeak-ng voice per catalogue language: "cmn" is Mandarin Chinese in espeak-ng 1.51.
_VOICES = MappingProxyType({"en": "en", "zh": "cmn"})


def espeak_voice(language: str) -> str:
    """The espeak-ng voice for a catalogue language."""
    return _VOICES.get(language, "en")


def _espeak_binary() -> str:
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise FeedbackUnavailableError("espeak-ng is not installed (apt-get install espeak-ng)")
    return binary


async def render_speech(text: str, language: str, wav_path: Path, *, words_per_minute: int = 140) -> Path:
    """Render `text` to a WAV file with espeak-ng (used by tests, and by hubs that play files themselves)."""
    proc = await asyncio.create_subprocess_exec(
        _espeak_binary(),
        "-v",
        espeak_voice(language),
        "-s",
        str(words_per_minute),
        "-w",
        str(wav_path),
        text,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await proc.communicate()
    if proc.returncode != 0:
        raise FeedbackUnavailableError(f"espeak-ng failed ({proc.returncode}): {stderr.decode(errors='replace')}")
    return wav_path


class VoiceFeedback:
    """Speaks cues through espeak-ng in one background task, urgent messages first.

    With `wav_dir` set, each utterance is rendered to a numbered WAV file instead of the loudspeaker.
    """

    def __init__(self, *, wav_dir: Path | None = None, words_per_minute: int = 140, queue_size: int = 16) -> None:
        self._binary = _espeak_binary()
        self._wav_dir = wav_dir
        self._wpm = words_per_minute
        self._queue: asyncio.Queue[Cue] = asyncio.Queue(queue_size)
        self._task: asyncio.Task[None] | None = None
        self._current: tuple[Cue, asyncio.subprocess.Process] | None = None
        self.spoken: list[tuple[Cue, Path | None]] = []
        self.failures = 0
        self._count = 0

    def show(self, cue: Cue) -> None:
        if cue.message is None:
            return
        if cue.urgent:
            self._drop_routine()
        try:
            self._queue.put_nowait(cue)
        except asyncio.QueueFull:
            if not cue.urgent:
                _log.warning("voice queue full; dropping routine message %s", cue.message)
                return
            self._drop_routine(keep_urgent=False)
            self._queue.put_nowait(cue)

    def _drop_routine(self, *, keep_urgent: bool = True) -> None:
        kept: list[Cue] = []
        while not self._queue.empty():
            queued = self._queue.get_nowait()
            self._queue.task_done()
            if keep_urgent and queued.urgent:
                kept.append(queued)
        for queued in kept:
            self._queue.put_nowait(queued)
        if self._current is not None and not self._current[0].urgent:
            with contextlib.suppress(ProcessLookupError):
                self._current[1].kill()

    async def idle(self) -> None:
        """Wait until everything queued so far has been spoken (for tests and orderly shutdown)."""
        await self._queue.join()

    async def _speak(self, cue: Cue) -> None:
        text = cue.text()
        if text is None:
            return
        args = [self._binary, "-v", espeak_voice(cue.language), "-s", str(self._wpm)]
        wav: Path | None = None
        if self._wav_dir is not None:
            self._count += 1
            wav = self._wav_dir / f"{self._count:05d}-{cue.message}-{cue.language}.wav"
            args += ["-w", str(wav)]
        try:
            proc = await asyncio.create_subprocess_exec(
                *args, text, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )
        except OSError as exc:
            self.failures += 1
            _log.error("cannot start espeak-ng: %s", exc)
            return
        self._current = (cue, proc)
        try:
            await proc.wait()
        finally:
            self._current = None
        if proc.returncode == 0:
            self.spoken.append((cue, wav))
        elif proc.returncode is not None and proc.returncode > 0:
            self.failures += 1
            _log.error("espeak-ng exited with %s for %s", proc.returncode, cue.message)

    async def _run(self) -> None:
        while True:
            cue = await self._queue.get()
            try:
                await self._speak(cue)
            finally:
                self._queue.task_done()

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name="feedback.voice")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._current is not None:
            with contextlib.suppress(ProcessLookupError):
                self._current[1].kill()


# Light pattern -> (LED name, on seconds, off seconds); off seconds 0 means steady.
_LIGHTS: Mapping[Light, tuple[str, float, float]] = MappingProxyType(
    {
        Light.OK: ("green", 2.0, 0.0),
        Light.NOTICE: ("amber", 0.5, 1.5),
        Light.WARNING: ("amber", 0.25, 0.25),
        Light.CRITICAL: ("red", 0.25, 0.25),
        Light.HELP_CALLED: ("red", 1.0, 0.5),
        Light.ANSWERED: ("green", 1.0, 1.0),
        Light.SIREN: ("red", 0.1, 0.1),
    }
)
# Sound pattern -> (on seconds, off seconds, repetitions; None repeats until the next cue).
_SOUNDS: Mapping[Sound, tuple[float, float, int | None]] = MappingProxyType(
    {
        Sound.CHIME: (0.15, 0.1, 2),
        Sound.BEEP: (0.1, 0.1, 1),
        Sound.ALARM: (0.5, 0.5, 10),
        Sound.SIREN: (0.2, 0.2, None),
    }
)


@dataclasses.dataclass(frozen=True, slots=True)
class GpioPins:
    """BCM pin numbers of the hub's LEDs and buzzer (defaults: the carehub HAT)."""

    red: int = 17
    amber: int = 27
    green: int = 22
    buzzer: int = 18


class GpioFeedback(_NoResources):
    """LEDs and a buzzer on a Raspberry Pi through gpiozero (an optional dependency, imported only here)."""

    def __init__(self, pins: GpioPins | None = None, pin_factory: Any = None) -> None:
        try:
            import gpiozero  # noqa: PLC0415  optional hardware dependency, absent on most machines
        except ImportError as exc:
            raise FeedbackUnavailableError("gpiozero is not installed (pip install 'carehub[pi]')") from exc
        pins = pins or GpioPins()
        try:
            self._leds = {
                "red": gpiozero.LED(pins.red, pin_factory=pin_factory),
                "amber": gpiozero.LED(pins.amber, pin_factory=pin_factory),
                "green": gpiozero.LED(pins.green, pin_factory=pin_factory),
            }
            self._buzzer = gpiozero.Buzzer(pins.buzzer, pin_factory=pin_factory)
        except gpiozero.GPIOZeroError as exc:
            raise FeedbackUnavailableError(f"GPIO not usable: {exc}") from exc
        self._gpio_error: type[Exception] = gpiozero.GPIOZeroError
        self.failures = 0

    def show(self, cue: Cue) -> None:
        try:
            for led in self._leds.values():
                led.off()
            if cue.light is not Light.OFF:
                name, on, off = _LIGHTS[cue.light]
                if off == 0:
                    self._leds[name].on()
                else:
                    self._leds[name].blink(on_time=on, off_time=off)
            self._buzzer.off()
            if cue.sound is not Sound.NONE:
                on, off, times = _SOUNDS[cue.sound]
                self._buzzer.beep(on_time=on, off_time=off, n=times)
        except self._gpio_error as exc:
            self.failures += 1
            _log.error("GPIO feedback failed: %s", exc)

    def state(self) -> dict[str, bool]:
        """Which outputs are currently lit/sounding (for diagnostics and tests)."""
        out = {name: bool(led.is_lit) for name, led in self._leds.items()}
        out["buzzer"] = bool(self._buzzer.is_active)
        return out

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for device in (*self._leds.values(), self._buzzer):
            device.close()
