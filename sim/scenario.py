"""A simulated home described in TOML, parsed once into validated, frozen types.

Format (see ``sim/scenarios/hypertension-diabetes.toml`` for a complete example)::

    [home]
    name = "Mrs Example"
    date = 2024-03-04          # the simulated day (TOML date)
    timezone = "Europe/London" # IANA zone of the times of day; default "UTC"
    seed = 7                   # random jitter of event times comes from this seed
    jitter_seconds = 90        # each event moves by up to ± this many seconds
    start = "06:00"            # replay starts here (default "00:00") ...
    end = "23:30"              # ... and ends here (default "23:59:59")

    [[residents]]
    id = "r1"
    name = "Margaret"
    language = "en"

    [[devices]]
    id = "bp-1"
    kind = "blood_pressure"    # blood_pressure glucose oximeter thermometer scale heart_rate pendant
    address = "C0:00:00:00:01:01"
    name = "BP-Cuff"
    resident = "r1"
    # optional: manufacturer model serial firmware bonding_required max_bonds memory_size clock_drift_ppm
    #           battery battery_per_measurement battery_per_day advertise_seconds clock_start key (pendant, hex)

    [[timeline]]
    at = "07:30"               # "HH:MM" or "HH:MM:SS"; optional day = 1 for the next day
    device = "bp-1"
    kind = "measure"           # measure press long_press cancel checkin battery_change battery_low out_of_range
    systolic = 142
    diastolic = 91
    pulse = 72

Measurement values per device kind (required in capitals in the table of :data:`MEASURE_FIELDS`). ``battery_low``
takes ``level`` (default 10); ``out_of_range`` takes ``until`` (a time of day on the same or ``until_day``).

Every error is a :class:`ScenarioError` naming the file, the key (``timeline[3].systolic``) and what was expected.
"""

from __future__ import annotations

import dataclasses
import enum
import random
import re
import tomllib
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from protocols.devices import DeviceKind
from protocols.profiles import profile_of
from sim.devices.options import DeviceOptions
from sim.devices.registry import peripheral_class

_ADDRESS = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$")
_TIME = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2}))?$")
_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


class ScenarioError(ValueError):
    """A scenario file that is not valid, naming the file, the key and what was expected."""

    def __init__(self, file: str, key: str, expected: str, got: object = None) -> None:
        self.file = file
        self.key = key
        self.expected = expected
        suffix = "" if got is None else f", got {got!r}"
        super().__init__(f"{file}: {key}: expected {expected}{suffix}")


class EventKind(enum.Enum):
    """What can happen on the timeline."""

    MEASURE = "measure"
    PRESS = "press"
    LONG_PRESS = "long_press"
    CANCEL = "cancel"
    CHECKIN = "checkin"
    BATTERY_CHANGE = "battery_change"
    BATTERY_LOW = "battery_low"
    OUT_OF_RANGE = "out_of_range"


PENDANT_EVENTS = frozenset({EventKind.PRESS, EventKind.LONG_PRESS, EventKind.CANCEL, EventKind.CHECKIN})

# What a ``measure`` event may give each kind is its simulated peripheral's ``MEASURE_FIELDS`` (the peripheral its
# device profile names, ``sim.devices.registry``): value name -> (type, required).


_DEVICE_KEYS = {
    "id",
    "kind",
    "address",
    "name",
    "resident",
    "manufacturer",
    "model",
    "serial",
    "firmware",
    "bonding_required",
    "max_bonds",
    "memory_size",
    "clock_drift_ppm",
    "battery",
    "battery_per_measurement",
    "battery_per_day",
    "advertise_seconds",
    "clock_start",
    "key",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Resident:
    """A person living in the home."""

    id: str
    name: str
    language: str


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One device of the home: its kind, owner and product options."""

    kind: DeviceKind
    resident: str
    options: DeviceOptions

    @property
    def id(self) -> str:
        """The device id used by the timeline."""
        return self.options.id


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One timeline entry, at ``day`` days after the scenario date, at time of day ``at``.

    ``values`` holds measurement values (``measure``) or ``level`` (``battery_low``); ``until`` is the end of an
    ``out_of_range`` period, as an offset from the scenario date's midnight.
    """

    index: int
    at: timedelta
    device: str
    kind: EventKind
    values: Mapping[str, float | int | str | bool] = dataclasses.field(default_factory=dict)
    until: timedelta | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Scheduled:
    """An event placed on the wall clock (jitter applied)."""

    when: datetime
    event: Event
    until: datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Scenario:
    """A validated home scenario."""

    path: str
    name: str
    day: date
    timezone: str
    seed: int
    jitter_seconds: float
    start: timedelta
    end: timedelta
    residents: tuple[Resident, ...]
    devices: tuple[DeviceSpec, ...]
    timeline: tuple[Event, ...]

    @property
    def tz(self) -> ZoneInfo:
        """The home's time zone."""
        return ZoneInfo(self.timezone)

    @property
    def midnight(self) -> datetime:
        """The start of the scenario's day in the home's zone."""
        return datetime.combine(self.day, time(0, 0), tzinfo=self.tz)

    @property
    def start_time(self) -> datetime:
        """When the replay starts."""
        return self.midnight + self.start

    @property
    def end_time(self) -> datetime:
        """When the replay ends."""
        return self.midnight + self.end

    def device(self, device_id: str) -> DeviceSpec:
        """The device named ``device_id``."""
        for spec in self.devices:
            if spec.id == device_id:
                return spec
        raise KeyError(device_id)

    def schedule(self, seed: int | None = None) -> tuple[Scheduled, ...]:
        """The timeline on the wall clock, each event moved by a random jitter drawn from ``seed``.

        The same seed always gives the same schedule; events of one device keep their order.
        """
        rng = random.Random(self.seed if seed is None else seed)  # noqa: S311 - reproducible jitter, not security
        last: dict[str, datetime] = {}
        placed: list[Scheduled] = []
        for event in self.timeline:
            shift = timedelta(seconds=rng.uniform(-self.jitter_seconds, self.jitter_seconds))
            when = max(self.midnight + event.at + shift, self.start_time)
            previous = last.get(event.device)
            if previous is not None and when <= previous:
                when = previous + timedelta(seconds=1)
            last[event.device] = when
            until = None if event.until is None else max(self.midnight + event.until + shift, when)
            placed.append(Scheduled(when, event, until))
        placed.sort(key=lambda s: (s.when, s.event.index))
        return tuple(placed)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file.

    Raises:
        ScenarioError: the file cannot be read or is not a valid scenario.
    """
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ScenarioError(file, "(file)", "a readable TOML file", str(error)) from error
    return parse_scenario(text, file)


def parse_scenario(text: str, file: str = "<scenario>") -> Scenario:
    """Validate scenario TOML ``text`` (``file`` names it in errors)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(file, "(syntax)", "valid TOML", str(error)) from error
    return _Parser(file).scenario(data)


class _Parser:
    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str, expected: str, got: object = None) -> ScenarioError:
        return ScenarioError(self.file, key, expected, got)

    def table(self, value: object, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, "a table", value)
        return value

    def array(self, data: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
        value = data.get(key)
        if not isinstance(value, list) or not value:
            raise self.fail(key, f"a non-empty array of tables ([[{key}]])", value)
        return [self.table(item, f"{key}[{i}]") for i, item in enumerate(value)]

    def unknown(self, table: Mapping[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(f"{where}.{key}", f"one of {', '.join(sorted(allowed))} (unknown key)")

    def string(self, table: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
        value = table.get(key, default)
        if not isinstance(value, str) or not value:
            raise self.fail(f"{where}.{key}", "a non-empty string", value)
        return value

    def ident(self, table: Mapping[str, Any], key: str, where: str) -> str:
        value = self.string(table, key, where)
        if not _ID.match(value):
            raise self.fail(f"{where}.{key}", "an id of letters, digits, '_', '.', '-'", value)
        return value

    def number(
        self, table: Mapping[str, Any], key: str, where: str, default: float, *, low: float, high: float
    ) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise self.fail(f"{where}.{key}", f"a number within {low}..{high}", value)
        return float(value)

    def integer(self, table: Mapping[str, Any], key: str, where: str, default: int, *, low: int, high: int) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(f"{where}.{key}", f"an integer within {low}..{high}", value)
        return value

    def boolean(self, table: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(f"{where}.{key}", "true or false", value)
        return value

    def time_of_day(self, table: Mapping[str, Any], key: str, where: str, default: str | None = None) -> timedelta:
        value = table.get(key, default)
        if isinstance(value, time):
            return timedelta(hours=value.hour, minutes=value.minute, seconds=value.second)
        match = _TIME.match(value) if isinstance(value, str) else None
        if match is None:
            raise self.fail(f"{where}.{key}", 'a time of day "HH:MM" or "HH:MM:SS"', value)
        hours, minutes, seconds = int(match[1]), int(match[2]), int(match[3] or 0)
        if hours > 23 or minutes > 59 or seconds > 59:
            raise self.fail(f"{where}.{key}", "a time of day within 00:00..23:59:59", value)
        return timedelta(hours=hours, minutes=minutes, seconds=seconds)

    def scenario(self, data: Mapping[str, Any]) -> Scenario:
        self.unknown(data, {"home", "residents", "devices", "timeline"}, "(top level)")
        home = self.table(data.get("home"), "home")
        self.unknown(home, {"name", "date", "timezone", "seed", "jitter_seconds", "start", "end"}, "home")
        day = home.get("date")
        if not isinstance(day, date) or isinstance(day, datetime):
            raise self.fail("home.date", "a TOML date such as 2024-03-04", day)
        timezone = self.string(home, "timezone", "home", "UTC")
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise self.fail("home.timezone", "an IANA time zone such as Europe/London", timezone) from error
        start = self.time_of_day(home, "start", "home", "00:00")
        end = self.time_of_day(home, "end", "home", "23:59:59")
        if end <= start:
            raise self.fail("home.end", "a time after home.start", home.get("end"))
        residents = tuple(self.resident(t, f"residents[{i}]") for i, t in enumerate(self.array(data, "residents")))
        resident_ids = [r.id for r in residents]
        if len(set(resident_ids)) != len(resident_ids):
            raise self.fail("residents", "unique resident ids", resident_ids)
        devices = tuple(
            self.device(t, f"devices[{i}]", set(resident_ids)) for i, t in enumerate(self.array(data, "devices"))
        )
        for field in ("id", "address"):
            values = [getattr(d.options, field) for d in devices]
            if len(set(values)) != len(values):
                raise self.fail("devices", f"a unique {field} per device", values)
        kinds = {d.id: d.kind for d in devices}
        timeline = tuple(self.event(t, i, kinds, end) for i, t in enumerate(self.array(data, "timeline")))
        return Scenario(
            path=self.file,
            name=self.string(home, "name", "home"),
            day=day,
            timezone=timezone,
            seed=self.integer(home, "seed", "home", 0, low=0, high=2**63 - 1),
            jitter_seconds=self.number(home, "jitter_seconds", "home", 0.0, low=0.0, high=3600.0),
            start=start,
            end=end,
            residents=residents,
            devices=devices,
            timeline=timeline,
        )

    def resident(self, table: Mapping[str, Any], where: str) -> Resident:
        self.unknown(table, {"id", "name", "language"}, where)
        return Resident(
            id=self.ident(table, "id", where),
            name=self.string(table, "name", where),
            language=self.string(table, "language", where, "en"),
        )

    def device(self, table: Mapping[str, Any], where: str, residents: set[str]) -> DeviceSpec:
        self.unknown(table, _DEVICE_KEYS, where)
        kind_text = table.get("kind")
        try:
            kind = DeviceKind(str(kind_text))
        except ValueError as error:
            raise self.fail(f"{where}.kind", f"one of {', '.join(k.value for k in DeviceKind)}", kind_text) from error
        address = self.string(table, "address", where)
        if not _ADDRESS.match(address):
            raise self.fail(f"{where}.address", "a BLE address in upper-case hex, AA:BB:CC:DD:EE:FF", address)
        resident = self.string(table, "resident", where)
        if resident not in residents:
            raise self.fail(f"{where}.resident", f"one of the residents' ids {sorted(residents)}", resident)
        key: bytes | None = None
        if kind is DeviceKind.PENDANT:
            key_text = self.string(table, "key", where)
            try:
                key = bytes.fromhex(key_text)
            except ValueError as error:
                raise self.fail(f"{where}.key", "the pendant key as hex", key_text) from error
            if len(key) < 16:
                raise self.fail(f"{where}.key", "a key of at least 16 bytes", key_text)
        elif "key" in table:
            raise self.fail(f"{where}.key", "no key (only pendants have one)")
        clock_start = table.get("clock_start")
        if clock_start is not None and (not isinstance(clock_start, datetime) or clock_start.tzinfo is not None):
            raise self.fail(f"{where}.clock_start", "a TOML local date-time such as 2000-01-01T00:00:00", clock_start)
        max_bonds = table.get("max_bonds")
        if max_bonds is not None:
            max_bonds = self.integer(table, "max_bonds", where, 1, low=1, high=16)
        # Meters whose profile bonds refuse unencrypted access by default; the simulated pendant checks its key instead.
        bonded_default = kind is not DeviceKind.PENDANT and profile_of(kind).needs_bond
        device_id = self.ident(table, "id", where)
        options = DeviceOptions(
            id=device_id,
            address=address,
            name=self.string(table, "name", where),
            manufacturer=self.string(table, "manufacturer", where, "carehub sim"),
            model=self.string(table, "model", where, kind.value),
            serial=self.string(table, "serial", where, device_id.upper()),
            firmware=self.string(table, "firmware", where, "1.0.0"),
            bonding_required=self.boolean(table, "bonding_required", where, bonded_default),
            max_bonds=max_bonds,
            memory_size=self.integer(table, "memory_size", where, 100, low=1, high=65535),
            clock_drift_ppm=self.number(table, "clock_drift_ppm", where, 0.0, low=-10_000.0, high=10_000.0),
            battery=self.number(table, "battery", where, 100.0, low=0.0, high=100.0),
            battery_per_measurement=self.number(table, "battery_per_measurement", where, 0.05, low=0.0, high=100.0),
            battery_per_day=self.number(table, "battery_per_day", where, 0.1, low=0.0, high=100.0),
            advertise_seconds=self.number(table, "advertise_seconds", where, 60.0, low=0.001, high=86_400.0),
            clock_start=clock_start,
            key=key,
        )
        return DeviceSpec(kind=kind, resident=resident, options=options)

    def event(self, table: Mapping[str, Any], index: int, kinds: Mapping[str, DeviceKind], end: timedelta) -> Event:
        where = f"timeline[{index}]"
        device = self.string(table, "device", where)
        if device not in kinds:
            raise self.fail(f"{where}.device", f"one of the devices' ids {sorted(kinds)}", device)
        device_kind = kinds[device]
        kind_text = table.get("kind")
        try:
            kind = EventKind(kind_text)
        except ValueError as error:
            raise self.fail(f"{where}.kind", f"one of {', '.join(k.value for k in EventKind)}", kind_text) from error
        day = self.integer(table, "day", where, 0, low=0, high=365)
        at = timedelta(days=day) + self.time_of_day(table, "at", where)
        common = {"at", "day", "device", "kind"}
        if kind in PENDANT_EVENTS:
            if device_kind is not DeviceKind.PENDANT:
                raise self.fail(f"{where}.kind", f"an event a {device_kind.value} supports (not {kind.value})")
            self.unknown(table, common, where)
            return Event(index, at, device, kind)
        if kind is EventKind.MEASURE:
            if device_kind is DeviceKind.PENDANT:
                raise self.fail(f"{where}.kind", "press, long_press, cancel or checkin for a pendant", kind.value)
            fields = peripheral_class(device_kind).MEASURE_FIELDS
            self.unknown(table, common | set(fields), where)
            values: dict[str, float | int | str | bool] = {}
            for name, (kind_of_value, required) in fields.items():
                if name not in table:
                    if required:
                        raise self.fail(f"{where}.{name}", f"a {kind_of_value} (required for a {device_kind.value})")
                    continue
                values[name] = self.value(table, name, where, kind_of_value)
            return Event(index, at, device, kind, values)
        if kind is EventKind.BATTERY_LOW:
            self.unknown(table, common | {"level"}, where)
            return Event(
                index, at, device, kind, {"level": self.number(table, "level", where, 10.0, low=0.0, high=100.0)}
            )
        if kind is EventKind.OUT_OF_RANGE:
            self.unknown(table, common | {"until", "until_day"}, where)
            until_day = self.integer(table, "until_day", where, day, low=0, high=366)
            until = timedelta(days=until_day) + self.time_of_day(table, "until", where)
            if until <= at:
                raise self.fail(f"{where}.until", "a time after 'at'", table.get("until"))
            return Event(index, at, device, kind, until=until)
        self.unknown(table, common, where)
        return Event(index, at, device, kind)

    def value(
        self, table: Mapping[str, Any], name: str, where: str, kind: str | tuple[str, ...]
    ) -> float | int | str | bool:
        value = table[name]
        if kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise self.fail(f"{where}.{name}", "a non-negative number", value)
            return value
        if kind == "bool":
            if not isinstance(value, bool):
                raise self.fail(f"{where}.{name}", "true or false", value)
            return value
        if not isinstance(value, str) or value not in kind:
            raise self.fail(f"{where}.{name}", f"one of {', '.join(kind)}", value)
        return value
