"""The hub's configuration: one TOML file parsed once into validated, frozen types.

Every error names the file, the key (dotted path) and what was expected, e.g.::

    hub.toml: broker.url: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got 'http://x'

Relative paths in the file are resolved against the file's own directory, so a config and its key files can be
moved together.

Keys of ``[hub]``:

- ``id``: the hub's id (lowercase letters, digits and '-', 2..63 long), as enrolled on the platform.
- ``key_file``: the hub's Ed25519 identity.
- ``timezone``: the home's time zone, an IANA name such as ``"Asia/Shanghai"`` or ``"Europe/Berlin"``.
  Measurement schedules (``residents[].schedule[].due``), the daily check-in deadline and every other "local time"
  are read in this zone; records always carry UTC. ``carehub provision init`` writes the installer's zone. When the
  key is absent the hub takes the system's zone (``TZ``, ``/etc/localtime``; see `gateway.clock.system_zone`) and
  falls back to UTC, with a note (:attr:`GatewayConfig.timezone_note`, for ``carehub doctor`` to show), when the
  system names none.

Keys of ``[broker]`` (where the uplink connects):

- ``url``: ``mqtts://HOST[:PORT]`` (or ``mqtt://``), one broker; or
- ``urls``: several such URLs, the MQTT listeners of one broker cluster's nodes (a NATS cluster's, issue 15 item 3),
  tried in this order: the uplink connects to the first, and moves on to the next (wrapping round) whenever a
  connection cannot be made or is lost. All with the same scheme: the TLS settings (``ca_file``, ``client_cert``,
  ``client_key``), credentials and client id are the same for each node. Give ``url`` or ``urls``, not both.
- ``username``, ``password`` or ``password_file``, ``ca_file``, ``client_cert``, ``client_key``, ``keepalive_s``,
  ``reconnect_max_s``.
"""

from __future__ import annotations

import logging
import re
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from gateway.clock import HomeZone, ZoneNameError, ZoneSource, system_zone, zone_named
from gateway.config_reader import MAX_CONFIG_BYTES, ConfigError, TableReader, parse_size, read_config_text
from gateway.config_writer import render_config
from gateway.thresholds import ThresholdError, ThresholdProblem, resolve_thresholds
from protocols.devices import DeviceKind

__all__ = [
    "ADDRESS",
    "ID_MAX",
    "MAX_BROKER_NODES",
    "MAX_CONFIG_BYTES",
    "NAME_MAX",
    "BrokerConfig",
    "BrokerNode",
    "ConfigError",
    "DeviceConfig",
    "DeviceKind",
    "GatewayConfig",
    "ResidentConfig",
    "ScheduleConfig",
    "load_config",
    "parse_config",
    "render_config",
]

_log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
ADDRESS = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}(/P)?$")
"""A device address as hub.toml takes it: six upper-case hex octets (``/P``: a public address)."""
_LANGUAGES = ("en", "zh")


#: The most broker URLs ``[broker] urls`` may list (a cluster's nodes; NATS clusters are 3 or 5 nodes).
MAX_BROKER_NODES = 16


@dataclass(frozen=True, slots=True)
class BrokerNode:
    """One broker node's MQTT listener: a host name or address and a port."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not self.host or not 0 < self.port < 65536:
            raise ValueError(f"a broker node needs a host and a port 1..65535, got {self.host!r}:{self.port}")

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Where the uplink connects, and how it authenticates.

    ``host`` and ``port`` are the first (or only) node; ``other_nodes`` the further nodes of a cluster, in the order
    the uplink tries them (:attr:`nodes` is all of them). TLS, credentials and keepalive apply to every node.
    """

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    ca_file: Path | None
    client_cert: Path | None
    client_key: Path | None
    keepalive_s: int
    reconnect_max_s: float = 30.0
    other_nodes: tuple[BrokerNode, ...] = ()

    @property
    def nodes(self) -> tuple[BrokerNode, ...]:
        """Every node, the first one first."""
        return (BrokerNode(self.host, self.port), *self.other_nodes)

    def urls(self) -> tuple[str, ...]:
        """The nodes as ``mqtt(s)://HOST:PORT`` URLs, in order (what ``[broker] url``/``urls`` holds)."""
        scheme = "mqtts" if self.tls else "mqtt"
        return tuple(f"{scheme}://{node}" for node in self.nodes)


# Measurements a doctor can schedule, by the name used in the config -> the rule engine's vital sign.
SCHEDULABLE = {
    "blood_pressure": "systolic",
    "glucose": "glucose",
    "weight": "weight",
    "spo2": "spo2",
    "temperature": "temperature",
    "pulse": "pulse",
}


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    """A measurement the resident should take every day: `vital` by `due` (local time), with `grace` to spare."""

    vital: str
    due: time
    grace_s: float


@dataclass(frozen=True, slots=True)
class ResidentConfig:
    """A person living in the home; thresholds come from the doctor's profile plus per-value overrides."""

    id: str
    name: str
    language: str
    profiles: tuple[str, ...]
    thresholds: Mapping[str, float]
    schedule: tuple[ScheduleConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """A provisioned BLE device; only these are ever connected to (invariant 6)."""

    address: str
    kind: DeviceKind
    resident: str
    name: str | None
    user_id: int | None
    pendant_key_file: Path | None
    # A multi-user scale's User Data Service consent code for `user_id` (its user index), written before each
    # session's subscriptions (issue 14 item 6); None: the meter needs no consent.
    consent_code: int | None = None


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The whole, validated configuration of one hub.

    `home_zone` is the home's time zone with where it came from (``[hub] timezone``, or the system's when absent);
    :attr:`timezone` is the zone itself, the one every local-time rule is built with.
    """

    source: Path
    hub_id: str
    hub_key_file: Path
    platform_key_file: Path
    broker: BrokerConfig
    storage_path: Path
    storage_max_bytes: int
    ble_link: str | None
    ble_max_connections: int
    clock_tolerance_s: float
    residents: tuple[ResidentConfig, ...]
    devices: tuple[DeviceConfig, ...]
    home_zone: HomeZone
    fallback_command: tuple[str, ...] | None = None
    fallback_webhook: str | None = None
    panic_ack_timeout_s: float = 5.0
    panic_cancel_window_s: float = 60.0
    panic_repeat_s: float = 30.0
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def timezone(self) -> ZoneInfo:
        """The home's time zone: schedules and check-in deadlines are local times in it."""
        return self.home_zone.zone

    @property
    def timezone_note(self) -> str:
        """Empty when ``hub.toml`` names the zone; otherwise where it came from and what to do about it."""
        zone = self.home_zone
        if zone.source is ZoneSource.CONFIG:
            return ""
        if zone.note:
            return zone.note
        return f"[hub] timezone is not set; using the system's zone {zone.name} (from {zone.source.value})"

    def resident(self, resident_id: str) -> ResidentConfig:
        """The resident with this id (validated to exist at load time for every device)."""
        for r in self.residents:
            if r.id == resident_id:
                return r
        raise KeyError(resident_id)

    def device(self, address: str) -> DeviceConfig | None:
        """The provisioned device at this address, or None for a stranger."""
        wanted = address.upper()
        for d in self.devices:
            if d.address == wanted:
                return d
        return None


def _parse_zone(hub: TableReader) -> HomeZone:
    """``[hub] timezone``: an IANA name checked against the system's zone database; the system's zone when absent."""
    name = hub.opt_str("timezone")
    if name is None:
        zone = system_zone()
        if zone.source is ZoneSource.FALLBACK:
            _log.warning("%s: hub.timezone: %s", hub.file, zone.note)
        return zone
    try:
        return HomeZone(zone_named(name), ZoneSource.CONFIG)
    except ZoneNameError as exc:
        raise hub.fail("timezone", f'expected an IANA time zone name like "Asia/Shanghai": {exc}') from None


def _parse_node(r: TableReader, key: str, url: object) -> tuple[bool, BrokerNode]:
    """One broker URL: whether it is ``mqtts``, and its node (``key`` names it in errors)."""
    if not isinstance(url, str) or not url:
        raise r.fail(key, f"expected a non-empty string mqtt(s)://HOST[:PORT], got {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise r.fail(key, f"expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got {url!r}")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        raise r.fail(key, f"port out of range in {url!r}") from None
    return parts.scheme == "mqtts", BrokerNode(parts.hostname, port)


def _parse_nodes(r: TableReader) -> tuple[bool, tuple[BrokerNode, ...]]:
    """``[broker] url`` (one node) or ``urls`` (a cluster's nodes, in the order they are tried)."""
    if "url" in r.table and "urls" in r.table:
        raise r.fail("urls", "give url (one broker) or urls (a cluster's nodes), not both")
    if "urls" not in r.table:
        tls, node = _parse_node(r, "url", r.str_("url"))
        return tls, (node,)
    urls = r.list_("urls")
    if not 1 <= len(urls) <= MAX_BROKER_NODES:
        raise r.fail("urls", f"expected 1..{MAX_BROKER_NODES} broker URLs, got {len(urls)}")
    parsed = [_parse_node(r, f"urls[{i}]", url) for i, url in enumerate(urls)]
    if len({tls for tls, _ in parsed}) > 1:
        raise r.fail("urls", "expected every URL with the same scheme (mqtts:// or mqtt://): TLS applies to every node")
    nodes = tuple(node for _, node in parsed)
    if len(set(nodes)) != len(nodes):
        raise r.fail("urls", f"expected each node once, got {', '.join(str(n) for n in nodes)}")
    return parsed[0][0], nodes


def _parse_broker(r: TableReader) -> BrokerConfig:
    tls, nodes = _parse_nodes(r)
    password = r.opt_str("password")
    password_file = r.opt_path("password_file")
    if password is None and password_file is not None:
        try:
            password = password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise r.fail("password_file", f"cannot read {password_file}: {exc.strerror}") from None
    return BrokerConfig(
        host=nodes[0].host,
        port=nodes[0].port,
        tls=tls,
        username=r.opt_str("username"),
        password=password,
        ca_file=r.opt_path("ca_file"),
        client_cert=r.opt_path("client_cert"),
        client_key=r.opt_path("client_key"),
        keepalive_s=r.int_("keepalive_s", 30, lo=5, hi=3600),
        reconnect_max_s=r.float_("reconnect_max_s", 30.0, lo=0.5, hi=3600.0),
        other_nodes=nodes[1:],
    )


#: The longest resident or device name: a name the hub speaks and the installer shows, not a text.
NAME_MAX = 100
#: The longest resident id (it names cursors and goes into every record about the resident).
ID_MAX = 64


def _label(r: TableReader, name: str, value: str, longest: int, *, controls: bool = True) -> str:
    """``value`` (a name or id) unless it is longer than ``longest`` characters, or holds control characters where
    ``controls`` is False (ids; a name may hold any text, the TOML writer escapes it)."""
    if len(value) > longest:
        raise r.fail(name, f"expected at most {longest} characters, got {len(value)}")
    if not controls and any(unicodedata.category(ch) == "Cc" for ch in value):
        raise r.fail(name, f"expected no control characters (newline, tab, NUL), got {value!r}")
    return value


def _parse_resident(r: TableReader) -> ResidentConfig:
    rid = _label(r, "id", r.str_("id"), ID_MAX, controls=False)
    language = r.str_("language", "en")
    if language not in _LANGUAGES:
        raise r.fail("language", f"expected one of {', '.join(_LANGUAGES)}, got {language!r}")
    profiles = r.list_("profiles")
    if not all(isinstance(p, str) and p for p in profiles):
        raise r.fail("profiles", "expected an array of profile names")
    thresholds_reader = r.sub("thresholds", required=False)
    thresholds: dict[str, float] = {}
    for key in thresholds_reader.table:
        thresholds[key] = thresholds_reader.float_(key, 0.0, lo=-1e6, hi=1e6)
    schedule: list[ScheduleConfig] = []
    for i, table in enumerate(r.list_("schedule")):
        if not isinstance(table, Mapping):
            raise r.fail(f"schedule[{i}]", "expected a table")
        entry = TableReader(r.file, r.base, table, f"{r.key(f'schedule[{i}]')}.")
        vital = entry.str_("vital")
        if vital not in SCHEDULABLE:
            raise entry.fail("vital", f"expected one of {', '.join(SCHEDULABLE)}, got {vital!r}")
        due_text = entry.str_("due")
        try:
            due = time.fromisoformat(due_text)
        except ValueError:
            raise entry.fail("due", f"expected a time of day HH:MM, got {due_text!r}") from None
        schedule.append(ScheduleConfig(vital, due, entry.float_("grace_s", 3600.0, lo=60.0, hi=86400.0)))
    _check_thresholds(r, [str(p) for p in profiles], thresholds)
    return ResidentConfig(
        id=rid,
        name=_label(r, "name", r.str_("name", rid), NAME_MAX),
        language=language,
        profiles=tuple(profiles),
        thresholds=thresholds,
        schedule=tuple(schedule),
    )


def _check_thresholds(r: TableReader, profiles: list[str], overrides: Mapping[str, float]) -> None:
    """The resident's thresholds as the hub will use them (:func:`gateway.thresholds.resolve_thresholds`): every
    profile and key known, every value plausible, tiers in order. Checked here, so that ``carehub-hub --check``,
    ``carehub doctor`` and the daemon's start-up all refuse the same sets, each with one line naming the key."""
    try:
        resolve_thresholds(profiles, overrides)
    except ThresholdError as exc:
        if exc.problem is ThresholdProblem.UNKNOWN_PROFILE:
            raise r.fail("profiles", f"{exc.key!r}: {exc.detail}") from None
        if exc.problem is ThresholdProblem.UNKNOWN_KEY:
            raise r.fail(
                f"thresholds.{exc.key}", "unknown threshold key (`carehub provision thresholds --list` lists them)"
            ) from None
        raise r.fail(f"thresholds.{exc.key}", exc.detail) from None


def _parse_device(r: TableReader, residents: set[str]) -> DeviceConfig:
    address = r.str_("address").upper()
    if not ADDRESS.fullmatch(address):
        raise r.fail("address", f"expected a Bluetooth address like AA:BB:CC:DD:EE:FF, got {address!r}")
    kind_name = r.str_("kind")
    try:
        kind = DeviceKind(kind_name)
    except ValueError:
        kinds = ", ".join(k.value for k in DeviceKind)
        raise r.fail("kind", f"expected one of {kinds}, got {kind_name!r}") from None
    resident = r.str_("resident")
    if resident not in residents:
        raise r.fail("resident", f"no resident with id {resident!r} is configured")
    key_file = r.opt_path("pendant_key_file")
    if kind is DeviceKind.PENDANT and key_file is None:
        raise r.fail("pendant_key_file", "missing: a pendant needs its per-device key file")
    return DeviceConfig(
        address=address,
        kind=kind,
        resident=resident,
        name=None if (name := r.opt_str("name")) is None else _label(r, "name", name, NAME_MAX),
        user_id=(user_id := r.opt_int("user_id", lo=0, hi=254)),
        pendant_key_file=key_file,
        consent_code=_consent_code(r, user_id),
    )


def _consent_code(r: TableReader, user_id: int | None) -> int | None:
    """A device's UDS consent code (0..9999), which belongs to its ``user_id`` (the scale's user index)."""
    code = r.opt_int("consent_code", lo=0, hi=9999)
    if code is not None and user_id is None:
        raise r.fail("consent_code", "needs user_id: the scale's user index the consent code was registered for")
    return code


def parse_config(text: str, source: Path) -> GatewayConfig:
    """Parse and validate the text of a hub config; `source` names the file in errors and anchors paths."""
    file = str(source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "(syntax)", str(exc)) from None
    top = TableReader(file, source.parent, data)
    hub = top.sub("hub")
    hub_id = hub.str_("id")
    if not _HUB_ID.fullmatch(hub_id):
        raise hub.fail("id", f"expected lowercase letters, digits and '-', 2..63 long, got {hub_id!r}")
    platform = top.sub("platform")
    storage = top.sub("storage")
    ble = top.sub("ble", required=False)
    alarms = top.sub("alarms", required=False)

    residents: list[ResidentConfig] = []
    for i, table in enumerate(top.list_("residents")):
        if not isinstance(table, Mapping):
            raise top.fail(f"residents[{i}]", "expected a table")
        residents.append(_parse_resident(TableReader(file, source.parent, table, f"residents[{i}].")))
    ids = [r.id for r in residents]
    if len(set(ids)) != len(ids):
        raise top.fail("residents", f"resident ids must be unique, got {ids}")
    devices: list[DeviceConfig] = []
    for i, table in enumerate(top.list_("devices")):
        if not isinstance(table, Mapping):
            raise top.fail(f"devices[{i}]", "expected a table")
        devices.append(_parse_device(TableReader(file, source.parent, table, f"devices[{i}]."), set(ids)))
    addresses = [d.address for d in devices]
    if len(set(addresses)) != len(addresses):
        raise top.fail("devices", "device addresses must be unique")

    fallback = alarms.table.get("fallback_command")
    if fallback is not None and (
        not isinstance(fallback, list) or not fallback or not all(isinstance(a, str) for a in fallback)
    ):
        raise alarms.fail("fallback_command", "expected an array of strings (program and arguments)")
    return GatewayConfig(
        source=source,
        hub_id=hub_id,
        hub_key_file=hub.path("key_file"),
        platform_key_file=platform.path("public_key_file"),
        broker=_parse_broker(top.sub("broker")),
        storage_path=storage.path("path"),
        storage_max_bytes=parse_size(storage, "max_bytes", 256 * 2**20),
        ble_link=ble.opt_str("link"),
        ble_max_connections=ble.int_("max_connections", 3, lo=1, hi=16),
        clock_tolerance_s=ble.float_("clock_tolerance_s", 60.0, lo=1.0, hi=86400.0),
        residents=tuple(residents),
        devices=tuple(devices),
        home_zone=_parse_zone(hub),
        fallback_command=tuple(fallback) if fallback else None,
        fallback_webhook=alarms.opt_str("fallback_webhook"),
        panic_ack_timeout_s=alarms.float_("panic_ack_timeout_s", 5.0, lo=0.1, hi=3600.0),
        panic_cancel_window_s=alarms.float_("panic_cancel_window_s", 60.0, lo=1.0, hi=3600.0),
        panic_repeat_s=alarms.float_("panic_repeat_s", 30.0, lo=1.0, hi=36000.0),
    )


def load_config(path: Path) -> GatewayConfig:
    """Read and validate a hub config file (:func:`gateway.config_reader.read_config_text` bounds the read)."""
    return parse_config(read_config_text(path), path)
