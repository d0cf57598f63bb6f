"""The hub's one injectable clock, and the home's time zone.

Two readings of time, for two different jobs (issue 17 item 4):

- **wall time** (:meth:`Clock.now`, an aware UTC datetime) for what is stored or sent -- record timestamps -- and
  for what people schedule in local time -- measurement slots, check-in deadlines;
- **monotonic time** (:meth:`Clock.monotonic`, seconds) for every timeout, deadline and rate: how long a panic call
  has waited for the platform, how long a device has been silent. An NTP step of hours after a week offline moves
  the wall clock, never the monotonic one, so it can neither fire nor delay an escalation.

Production passes :class:`SystemClock`; tests pass :class:`ManualClock`, whose wall clock can also be stepped on its
own (:meth:`ManualClock.step_wall`) to show that nothing measured on the monotonic clock moves with it. The
simulator's clocks (`sim.clock`) have the same two readings, so a compressed simulated day drives a real hub.

The home's zone: schedules are "local time", and the local time is the zone the installer wrote to ``hub.toml``
(``[hub] timezone``, an IANA name). Without it the hub takes the system's zone (:func:`system_zone`: the ``TZ``
variable, the ``/etc/localtime`` link, Debian's ``/etc/timezone``), and says so; when none of those names a zone it
falls back to UTC with a note that the installer should set one.
"""

from __future__ import annotations

import enum
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "Clock",
    "HomeZone",
    "ManualClock",
    "SystemClock",
    "ZoneNameError",
    "ZoneSource",
    "system_zone",
    "zone_named",
]


class Clock(Protocol):
    """Wall time for timestamps and schedules, monotonic time for timeouts and rates."""

    def now(self) -> datetime:
        """The wall time, timezone-aware (UTC for the hub's clocks)."""
        ...

    def wall(self) -> float:
        """The wall time as seconds since the Unix epoch (for storage that keeps numbers)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards and never jumps; only differences are meaningful."""
        ...


class SystemClock:
    """The real clocks."""

    def now(self) -> datetime:
        """The system's wall time in UTC."""
        return datetime.now(UTC)

    def wall(self) -> float:
        """Seconds since the Unix epoch, from :func:`time.time`."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds from :func:`time.monotonic`."""
        return time.monotonic()


_EPOCH_START = datetime.fromtimestamp(1_700_000_000, UTC)


def _seconds(amount: float | timedelta) -> float:
    return amount.total_seconds() if isinstance(amount, timedelta) else float(amount)


class ManualClock:
    """A clock that moves only when a test moves it.

    :meth:`advance` moves both readings forward together (time passing); :meth:`step_wall` and :meth:`set_wall`
    move only the wall clock, either way (NTP correcting a clock, someone setting it by hand).
    """

    def __init__(self, start: datetime | float = _EPOCH_START, monotonic: float = 0.0) -> None:
        if isinstance(start, datetime):
            if start.tzinfo is None or start.utcoffset() is None:
                raise ValueError(f"a clock's start must be timezone-aware, got {start!r}")
            self._now = start.astimezone(UTC)
        else:
            self._now = datetime.fromtimestamp(start, UTC)
        self._monotonic = monotonic

    def now(self) -> datetime:
        """The current manual wall time (UTC)."""
        return self._now

    def wall(self) -> float:
        """The current manual wall time in seconds since the epoch."""
        return self._now.timestamp()

    def monotonic(self) -> float:
        """The current manual monotonic time."""
        return self._monotonic

    def advance(self, amount: float | timedelta) -> None:
        """Let ``amount`` (seconds or a timedelta) pass: both clocks move forward; never backwards."""
        seconds = _seconds(amount)
        if seconds < 0:
            raise ValueError("time cannot pass backwards; use step_wall to set the wall clock back")
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds

    def step_wall(self, amount: float | timedelta) -> None:
        """Step the wall clock alone by ``amount`` (either sign); the monotonic clock does not move."""
        self._now += timedelta(seconds=_seconds(amount))

    def set_wall(self, when: datetime) -> None:
        """Set the wall clock alone to ``when`` (aware); the monotonic clock does not move."""
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError(f"the wall clock must be set to an aware time, got {when!r}")
        self._now = when.astimezone(UTC)


# -- the home's time zone -------------------------------------------------------------------------------------

# An IANA name: "Asia/Shanghai", "America/Argentina/Buenos_Aires", "Etc/GMT+8", "UTC". Files in the zoneinfo
# directory that are not zones of a place ("localtime" is a link to the system's own setting) are refused.
_ZONE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)*$")
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory", "posix", "right"})


class ZoneNameError(ValueError):
    """A time zone name that is not an IANA zone this system knows; ``reason`` says why."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"{name!r} {reason}")


def zone_named(name: str) -> ZoneInfo:
    """The IANA zone called ``name`` (e.g. ``"Asia/Shanghai"``).

    Raises:
        ZoneNameError: not a zone name, or a zone this system's time zone database does not hold.
    """
    first = name.split("/", 1)[0]
    if not _ZONE_NAME.fullmatch(name) or first in _NOT_ZONES:
        raise ZoneNameError(name, 'is not an IANA time zone name (like "Europe/Berlin" or "Asia/Shanghai")')
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, IsADirectoryError, UnicodeDecodeError):
        # ZoneInfoNotFoundError: no such zone; a directory ("Asia") or a file that is not TZif is not a zone.
        raise ZoneNameError(name, "is not a time zone in this system's time zone database") from None


class ZoneSource(enum.StrEnum):
    """Where the home's zone came from."""

    CONFIG = "hub.toml"
    OPTION = "option"
    TZ_VARIABLE = "TZ"
    ETC_LOCALTIME = "/etc/localtime"
    ETC_TIMEZONE = "/etc/timezone"
    FALLBACK = "fallback"


@dataclass(frozen=True, slots=True)
class HomeZone:
    """The home's zone, where it came from, and a note when it is a guess (for ``carehub doctor`` to show)."""

    zone: ZoneInfo
    source: ZoneSource
    note: str = ""

    @property
    def name(self) -> str:
        """The zone's IANA name."""
        return self.zone.key


def _name_from_path(path: str) -> str | None:
    """``/usr/share/zoneinfo/Europe/Berlin`` (or a relative link to it) -> ``Europe/Berlin``."""
    marker = "zoneinfo/"
    index = path.rfind(marker)
    if index < 0:
        return None
    name = path[index + len(marker) :]
    return name.removeprefix("posix/") or None


def _try(name: str | None, source: ZoneSource) -> HomeZone | None:
    if name is None:
        return None
    try:
        return HomeZone(zone_named(name), source)
    except ZoneNameError:
        return None


def system_zone(*, environ: Mapping[str, str] | None = None, root: Path = Path("/")) -> HomeZone:
    """The system's zone, by the rules the C library follows, as an IANA name; UTC with a note when unknown.

    1. ``TZ``, when set: an IANA name (``Asia/Shanghai`` or ``:Asia/Shanghai``) or a path into a zoneinfo
       directory. A POSIX rule such as ``CST-8`` names no zone: the hub cannot follow it and falls back to UTC.
    2. ``/etc/localtime`` as a link into a zoneinfo directory (systemd's ``timedatectl`` and Debian set it so).
    3. ``/etc/timezone`` (Debian's name file), when ``/etc/localtime`` is a plain copy.

    Args:
        environ: the environment to read ``TZ`` from (default: this process's).
        root: the file system root (tests point it at a directory of their own).
    """
    env = os.environ if environ is None else environ
    tz = env.get("TZ")
    if tz:
        text = tz.removeprefix(":")
        found = _try(_name_from_path(text) if text.startswith("/") else text, ZoneSource.TZ_VARIABLE)
        if found is not None:
            return found
        return HomeZone(
            ZoneInfo("UTC"),
            ZoneSource.FALLBACK,
            f"TZ={tz!r} names no IANA time zone; using UTC: set [hub] timezone in hub.toml",
        )
    localtime = root / "etc" / "localtime"
    try:
        target = os.readlink(localtime)
    except OSError:
        target = None
    found = _try(_name_from_path(target) if target is not None else None, ZoneSource.ETC_LOCALTIME)
    if found is not None:
        return found
    try:
        named = (root / "etc" / "timezone").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        named = ""
    found = _try(named or None, ZoneSource.ETC_TIMEZONE)
    if found is not None:
        return found
    return HomeZone(
        ZoneInfo("UTC"),
        ZoneSource.FALLBACK,
        "the system names no time zone (no TZ, no /etc/localtime link, no /etc/timezone); using UTC: "
        "set [hub] timezone in hub.toml",
    )
