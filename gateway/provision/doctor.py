"""``carehub doctor``: check a hub and say, for each problem, what to do in one line.

Checks, in order: the config loads; key files exist, parse, and private ones are mode 0600 (the config too, as it
may hold the broker password); the clock is plausible; the home's time zone (a warning with the config's
``timezone_note`` when it is a guess); free space on the storage; the outbox backlog; the disk reserve held for
alarms on a full file system and the last full-disk episode (:mod:`gateway.disk_reserve`; the episode is an outbox
cursor); envelopes the platform refused for good (counted per reason in the outbox's cursors,
:func:`gateway.uplink.refusal_counts`); the broker is reachable (TCP, then an MQTT CONNECT with the hub's
credentials, both bounded; every node of a cluster, ``[broker] urls``), with the node the hub's uplink noted it is
connected to (the outbox cursor :data:`gateway.uplink_settings.NODE_CURSOR`); and per device what the hub can read
at rest. A device whose installation test failed, and a pendant that has used up its event counters (it can no
longer call for help, ``docs/protocol.md`` §9.6), fail their check, so ``carehub doctor`` exits non-zero.

What can be read per device: everything the hub learns from a device is sealed to the platform before it is stored
(invariant 3), so the outbox cannot say when a device was last heard or its battery level. The doctor reads the
outbox's cursors, which are stored in the clear - a glucose meter's next RACP record number (``racp:<address>``),
a pendant's last authenticated event counter (``pendant:<address>``) and a meter's count of readings decoded only
tolerantly or kept raw (``decode:<address>``, :mod:`gateway.decode_counts`; raw ones make the check a warning), a
meter's AUTH failures in a row (``auth:<address>``) and a multi-user scale's refusals of its consent code
(``consent:<address>``, :mod:`gateway.ble_steps`; either fails the check with the command that pairs it again) - and
the latest installation report's battery
levels and test time. The outbox is opened read-only (SQLite ``mode=ro``) so a doctor run never writes to it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import shutil
import sqlite3
import stat
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import aiomqtt

from gateway.ble_errors import auth_cursor_key
from gateway.ble_steps import consent_cursor_key
from gateway.config import BrokerNode, ConfigError, GatewayConfig, load_config
from gateway.core.downlink import REFUSED_CURSOR, describe_refusals
from gateway.core.pendant_link import RekeyNeed, cursor_key, describe_counter, stored_rekey_need
from gateway.decode_counts import DecodeCounts, decode_cursor_key
from gateway.disk_reserve import DEFAULT_RESERVE_BYTES, EPISODE_CURSOR, FullDiskEpisode, reserve_path, reserve_status
from gateway.errors import UplinkError
from gateway.outbox import SCHEMA_VERSION, Lane
from gateway.provision.files import HubPaths
from gateway.uplink import UplinkSettings, mqtt_client, refusal_counts
from gateway.uplink_settings import NODE_CURSOR, NodeStatus
from protocols.errors import EnvelopeRejection, KeyFileError
from protocols.keys import load_hub_identity, load_pendant_key, load_platform_public_keys

__all__ = ["Check", "Status", "check_broker", "outbox_summary", "run_doctor"]

# The clock must not be before this software existed, nor absurdly far ahead.
_CLOCK_FLOOR: Final = datetime(2024, 1, 1, tzinfo=UTC)
_CLOCK_CEILING: Final = datetime(2100, 1, 1, tzinfo=UTC)
_MIN_FREE: Final = 50 * 2**20
_STALE_BACKLOG_S: Final = 3600.0


class Status(enum.StrEnum):
    """How a check came out."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Check:
    """One finding: what was checked, the result, and the one-line fix when it is not OK."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def _ok(name: str, detail: str) -> Check:
    return Check(name, Status.OK, detail)


def _private_mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None


def _key_checks(config: GatewayConfig) -> list[Check]:
    checks: list[Check] = []
    try:
        identity = load_hub_identity(config.hub_key_file)
        if identity.hub_id != config.hub_id:
            checks.append(
                Check(
                    "hub key",
                    Status.FAIL,
                    f"{config.hub_key_file} belongs to hub {identity.hub_id!r}, the config says {config.hub_id!r}",
                    "restore this hub's own key file, or re-run `carehub provision init` in a fresh directory",
                )
            )
        else:
            checks.append(_ok("hub key", f"{config.hub_key_file} (mode 0600, key id {identity.key_id})"))
    except KeyFileError as exc:
        checks.append(Check("hub key", Status.FAIL, str(exc), f"chmod 600 {config.hub_key_file}, or restore it"))
    try:
        load_platform_public_keys(config.platform_key_file)
        checks.append(_ok("platform keys", str(config.platform_key_file)))
    except KeyFileError as exc:
        checks.append(
            Check("platform keys", Status.FAIL, str(exc), "run `carehub provision init` again with platform.pub")
        )
    for device in config.devices:
        if device.pendant_key_file is None:
            continue
        try:
            load_pendant_key(device.pendant_key_file)
            checks.append(_ok(f"pendant key {device.address}", f"{device.pendant_key_file} (mode 0600)"))
        except KeyFileError as exc:
            checks.append(
                Check(
                    f"pendant key {device.address}",
                    Status.FAIL,
                    str(exc),
                    f"chmod 600 {device.pendant_key_file}, or pair the pendant again",
                )
            )
    mode = _private_mode(config.source)
    if mode is not None and mode & 0o077 and config.broker.password is not None:
        checks.append(
            Check(
                "config file",
                Status.WARN,
                f"{config.source} holds the broker password and is mode {mode:04o}",
                f"chmod 600 {config.source}",
            )
        )
    return checks


def _clock_check(now: datetime) -> Check:
    if not _CLOCK_FLOOR <= now < _CLOCK_CEILING:
        return Check(
            "clock",
            Status.FAIL,
            f"the system clock says {now:%Y-%m-%d %H:%M} UTC",
            "enable network time: sudo timedatectl set-ntp true (or set the date by hand)",
        )
    return _ok("clock", f"{now:%Y-%m-%d %H:%M:%S} UTC")


def _zone_check(config: GatewayConfig) -> Check:
    zone = config.home_zone
    note = config.timezone_note
    if not note:
        return _ok("time zone", f"{zone.name} (from {zone.source.value})")
    return Check(
        "time zone",
        Status.WARN,
        f"{zone.name}: {note}",
        'set the home\'s zone in hub.toml: [hub] timezone = "Area/City" (e.g. "Asia/Shanghai"), then restart the hub',
    )


# What to do about envelopes the platform refused for good, by reason (the outbox cursors count them).
_REFUSAL_FIXES: Final[Mapping[EnvelopeRejection, str]] = {
    EnvelopeRejection.UNKNOWN_HUB: "enrol this hub's key with the platform: carehub provision enroll",
    EnvelopeRejection.BAD_SIGNATURE: "the platform holds another key for this hub: carehub provision enroll --replace",
    EnvelopeRejection.HUB_MISMATCH: "the broker login belongs to another hub: fix [broker] username in hub.toml",
    EnvelopeRejection.CANNOT_OPEN: "the hub seals to a key the platform lacks: copy the platform's platform.pub again",
    EnvelopeRejection.MALFORMED: "update carehub on the hub and the platform to the same release",
    EnvelopeRejection.REPLAYED: "nothing to do if it stops; else check that no second hub uses this hub's key",
}


def _refusal_check(cursors: Mapping[str, Any]) -> Check:
    counts = refusal_counts(cursors)
    if not counts:
        return _ok("refused envelopes", "the platform has refused none")
    total = sum(counts.values())
    detail = f"the platform refused {total} envelope{'s' if total != 1 else ''} for good: " + ", ".join(
        f"{reason.value} {n}" for reason, n in sorted(counts.items(), key=lambda item: -item[1])
    )
    worst = max(counts, key=lambda reason: counts[reason])
    return Check("refused envelopes", Status.WARN, detail, _REFUSAL_FIXES[worst])


def _storage_check(config: GatewayConfig, disk_usage: Callable[[Path], Any]) -> Check:
    directory = config.storage_path.parent
    probe = directory if directory.exists() else config.source.parent
    usage = disk_usage(probe)
    free = int(usage.free)
    text = f"{free / 2**20:.0f} MiB free on {probe}"
    if free < _MIN_FREE:
        return Check("storage", Status.FAIL, text, "free space: remove old logs (sudo journalctl --vacuum-size=50M)")
    if free < config.storage_max_bytes:
        return Check(
            "storage",
            Status.WARN,
            f"{text}, less than the outbox budget of {config.storage_max_bytes / 2**20:.0f} MiB",
            "free space, or lower [storage] max_bytes in the config",
        )
    return _ok("storage", text)


def outbox_summary(path: Path) -> dict[str, Any] | None:
    """Read-only figures from the outbox: rows per lane, bytes, oldest row time, cursors. None if absent.

    Raises:
        sqlite3.Error: the file is not a readable outbox.
    """
    if not path.exists():
        return None
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)  # a URI needs an absolute path
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if not 1 <= version <= SCHEMA_VERSION:  # the tables read here are the same in every version
            raise sqlite3.DatabaseError(f"schema version {version}, this carehub reads 1 to {SCHEMA_VERSION}")
        lanes = dict(conn.execute("SELECT lane, COUNT(*) FROM outbox GROUP BY lane").fetchall())
        total, oldest = conn.execute("SELECT COALESCE(SUM(size), 0), MIN(created) FROM outbox").fetchone()
        cursors = {str(k): v for k, v in conn.execute("SELECT key, value FROM cursors").fetchall()}
    finally:
        conn.close()
    return {
        "priority_rows": int(lanes.get(int(Lane.PRIORITY), 0)),
        "routine_rows": int(lanes.get(int(Lane.ROUTINE), 0)),
        "bytes": int(total),
        "oldest": None if oldest is None else float(oldest),
        "cursors": cursors,
    }


def _outbox_checks(config: GatewayConfig, now: float) -> tuple[list[Check], Mapping[str, Any]]:
    try:
        summary = outbox_summary(config.storage_path)
    except sqlite3.Error as exc:
        return [
            Check(
                "outbox",
                Status.FAIL,
                f"{config.storage_path}: {exc}",
                "stop the hub, move the file aside and start it again (undelivered readings in it are lost)",
            )
        ], {}
    if summary is None:
        return [_ok("outbox", f"{config.storage_path} not created yet (the hub has not run)")], {}
    rows = summary["priority_rows"] + summary["routine_rows"]
    age = 0.0 if summary["oldest"] is None else now - summary["oldest"]
    detail = (
        f"{rows} envelopes waiting ({summary['priority_rows']} alarm/panic), "
        f"{summary['bytes'] / 1024:.0f} KiB of {config.storage_max_bytes / 2**20:.0f} MiB"
        + (f", oldest {age / 60:.0f} min" if rows else "")
    )
    if summary["priority_rows"]:
        return [
            Check("outbox", Status.FAIL, detail, "alarms are not reaching the platform: fix the broker check below")
        ], summary["cursors"]
    if rows and age > _STALE_BACKLOG_S:
        return [
            Check("outbox", Status.WARN, detail, "readings are not reaching the platform: see the broker check")
        ], summary["cursors"]
    return [_ok("outbox", detail)], summary["cursors"]


def _when(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


def _reserve_check(config: GatewayConfig, cursors: Mapping[str, Any]) -> Check:
    """The disk reserve next to the outbox and the last full-disk episode the hub recorded."""
    path = reserve_path(config.storage_path)
    if not path.parent.exists():
        return _ok("disk reserve", f"{path} not created yet (the hub has not run)")
    try:
        episode = None if EPISODE_CURSOR not in cursors else FullDiskEpisode.decode(cursors[EPISODE_CURSOR])
    except ValueError as exc:
        return Check("disk reserve", Status.WARN, f"outbox cursor {EPISODE_CURSOR}: {exc}", "report this to support")
    try:
        held = reserve_status(path, DEFAULT_RESERVE_BYTES)
    except OSError as exc:
        return Check("disk reserve", Status.WARN, f"{path}: {exc}", "check the storage directory's permissions")
    detail = f"{_mib(held.allocated)} of {_mib(held.target)} held at {path}, {_mib(held.free)} free"
    if episode is not None:
        span = "still full" if episode.ended is None else f"to {_when(episode.ended)}"
        detail += (
            f"; last full disk from {_when(episode.started)} {span}: {episode.priority_commits} alarm/panic "
            f"commit(s) stored from the reserve, {episode.refused} routine write(s) refused"
        )
    need = f"the hub re-creates the reserve once {_mib(2 * held.target)} are free"
    if episode is not None and episode.ended is None:
        return Check("disk reserve", Status.FAIL, detail, f"free space (sudo journalctl --vacuum-size=50M): {need}")
    if not held.present:
        return Check("disk reserve", Status.WARN, detail, f"free space or start the hub: {need}")
    return _ok("disk reserve", detail)


async def check_broker(
    config: GatewayConfig, *, limit_s: float = 5.0, cursors: Mapping[str, Any] | None = None
) -> Check:
    """TCP connect, then MQTT CONNECT with the configured credentials and TLS, each within ``limit_s`` seconds; for a
    cluster (``[broker] urls``) to every node at once: all reachable is OK, some not a warning (the hub uses the
    others), none a failure.

    The MQTT client is the uplink's own (:func:`gateway.uplink.mqtt_client`): the check verifies each node's
    certificate exactly as the running hub will. With the outbox's ``cursors``, the detail also says which node the
    hub's uplink noted it is connected to (or lost last).
    """
    nodes = config.broker.nodes
    results = await asyncio.gather(*(_check_node(config, node, limit_s) for node in nodes))
    failed = [r for r in results if r.status is not Status.OK]
    if len(results) == 1:
        check = results[0]
    elif not failed:
        check = _ok("broker", f"{len(nodes)} nodes: " + "; ".join(r.detail for r in results))
    else:
        status = Status.FAIL if len(failed) == len(results) else Status.WARN
        fix = failed[0].fix if status is Status.FAIL else f"{failed[0].fix} (meanwhile the hub uses the other nodes)"
        check = Check(
            "broker",
            status,
            f"{len(failed)} of {len(nodes)} nodes failing: " + "; ".join(r.detail for r in results),
            fix,
        )
    if cursors is None:
        return check
    return dataclasses.replace(check, detail=f"{check.detail}; {_describe_node(cursors.get(NODE_CURSOR))}")


def _describe_node(value: object) -> str:
    """What the uplink noted about the broker node it is on (outbox cursor ``uplink.node``)."""
    try:
        status = NodeStatus.from_cursor(value if isinstance(value, int | str | bytes) else None)
    except ValueError as exc:
        return f"the uplink's note of its node is unreadable ({exc})"
    if status is None:
        return "the hub's uplink has not connected yet"
    since = status.connected_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    if status.lost_at is None:
        return f"the hub's uplink is connected to {status.node} (since {since})"
    lost = status.lost_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"the hub's uplink lost {status.node} at {lost} (connected since {since}) and is trying the next node"


async def _check_node(config: GatewayConfig, node: BrokerNode, limit_s: float) -> Check:
    """:func:`check_broker` for one node."""
    b = config.broker
    where = str(node)
    try:
        async with asyncio.timeout(limit_s):
            _, writer = await asyncio.open_connection(node.host, node.port)
            writer.close()
            await writer.wait_closed()
    except (OSError, TimeoutError) as exc:
        return Check(
            "broker",
            Status.FAIL,
            f"cannot open a TCP connection to {where} ({exc or 'timed out'})",
            "check the hub's network (cable/Wi-Fi, DNS) and that the broker address in the config is right",
        )
    try:
        client = mqtt_client(
            UplinkSettings.from_config(config),
            node=node,
            identifier=f"carehub-doctor-{config.hub_id}-{uuid.uuid4().hex[:8]}",  # never the running hub's session
            timeout=limit_s,
        )
    except UplinkError as exc:
        return Check("broker", Status.FAIL, str(exc), "put the broker's TLS files where the config says, then retry")
    try:
        async with asyncio.timeout(limit_s):
            async with client:
                pass
    except aiomqtt.MqttCodeError as exc:
        return Check(
            "broker",
            Status.FAIL,
            f"{where} refused the hub's login ({exc})",
            "the broker user/password in the config are wrong: ask the platform operator for the hub's credentials",
        )
    except (aiomqtt.MqttError, TimeoutError, OSError) as exc:
        if "certificate" in str(exc).lower():
            return Check(
                "broker",
                Status.FAIL,
                f"{where} sent a TLS certificate the hub does not accept ({exc})",
                "the config's ca_file must be the CA that signed the broker's certificate, and the broker URL a name"
                " or address that certificate is for",
            )
        return Check(
            "broker",
            Status.FAIL,
            f"{where} accepted TCP but MQTT failed ({exc or 'timed out'})",
            "check the port is the MQTT listener and whether it needs TLS (mqtts://)",
        )
    return _ok("broker", f"{where}: TCP and MQTT login as {b.username or '(anonymous)'} ok")


def _latest_report(paths: HubPaths) -> Mapping[str, Any]:
    import json  # noqa: PLC0415 - only when a report exists

    try:
        data = json.loads((paths.reports / "latest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _device_checks(config: GatewayConfig, cursors: Mapping[str, Any], paths: HubPaths) -> list[Check]:
    report = _latest_report(paths)
    tested = {d.get("address"): d for d in report.get("devices", []) if isinstance(d, dict)}
    checks = []
    for device in config.devices:
        parts = [f"{device.kind.value} of {device.resident}"]
        if f"racp:{device.address}" in cursors:
            parts.append(f"next stored record #{cursors[f'racp:{device.address}']}")
        tally = DecodeCounts.parse(cursors.get(decode_cursor_key(device.address)))
        if tally is not None and tally.describe():
            parts.append(tally.describe())
        need = RekeyNeed.NONE
        if cursor_key(device.address) in cursors:
            stored = cursors[cursor_key(device.address)]
            parts.append(f"last event counter {describe_counter(stored)}")
            need = stored_rekey_need(stored)
        entry = tested.get(device.address)
        refusals = cursors.get(auth_cursor_key(device.address))
        if isinstance(refusals, int) and refusals > 0:  # AUTH failures in a row since its last good session
            parts.append(f"refused the hub {refusals} time(s) in a row (it lost its bond, or wants the PIN it shows)")
            fix = (
                f"pair it again: carehub provision pair {device.address} --resident {device.resident} "
                f"--kind {device.kind.value} (add --passkey with the 6 digits if it shows a PIN)"
            )
            checks.append(Check(f"device {device.address}", Status.FAIL, "; ".join(parts), fix))
            continue
        refused = cursors.get(consent_cursor_key(device.address))
        if isinstance(refused, int) and refused > 0:  # UDS consent refusals in a row (issue 14 item 6)
            parts.append(
                f"refused the consent for user {device.user_id} {refused} time(s) in a row (a wrong consent code): "
                "the resident's weights stay on the scale"
            )
            fix = (
                f"pair it again with the code registered on the scale for that user: carehub provision pair "
                f"{device.address} --resident {device.resident} --kind {device.kind.value} --user {device.user_id} "
                "--consent-code NNNN"
            )
            checks.append(Check(f"device {device.address}", Status.FAIL, "; ".join(parts), fix))
            continue
        if need is not RekeyNeed.NONE:
            status = Status.FAIL if need is RekeyNeed.EXHAUSTED else Status.WARN
            checks.append(
                Check(f"device {device.address}", status, "; ".join(parts), "pair the pendant again with a new key")
            )
            continue
        if entry is None:
            checks.append(
                Check(
                    f"device {device.address}",
                    Status.WARN,
                    "; ".join([*parts, "never tested"]),
                    "run `carehub provision test` to prove it reaches the platform",
                )
            )
            continue
        battery = entry.get("battery")
        parts.append(f"tested {report.get('finished_at', '?')}: {'ok' if entry.get('ok') else 'FAILED'}")
        if isinstance(battery, int):
            parts.append(f"battery {battery}% then")
        if not entry.get("ok"):  # it did not reach the platform at installation: a failure (exit status 1)
            checks.append(Check(f"device {device.address}", Status.FAIL, "; ".join(parts), str(entry.get("detail"))))
        elif isinstance(battery, int) and battery <= 20:
            checks.append(
                Check(f"device {device.address}", Status.WARN, "; ".join(parts), "replace the device's batteries")
            )
        elif tally is not None and tally.raw:
            fix = "its undecodable readings reach the platform raw: capture one and explain it with `carehub decode`"
            checks.append(Check(f"device {device.address}", Status.WARN, "; ".join(parts), fix))
        else:
            checks.append(_ok(f"device {device.address}", "; ".join(parts)))
    return checks


async def run_doctor(
    config_path: Path,
    *,
    broker_limit_s: float = 5.0,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    disk_usage: Callable[[Path], Any] = shutil.disk_usage,
) -> list[Check]:
    """Every check, in order; a config that does not load ends the list early."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        return [Check("config", Status.FAIL, str(exc), "fix the key named, or re-run `carehub provision init`")]
    checks = [_ok("config", f"{config_path} (hub {config.hub_id}, {len(config.devices)} devices)")]
    checks += _key_checks(config)
    checks.append(_clock_check(now()))
    checks.append(_zone_check(config))
    checks.append(_storage_check(config, disk_usage))
    outbox, cursors = _outbox_checks(config, now().timestamp())
    checks += outbox
    checks.append(_reserve_check(config, cursors))
    checks.append(_refusal_check(cursors))
    checks.append(await check_broker(config, limit_s=broker_limit_s, cursors=cursors))
    checks += _device_checks(config, cursors, HubPaths.for_config(config_path))
    refusals = describe_refusals(cursors.get(REFUSED_CURSOR))
    if refusals is not None:
        checks.append(Check("down-messages", Status.WARN, refusals, "correct the message on the platform and resend"))
    return checks
