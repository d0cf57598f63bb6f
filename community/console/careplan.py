"""Care plans: what each resident is expected to measure, and when (issue 18 item 2).

A care plan names, per resident, the measurement kinds the doctor asked for, each either at fixed local times of day
(``blood_pressure`` at 08:00 and 20:00) or a number of times per local day at any time (``weight`` once a day), and
the home's time zone those times are read in. The upload rate (:mod:`community.console.analytics`) counts the
scheduled slots of a plan against the readings the platform stored.

How this relates to the hub's schedule: a hub's ``hub.toml`` may carry ``[[residents.schedule]]`` entries
(``vital``, ``due``, ``grace_s``; :mod:`gateway.config`) from which the hub reminds the resident when a reading is
missing. Those entries never reach the platform: no record carries them. The care plan is the platform's own copy of
the same intent, set by the doctor with ``carehub platform careplan set``. The kind names are the hub's
(``gateway.config.SCHEDULABLE``: ``blood_pressure``, ``glucose``, ``weight``, ``spo2``, ``temperature``, ``pulse``) and
a fixed time is the hub's ``due``, so an installer copies the plan into ``hub.toml`` one to one, and
:func:`plan_from_schedule` makes the plan of a hub's schedule; the slot tolerance the
platform uses by default is the hub's (:data:`community.console.analytics.DEFAULT_TOLERANCE`), so a reading that
stops the hub's reminder also meets the platform's slot.

Storage: the console database (``console.db`` beside the platform database, :func:`console_database`), in tables
prefixed ``plan_``. A plan is replaced as a whole.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as _dt
import enum
import json
import re
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Annotated, Final, Protocol, Self, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer

from community.config import PlatformConfigError, load_platform_config
from community.storage import StorageError, StoredReading
from community.storage_common import make_private
from community.storage_open import open_storage

__all__ = [
    "MAX_PER_DAY",
    "CarePlan",
    "CarePlanError",
    "CarePlanStore",
    "CarePlans",
    "KindPlan",
    "MeasurementKind",
    "app",
    "console_database",
    "parse_kind_plan",
    "plan_from_options",
    "plan_from_schedule",
]

_T = TypeVar("_T")

MAX_PER_DAY: Final = 24
"""At most this many measurements of one kind per day."""
MAX_RESIDENT_CHARS: Final = 256
"""Resident ids are text of 1..256 characters (as in ``protocols.messages``)."""


class CarePlanError(ValueError):
    """A care plan that cannot be used (bad time, zone, count, resident id), or a console database problem."""


class MeasurementKind(enum.StrEnum):
    """A kind of measurement a plan can ask for; the names are the hub's (``gateway.config.SCHEDULABLE``)."""

    BLOOD_PRESSURE = "blood_pressure"
    GLUCOSE = "glucose"
    WEIGHT = "weight"
    SPO2 = "spo2"
    TEMPERATURE = "temperature"
    PULSE = "pulse"


_KIND_ORDER: Final = {kind: i for i, kind in enumerate(MeasurementKind)}


@dataclass(frozen=True, slots=True)
class KindPlan:
    """One kind of measurement in a plan.

    Attributes:
        kind: what to measure.
        times: local times of day (whole minutes, sorted, distinct); empty for a count-per-day plan.
        per_day: how many a day; equals ``len(times)`` when times are given.

    Raises:
        CarePlanError: no times and no count, a count out of 1..24, times with seconds, repeated times, or a count
            that disagrees with the times.
    """

    kind: MeasurementKind
    times: tuple[_dt.time, ...] = ()
    per_day: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.kind, MeasurementKind):
            raise CarePlanError(f"kind must be a MeasurementKind, not {self.kind!r}")
        times = tuple(sorted(self.times))
        for t in times:
            if not isinstance(t, _dt.time) or t.tzinfo is not None or t.second or t.microsecond:
                raise CarePlanError(f"{self.kind}: times are local HH:MM without seconds or zone, not {t!r}")
        if len(set(times)) != len(times):
            raise CarePlanError(f"{self.kind}: a time is given twice")
        per_day = self.per_day or len(times)
        if times and per_day != len(times):
            raise CarePlanError(f"{self.kind}: {per_day} a day does not match {len(times)} times")
        if type(per_day) is not int or not 1 <= per_day <= MAX_PER_DAY:
            raise CarePlanError(f"{self.kind}: expected 1..{MAX_PER_DAY} measurements a day, got {per_day!r}")
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "per_day", per_day)

    @property
    def spec(self) -> str:
        """As typed on the command line: ``08:00,20:00`` or ``2/day``."""
        if self.times:
            return ",".join(f"{t:%H:%M}" for t in self.times)
        return f"{self.per_day}/day"


def _check_zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name or name.startswith("/") or ".." in name:
        raise CarePlanError(f"time zone {name!r}: expected an IANA name like Asia/Shanghai")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CarePlanError(f"time zone {name!r}: not in the system's zone database") from None


@dataclass(frozen=True, slots=True)
class CarePlan:
    """What one resident is expected to measure.

    Attributes:
        resident_id: whose plan it is (the id the hub files readings under).
        timezone: the home's IANA time zone; plan times are local times in it.
        measurements: one :class:`KindPlan` per kind (sorted in :class:`MeasurementKind` order).
        starts: when the plan takes effect (UTC); slots falling due before it are not scheduled, so readings taken
            while the home was being installed (the installation test) never count against the home.

    Raises:
        CarePlanError: an empty or too long resident id, an unknown zone, no measurements, a kind given twice, or a
            naive ``starts``.
    """

    resident_id: str
    timezone: str
    measurements: tuple[KindPlan, ...]
    starts: _dt.datetime

    def __post_init__(self) -> None:
        if not isinstance(self.resident_id, str) or not 0 < len(self.resident_id) <= MAX_RESIDENT_CHARS:
            raise CarePlanError(f"resident id must be text of 1..{MAX_RESIDENT_CHARS} characters")
        _check_zone(self.timezone)
        measurements = tuple(sorted(self.measurements, key=lambda m: _KIND_ORDER[m.kind]))
        if not measurements:
            raise CarePlanError(f"the plan for {self.resident_id} names no measurement")
        kinds = [m.kind for m in measurements]
        if len(set(kinds)) != len(kinds):
            raise CarePlanError(f"the plan for {self.resident_id} names a kind twice")
        if not isinstance(self.starts, _dt.datetime) or self.starts.utcoffset() is None:
            raise CarePlanError("starts must be a timezone-aware datetime")
        object.__setattr__(self, "measurements", measurements)
        object.__setattr__(self, "starts", self.starts.astimezone(_dt.UTC))

    @property
    def zone(self) -> ZoneInfo:
        """The home's time zone."""
        return ZoneInfo(self.timezone)

    def of(self, kind: MeasurementKind) -> KindPlan | None:
        """The plan for ``kind``, if the resident is to measure it."""
        return next((m for m in self.measurements if m.kind is kind), None)

    @property
    def per_day(self) -> int:
        """Scheduled measurements a day, all kinds together."""
        return sum(m.per_day for m in self.measurements)


_TIME = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
_COUNT = re.compile(r"(\d{1,2})\s*(?:/\s*day|x)")


def parse_kind_plan(kind: MeasurementKind, text: str) -> KindPlan:
    """``08:00,20:00`` (local times of day) or ``2/day`` / ``2x`` (times a day, at any time) for ``kind``.

    Raises:
        CarePlanError: anything else, naming the kind and the text.
    """
    spec = text.strip().lower()
    count = _COUNT.fullmatch(spec)
    if count:
        return KindPlan(kind, (), int(count.group(1)))
    times: list[_dt.time] = []
    for part in spec.split(","):
        match = _TIME.fullmatch(part.strip())
        if match is None:
            raise CarePlanError(f"{kind}: {text!r}: expected times HH:MM[,HH:MM...] or a count like 2/day")
        times.append(_dt.time(int(match.group(1)), int(match.group(2))))
    return KindPlan(kind, tuple(times))


def plan_from_schedule(
    resident_id: str, timezone: str, schedule: Iterable[tuple[str, _dt.time]], starts: _dt.datetime
) -> CarePlan:
    """The care plan of a hub's schedule: its ``[[residents.schedule]]`` entries as ``(vital, due)`` pairs (the
    ``vital`` and ``due`` of ``gateway.config.ScheduleConfig``), read in the hub's ``[hub] timezone``.

    Raises:
        CarePlanError: a vital name the hub does not schedule, a due time with seconds, a time given twice, or an
            empty schedule.
    """
    times: dict[MeasurementKind, list[_dt.time]] = {}
    for vital, due in schedule:
        try:
            kind = MeasurementKind(vital)
        except ValueError:
            raise CarePlanError(f"schedule vital {vital!r}: expected one of {', '.join(MeasurementKind)}") from None
        times.setdefault(kind, []).append(due)
    return CarePlan(resident_id, timezone, tuple(KindPlan(k, tuple(t)) for k, t in times.items()), starts)


def console_database(platform_database: Path) -> Path:
    """The console's database: ``console.db`` in the platform database's directory."""
    return platform_database.with_name("console.db")


_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS plan_residents (resident TEXT PRIMARY KEY, timezone TEXT NOT NULL,"
    " starts_us INTEGER NOT NULL, updated_us INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS plan_kinds (resident TEXT NOT NULL REFERENCES plan_residents (resident)"
    " ON DELETE CASCADE, kind TEXT NOT NULL, times TEXT NOT NULL, per_day INTEGER NOT NULL,"
    " PRIMARY KEY (resident, kind))",
)
_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


def _micros(t: _dt.datetime) -> int:
    return (t - _EPOCH) // _dt.timedelta(microseconds=1)


def _from_micros(us: int) -> _dt.datetime:
    return _EPOCH + _dt.timedelta(microseconds=us)


class CarePlans(Protocol):
    """What the console needs from a care plan store (:class:`CarePlanStore` is the SQLite one)."""

    async def put(self, plan: CarePlan, updated_at: _dt.datetime) -> None:
        """Store ``plan``, replacing the resident's previous plan."""
        ...

    async def get(self, resident_id: str) -> CarePlan | None:
        """The resident's plan, ``None`` if there is none."""
        ...

    async def all(self) -> list[CarePlan]:
        """Every plan, by resident id."""
        ...

    async def delete(self, resident_id: str) -> bool:
        """Remove the resident's plan; ``False`` if there was none."""
        ...


class CarePlanStore:
    """Care plans in the console database (SQLite, tables ``plan_*``), all work on one thread.

    Use as ``async with CarePlanStore(path) as store``. The file is created mode 0600 (it names residents).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="careplan-db")
        self._conn: sqlite3.Connection | None = None

    async def __aenter__(self) -> Self:
        try:
            await self._run(self._open)
        except BaseException:
            self._executor.shutdown(wait=True)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._run(self._close)
        finally:
            self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[[], _T]) -> _T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except sqlite3.Error as exc:
            raise CarePlanError(f"console database {self.path}: {exc}") from exc

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            make_private(self.path)
        except OSError as exc:
            raise CarePlanError(f"console database {self.path}: {exc.strerror or exc}") from exc
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute("COMMIT")
        except sqlite3.Error:
            conn.close()
            raise
        self._conn = conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise CarePlanError(f"console database {self.path} is not open")
        return self._conn

    async def put(self, plan: CarePlan, updated_at: _dt.datetime) -> None:
        """Store ``plan``, replacing the resident's previous plan, in one transaction."""

        def write() -> None:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM plan_kinds WHERE resident = ?", (plan.resident_id,))
                conn.execute(
                    "INSERT OR REPLACE INTO plan_residents (resident, timezone, starts_us, updated_us)"
                    " VALUES (?, ?, ?, ?)",
                    (plan.resident_id, plan.timezone, _micros(plan.starts), _micros(updated_at)),
                )
                conn.executemany(
                    "INSERT INTO plan_kinds (resident, kind, times, per_day) VALUES (?, ?, ?, ?)",
                    [
                        (plan.resident_id, m.kind.value, ",".join(f"{t:%H:%M}" for t in m.times), m.per_day)
                        for m in plan.measurements
                    ],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        await self._run(write)

    def _plans(self, where: str, args: tuple[str, ...]) -> list[CarePlan]:
        conn = self._db()
        heads = conn.execute(
            f"SELECT resident, timezone, starts_us FROM plan_residents {where} ORDER BY resident",  # noqa: S608 - fixed text
            args,
        ).fetchall()
        plans: list[CarePlan] = []
        for resident, timezone, starts_us in heads:
            rows = conn.execute(
                "SELECT kind, times, per_day FROM plan_kinds WHERE resident = ?", (resident,)
            ).fetchall()
            try:
                kinds = tuple(
                    KindPlan(
                        MeasurementKind(kind),
                        tuple(_dt.time.fromisoformat(t) for t in times.split(",") if t),
                        int(per_day),
                    )
                    for kind, times, per_day in rows
                )
                plans.append(CarePlan(resident, timezone, kinds, _from_micros(int(starts_us))))
            except (ValueError, TypeError) as exc:
                raise CarePlanError(
                    f"console database {self.path}: the plan of {resident!r} is damaged: {exc}"
                ) from exc
        return plans

    async def get(self, resident_id: str) -> CarePlan | None:
        """The resident's plan, ``None`` if there is none."""
        plans = await self._run(lambda: self._plans("WHERE resident = ?", (resident_id,)))
        return plans[0] if plans else None

    async def all(self) -> list[CarePlan]:
        """Every plan, by resident id."""
        return await self._run(lambda: self._plans("", ()))

    async def delete(self, resident_id: str) -> bool:
        """Remove the resident's plan; ``False`` if there was none."""

        def remove() -> bool:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM plan_kinds WHERE resident = ?", (resident_id,))
                gone = conn.execute("DELETE FROM plan_residents WHERE resident = ?", (resident_id,)).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return gone > 0

        return await self._run(remove)


# --- the command line: carehub platform careplan ... ---------------------------------------------------------------

app = typer.Typer(help="Residents' care plans: what to measure and when.", no_args_is_help=True, add_completion=False)

_ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The platform's TOML config file.")]
_KindOption = Annotated[
    str | None, typer.Option(help="Local times HH:MM[,HH:MM...] or a count like 1/day.", show_default=False)
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    one_line = " ".join(message.split())
    typer.echo(f"error: {one_line}", err=True)
    return typer.Exit(code)


def _platform_database(config: Path) -> Path:
    try:
        return load_platform_config(config).database
    except PlatformConfigError as exc:
        raise _fail(str(exc)) from None


def _store_path(config: Path) -> Path:
    return console_database(_platform_database(config))


def _run_store(path: Path, work: Callable[[CarePlanStore], Awaitable[_T]]) -> _T:
    async def main() -> _T:
        async with CarePlanStore(path) as store:
            return await work(store)

    try:
        return asyncio.run(main())
    except CarePlanError as exc:
        raise _fail(str(exc), 1) from None


def _parse_starts(text: str | None, zone: ZoneInfo, now: _dt.datetime) -> _dt.datetime:
    if text is None:
        return now
    try:
        if len(text) == 10:
            day = _dt.date.fromisoformat(text)
            return _dt.datetime.combine(day, _dt.time(0), tzinfo=zone)
        when = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise CarePlanError(f"--starts {text!r}: expected a date YYYY-MM-DD or a time YYYY-MM-DDTHH:MM") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=zone)


_OPTION: Final = {MeasurementKind.BLOOD_PRESSURE: "bp"}


def plan_from_options(
    resident: str, timezone: str, specs: Mapping[MeasurementKind, str | None], starts: str | None, now: _dt.datetime
) -> CarePlan:
    """The plan the ``careplan set`` options describe.

    Raises:
        CarePlanError: any bad option, naming it.
    """
    zone = _check_zone(timezone)
    kinds: list[KindPlan] = []
    for kind, text in specs.items():
        if text is None:
            continue
        try:
            kinds.append(parse_kind_plan(kind, text))
        except CarePlanError as exc:
            detail = str(exc).removeprefix(f"{kind}: ")
            raise CarePlanError(f"--{_OPTION.get(kind, kind.value)} {detail}") from None
    if not kinds:
        raise CarePlanError("give at least one measurement (--bp, --glucose, --weight, --spo2, --temperature, --pulse)")
    return CarePlan(resident, timezone, tuple(kinds), _parse_starts(starts, zone, now))


def _plan_dict(plan: CarePlan) -> dict[str, object]:
    return {
        "resident": plan.resident_id,
        "timezone": plan.timezone,
        "starts": plan.starts.isoformat(),
        "measurements": {m.kind.value: m.spec for m in plan.measurements},
    }


def _plan_line(plan: CarePlan) -> str:
    kinds = " ".join(f"{m.kind.value}={m.spec}" for m in plan.measurements)
    local = plan.starts.astimezone(plan.zone)
    return f"{plan.resident_id} ({plan.timezone}, from {local:%Y-%m-%d %H:%M}): {kinds}"


@app.command("set")
def set_command(  # noqa: PLR0917 - one option per measurement kind (typer)
    resident: Annotated[str, typer.Argument(help="The resident id (as the hub files readings).")],
    config: _ConfigOption,
    timezone: Annotated[str, typer.Option("--timezone", help="The home's IANA time zone, e.g. Asia/Shanghai.")],
    bp: _KindOption = None,
    glucose: _KindOption = None,
    weight: _KindOption = None,
    spo2: _KindOption = None,
    temperature: _KindOption = None,
    pulse: _KindOption = None,
    starts: Annotated[
        str | None, typer.Option(help="When the plan takes effect (YYYY-MM-DD local, or a time); default now.")
    ] = None,
) -> None:
    """Set (replace) a resident's care plan."""
    path = _store_path(config)
    specs = {
        MeasurementKind.BLOOD_PRESSURE: bp,
        MeasurementKind.GLUCOSE: glucose,
        MeasurementKind.WEIGHT: weight,
        MeasurementKind.SPO2: spo2,
        MeasurementKind.TEMPERATURE: temperature,
        MeasurementKind.PULSE: pulse,
    }
    now = _dt.datetime.now(_dt.UTC)
    try:
        plan = plan_from_options(resident, timezone, specs, starts, now)
    except CarePlanError as exc:
        raise _fail(str(exc)) from None
    _run_store(path, lambda store: store.put(plan, now))
    typer.echo(f"care plan set: {_plan_line(plan)}")


@app.command("show")
def show_command(
    config: _ConfigOption,
    resident: Annotated[str | None, typer.Argument(help="One resident; every plan when left out.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array instead of lines.")] = False,
) -> None:
    """Show care plans (one line each)."""
    path = _store_path(config)

    if resident is None:
        plans = _run_store(path, lambda store: store.all())
    else:
        found = _run_store(path, lambda store: store.get(resident))
        plans = [] if found is None else [found]
    if resident is not None and not plans:
        raise _fail(f"resident {resident!r} has no care plan (carehub platform careplan set)", 1)
    if as_json:
        typer.echo(json.dumps([_plan_dict(p) for p in plans], ensure_ascii=False))
        return
    for plan in plans:
        typer.echo(_printable(_plan_line(plan)))


@app.command("remove")
def remove_command(
    resident: Annotated[str, typer.Argument(help="The resident id.")],
    config: _ConfigOption,
) -> None:
    """Remove a resident's care plan (their upload rate is then not judged)."""
    path = _store_path(config)
    if not _run_store(path, lambda store: store.delete(resident)):
        raise _fail(f"resident {resident!r} has no care plan", 1)
    typer.echo(f"care plan of {resident} removed")


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


@app.command("rate")
def rate_command(
    resident: Annotated[str, typer.Argument(help="The resident id.")],
    config: _ConfigOption,
    days: Annotated[int, typer.Option(help="The window, in days before now.", min=1, max=90)] = 7,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of lines.")] = False,
) -> None:
    """A resident's upload rate from the stored readings: received / scheduled, and every missed measurement."""
    # analytics imports this module (the plan types), so it is imported when the command runs.
    from community.console.analytics import upload_rate, vital_readings  # noqa: PLC0415

    database = _platform_database(config)
    plan = _run_store(console_database(database), lambda store: store.get(resident))
    if plan is None:
        raise _fail(f"resident {resident!r} has no care plan (carehub platform careplan set)", 1)

    async def read() -> list[StoredReading]:
        async with open_storage(load_platform_config(config)) as storage:
            return await storage.readings()

    try:
        stored = asyncio.run(read())
    except StorageError as exc:
        raise _fail(str(exc), 1) from None
    now = _dt.datetime.now(_dt.UTC)
    rate = upload_rate(plan, vital_readings(stored, plan.zone, resident_id=resident), now=now, days=days)
    zone = plan.zone
    missed = [s.label for s in rate.missed]
    if as_json:
        data = {
            "resident": resident,
            "days": days,
            "window_start": rate.window_start.isoformat(),
            "window_end": rate.window_end.isoformat(),
            "scheduled": rate.scheduled,
            "received": rate.received,
            "percent": rate.percent,
            "failing": rate.failing,
            "missed": [
                {"kind": s.kind.value, "due": s.due.astimezone(zone).isoformat(), "label": s.label} for s in rate.missed
            ],
        }
        typer.echo(json.dumps(data, ensure_ascii=False))
        return
    if rate.scheduled == 0:
        typer.echo(_printable(f"{resident}: nothing scheduled in the last {days} days"))
        return
    verdict = " FAILING (under 90%)" if rate.failing else ""
    typer.echo(
        _printable(
            f"{resident}: {rate.received} of {rate.scheduled} scheduled measurements received in the last {days} days"
            f" ({rate.percent:.1f}%){verdict}"
        )
    )
    for label in missed:
        typer.echo(f"missed {label}")
