"""The provisioning steps that change the hub's files: init, enroll, residents, thresholds, pendant keys.

Each step is idempotent (running it again with the same input changes nothing, or only refreshes what it owns),
validates everything before writing, and writes with :func:`gateway.provision.files.write_atomic`, so a failed step
leaves the hub's configuration as it was.
"""

from __future__ import annotations

import difflib
import math
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from gateway.clock import ZoneNameError, ZoneSource, system_zone, zone_named
from gateway.config import ADDRESS, DeviceConfig, DeviceKind, GatewayConfig
from gateway.provision.document import commit_document, load_document, relative, upsert_device, upsert_resident
from gateway.provision.errors import (
    ConfigWriteError,
    EnrollmentRejectedError,
    ProvisionError,
    ThresholdInputError,
)
from gateway.provision.files import HubPaths, Writer, mark_step
from gateway.thresholds import PROFILES, Key, ThresholdError, ThresholdProblem, Thresholds, resolve_thresholds
from protocols import atomic
from protocols.errors import DecodeError, KeyFileError
from protocols.keys import (
    HubIdentity,
    HubPublicKey,
    PlatformPublicKeys,
    key_id,
    load_hub_identity,
    load_pendant_key,
    load_platform_public_keys,
    save_hub_identity,
    save_hub_public_key,
    save_pendant_key,
    save_platform_public_keys,
)
from protocols.pendant import PendantEvent
from protocols.topics import is_valid_hub_id

__all__ = [
    "Enroller",
    "InitResult",
    "ReferencePlatformEnroller",
    "ThresholdEdit",
    "add_device",
    "apply_thresholds",
    "check_address",
    "check_assignment",
    "check_user_id",
    "effective_thresholds",
    "enroll_hub",
    "init_hub",
    "load_platform_keys",
    "parse_edit",
    "pendant_frame_refusal",
    "pendant_key_to_check",
    "provision_pendant_key",
    "set_resident",
]

_LANGUAGES = ("en", "zh")


@dataclass(frozen=True, slots=True)
class InitResult:
    """What ``init`` did.

    Attributes:
        config: the validated config now on disk.
        hub_key_id: key id of the hub's Ed25519 public key (the platform shows the same id once enrolled).
        platform_key_id: the platform's key id (of its box key, as `carehub platform keygen` prints it).
        created_identity: whether a new identity was generated (False: an existing one was kept).
    """

    config: GatewayConfig
    hub_key_id: str
    platform_key_id: str
    created_identity: bool


def _load_existing(paths: HubPaths) -> dict[str, Any]:
    return load_document(paths) if paths.config.exists() else {}


def _identity(paths: HubPaths, hub_id: str) -> tuple[HubIdentity, bool]:
    if paths.hub_key.exists():
        try:
            identity = load_hub_identity(paths.hub_key)
        except KeyFileError as exc:
            raise ProvisionError(
                f"the hub's key file is unusable: {exc}", f"run `chmod 600 {paths.hub_key}` or restore it from backup"
            ) from exc
        if identity.hub_id != hub_id:
            raise ProvisionError(
                f"this hub already has an identity as {identity.hub_id!r}, not {hub_id!r}",
                "use the hub id it was set up with, or a fresh --config directory for a new hub",
            )
        return identity, False
    return HubIdentity.generate(hub_id), True


def _save_keys(paths: HubPaths, identity: HubIdentity, created: bool, platform: PlatformPublicKeys) -> Path:
    """Write the identity (if new), its public file and the platform keys; returns the platform key file."""
    platform_file = paths.keys / f"platform-{platform.key_id}.pub"
    try:
        paths.keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        paths.keys.chmod(0o700)
        if created:
            save_hub_identity(paths.hub_key, identity)
        save_hub_public_key(paths.hub_pub, identity.public)
        # Named by key id, never overwritten: a config that names the old platform keys keeps working until the
        # new config is in place.
        if not platform_file.exists():
            save_platform_public_keys(platform_file, platform)
    except (KeyFileError, OSError) as exc:
        raise ConfigWriteError(
            f"could not write the hub's key files: {exc}", "free space or fix permissions on the hub's storage"
        ) from exc
    return platform_file


def _save_broker_ca(paths: HubPaths, pem: str, writer: Writer) -> None:
    """The pinned site CA, written whole before the config that names it (public: mode 0644)."""
    try:
        atomic.write_atomic(paths.keys / "broker-ca.pem", pem.encode("ascii"), mode=0o644, writer=writer)
    except OSError as exc:
        raise ConfigWriteError(
            f"could not write the broker's CA file: {exc}", "free space or fix permissions on the hub's storage"
        ) from exc


def init_hub(
    paths: HubPaths,
    *,
    hub_id: str,
    platform: PlatformPublicKeys,
    broker_url: str | Sequence[str],
    username: str | None,
    password: str | None,
    link: str | None = None,
    timezone: str | None = None,
    broker_ca: str | None = None,
    writer: Writer = os.write,
) -> InitResult:
    """Create (or keep) the hub's identity and write a validated config from the platform's details.

    Running it again with the same details changes nothing; residents and devices already configured are kept.

    The home's time zone (``[hub] timezone``) is `timezone` when the installer gives one (an IANA name such as
    ``"Asia/Shanghai"``); otherwise the zone already in the config is kept, or else the installing machine's zone
    is written (`gateway.clock.system_zone`). When the machine names no zone nothing is written and the loaded
    config says so in ``config.timezone_note`` (the hub then runs on UTC until the installer sets one).

    `broker_ca` is the site CA (PEM) of the platform's broker, from the enrollment bundle: written to
    ``keys/broker-ca.pem`` and pinned as ``[broker] ca_file`` (only that CA is trusted for the broker).

    `broker_url` is one broker URL (written as ``[broker] url``) or the MQTT listeners of a broker cluster's nodes in
    the order the hub tries them (``[broker] urls``; from a version 2 bundle), all with one scheme.

    Raises:
        ProvisionError: invalid input, or an existing hub set up differently (nothing is written).
        ConfigWriteError: the disk refused a write (the previous config is unchanged).
    """
    if not is_valid_hub_id(hub_id):
        raise ProvisionError(
            f"{hub_id!r} is not a valid hub id", "use lowercase letters, digits and '-', 2 to 63 characters"
        )
    urls = [broker_url] if isinstance(broker_url, str) else list(broker_url)
    if not urls:
        raise ProvisionError("no broker url given", "give it as mqtts://HOST:PORT (or mqtt:// on a local network)")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ProvisionError(
                f"broker url {url!r} is not usable", "give it as mqtts://HOST:PORT (or mqtt:// on a local network)"
            )
    if len({urlsplit(url).scheme for url in urls}) > 1:
        raise ProvisionError("the broker urls mix mqtt:// and mqtts://", "give every node as mqtts://HOST:PORT")
    zone = _init_zone(timezone)
    data = _load_existing(paths)
    existing_id = data.get("hub", {}).get("id") if isinstance(data.get("hub"), dict) else None
    if existing_id not in (None, hub_id):
        raise ProvisionError(
            f"{paths.config} is already the config of hub {existing_id!r}",
            "use a fresh --config directory for a new hub",
        )
    identity, created = _identity(paths, hub_id)
    platform_file = paths.keys / f"platform-{platform.key_id}.pub"
    data["hub"] = {**data.get("hub", {}), "id": hub_id, "key_file": relative(paths, paths.hub_key)}
    if zone is not None and (timezone is not None or "timezone" not in data["hub"]):
        data["hub"]["timezone"] = zone
    data["platform"] = {**data.get("platform", {}), "public_key_file": relative(paths, platform_file)}
    broker: dict[str, Any] = {
        k: v for k, v in data.get("broker", {}).items() if k not in ("url", "urls", "password_file")
    }
    if len(urls) == 1:
        broker["url"] = urls[0]
    else:
        broker["urls"] = urls
    if broker_ca is not None:
        if parts.scheme != "mqtts":
            raise ProvisionError("a broker CA was given for a plaintext broker url", "use the bundle's mqtts:// url")
        broker["ca_file"] = relative(paths, paths.keys / "broker-ca.pem")
    for name, value in (("username", username), ("password", password)):
        if value:
            broker[name] = value
        else:
            broker.pop(name, None)
    data["broker"] = broker
    data["storage"] = {**data.get("storage", {}), "path": data.get("storage", {}).get("path", "data/outbox.db")}
    if link is not None:
        data["ble"] = {**data.get("ble", {}), "link": link}
    _save_keys(paths, identity, created, platform)
    if broker_ca is not None:
        _save_broker_ca(paths, broker_ca, writer)
    config = commit_document(paths, data, writer=writer)
    mark_step(
        paths,
        "init",
        {"hub_id": hub_id, "hub_key_id": identity.key_id, "platform_key_id": platform.key_id},
        writer=writer,
    )
    return InitResult(config, identity.key_id, platform.key_id, created)


def _init_zone(timezone: str | None) -> str | None:
    """The zone name ``init`` writes: the installer's (checked), else the system's when it names one."""
    if timezone is not None:
        try:
            return zone_named(timezone).key
        except ZoneNameError as exc:
            raise ProvisionError(
                f"time zone {exc}", 'give the home\'s zone as an IANA name, e.g. "Asia/Shanghai" or "Europe/Berlin"'
            ) from None
    found = system_zone()
    return None if found.source is ZoneSource.FALLBACK else found.name


def load_platform_keys(path: Path) -> PlatformPublicKeys:
    """The platform's public key file.

    Raises:
        ProvisionError: missing or malformed.
    """
    try:
        return load_platform_public_keys(path)
    except KeyFileError as exc:
        raise ProvisionError(
            f"cannot use the platform key file: {exc}", "ask the platform operator for platform.pub (or a bundle)"
        ) from exc


# ---------------------------------------------------------------------------------------------------- enroll


class Enroller(Protocol):
    """Registers a hub's public key at a platform."""

    async def enroll(self, hub: HubPublicKey, *, replace: bool) -> str:
        """Register ``hub``; return a one-line receipt.

        Raises:
            EnrollmentRejectedError: the platform refused (the message says why and what to do).
        """
        ...


class ReferencePlatformEnroller:
    """Enrolls directly in the reference platform's database (``carehub platform`` config), as its operator would."""

    def __init__(self, platform_config: Path) -> None:
        self.platform_config = platform_config

    async def enroll(self, hub: HubPublicKey, *, replace: bool) -> str:
        """Register ``hub`` unless another key is enrolled under its id (then only with ``replace``)."""
        from community.config import PlatformConfigError, load_platform_config  # noqa: PLC0415 - the operator's platform
        from community.storage import SqliteStorage, StorageError  # noqa: PLC0415

        try:
            cfg = load_platform_config(self.platform_config)
        except PlatformConfigError as exc:
            raise EnrollmentRejectedError(
                f"cannot open the platform: {exc}", "check the --platform-config path with the platform operator"
            ) from exc
        wanted = bytes(hub.verify_key)
        try:
            async with SqliteStorage(cfg.database) as storage:
                enrolled = await storage.hubs()
                current = enrolled.get(hub.hub_id)
                if current is not None and bytes(current) == wanted:
                    return f"{hub.hub_id} was already enrolled with key id {key_id(wanted)}"
                if current is not None and not replace:
                    raise EnrollmentRejectedError(
                        f"the platform already has hub {hub.hub_id!r} enrolled with another key "
                        f"(key id {key_id(bytes(current))})",
                        "if this hub replaces that one, run again with --replace; otherwise use a new hub id",
                    )
                await storage.enroll_hub(hub)
        except (StorageError, ValueError) as exc:
            raise EnrollmentRejectedError(
                f"the platform refused the enrollment: {exc}", "give the operator keys/hub.pub and ask them why"
            ) from exc
        return f"enrolled {hub.hub_id} with key id {key_id(wanted)}"


async def enroll_hub(paths: HubPaths, enroller: Enroller, *, replace: bool = False, writer: Writer = os.write) -> str:
    """Register the hub's public key with the platform and record the step.

    Raises:
        NotInitialisedError: ``init`` has not run.
        EnrollmentRejectedError: the platform refused; nothing is recorded as enrolled.
    """
    load_document(paths)
    try:
        identity = load_hub_identity(paths.hub_key)
    except KeyFileError as exc:
        raise ProvisionError(f"the hub's key file is unusable: {exc}", "run `carehub provision init` again") from exc
    receipt = await enroller.enroll(identity.public, replace=replace)
    mark_step(paths, "enroll", {"hub_id": identity.hub_id, "hub_key_id": identity.key_id}, writer=writer)
    return receipt


# ---------------------------------------------------------------------------------------------------- residents


def set_resident(
    paths: HubPaths,
    resident_id: str,
    *,
    name: str | None = None,
    language: str | None = None,
    writer: Writer = os.write,
) -> GatewayConfig:
    """Add a resident or change their name or language.

    Raises:
        ProvisionError: invalid id or language (the config is unchanged).
    """
    if not resident_id or not resident_id.replace("-", "").replace("_", "").isalnum():
        raise ProvisionError(f"resident id {resident_id!r} is not usable", "use letters, digits, '-' or '_'")
    if language is not None and language not in _LANGUAGES:
        raise ProvisionError(f"language {language!r} is not supported", f"use one of {', '.join(_LANGUAGES)}")
    data = load_document(paths)
    upsert_resident(data, resident_id, name=name, language=language)
    return commit_document(paths, data, writer=writer)


def _resident_table(data: dict[str, Any], resident_id: str) -> dict[str, Any]:
    for table in data.get("residents", []):
        if isinstance(table, dict) and table.get("id") == resident_id:
            return table
    raise ProvisionError(
        f"no resident {resident_id!r} on this hub",
        f"add them first: carehub provision resident {resident_id} --name 'NAME'",
    )


# ---------------------------------------------------------------------------------------------------- thresholds


@dataclass(frozen=True, slots=True)
class ThresholdEdit:
    """One ``KEY=VALUE`` edit; ``value`` None means "back to the profile/default"."""

    key: str
    value: float | None


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {close[0]}?" if close else ""


def parse_edit(text: str) -> ThresholdEdit:
    """``bp.systolic.critical_high=175`` (or ``=default``).

    Raises:
        ThresholdInputError: not KEY=NUMBER, an unknown key, or a number that is not finite.
    """
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key or not raw:
        raise ThresholdInputError(
            text, f"{text!r} is not KEY=VALUE", "write it like bp.systolic.critical_high=175 (or KEY=default)"
        )
    known = [k.value for k in Key]
    if key not in known:
        hint = _suggest(key, known)
        raise ThresholdInputError(
            key,
            f"{key} is not a threshold key",
            (hint + " " if hint else "") + "`carehub provision thresholds --list` shows every key",
        )
    if raw.lower() == "default":
        return ThresholdEdit(key, None)
    try:
        value = float(raw)
    except ValueError:
        raise ThresholdInputError(key, f"{key}: {raw!r} is not a number", "give the value in the key's unit") from None
    if not math.isfinite(value):
        raise ThresholdInputError(key, f"{key}: {raw!r} is not a finite number", "give a real number")
    return ThresholdEdit(key, value)


def _threshold_fix(exc: ThresholdError) -> str:
    if exc.problem is ThresholdProblem.UNKNOWN_PROFILE:
        hint = _suggest(exc.key, list(PROFILES))
        return (hint + " " if hint else "") + f"known profiles: {', '.join(PROFILES)}"
    if exc.problem is ThresholdProblem.OUT_OF_ORDER:
        return "a warning tier must not be looser than its notice tier, nor a critical tier than its warning tier"
    if exc.problem is ThresholdProblem.IMPLAUSIBLE:
        return "check the number and its unit (the key's unit is fixed: mmHg, mg/dL, %, bpm, °C, kg, s)"
    return "`carehub provision thresholds --list` shows every key, its unit and its default"


def apply_thresholds(
    paths: HubPaths,
    resident_id: str,
    *,
    profiles: Sequence[str] | None = None,
    edits: Sequence[ThresholdEdit] = (),
    writer: Writer = os.write,
) -> Thresholds:
    """Set a resident's doctor's profiles (replacing the list, when given) and per-value edits.

    The whole set is validated with :func:`gateway.thresholds.resolve_thresholds` before anything is written.

    Raises:
        ThresholdInputError: naming the key or profile at fault (the config is unchanged).
        ProvisionError: no such resident.
    """
    data = load_document(paths)
    table = _resident_table(data, resident_id)
    names = list(profiles) if profiles is not None else list(table.get("profiles", []))
    overrides: dict[str, float] = {str(k): float(v) for k, v in dict(table.get("thresholds", {})).items()}
    for edit in edits:
        if edit.value is None:
            overrides.pop(edit.key, None)
        else:
            overrides[edit.key] = edit.value
    try:
        resolved = resolve_thresholds(names, overrides)
    except ThresholdError as exc:
        raise ThresholdInputError(exc.key, str(exc), _threshold_fix(exc)) from exc
    table["profiles"] = names
    if overrides:
        table["thresholds"] = overrides
    else:
        table.pop("thresholds", None)
    commit_document(paths, data, writer=writer)
    mark_step(paths, f"thresholds:{resident_id}", {"profiles": names, "overrides": overrides}, writer=writer)
    return resolved


def effective_thresholds(config: GatewayConfig, resident_id: str) -> Thresholds:
    """The resident's thresholds as the gateway will use them."""
    resident = config.resident(resident_id)
    return resolve_thresholds(resident.profiles, dict(resident.thresholds))


# ---------------------------------------------------------------------------------------------------- devices


def provision_pendant_key(paths: HubPaths, address: str, key: bytes | None = None) -> tuple[Path, bytes, bool]:
    """The pendant's 32-byte key file: ``key`` if given, else the existing one, else 32 fresh random bytes.

    Returns:
        (key file, key, whether a new key was made or imported).

    Raises:
        ConfigWriteError: the key file could not be written.
    """
    path = paths.pendant_key(address)
    if key is None and path.exists():
        try:
            _, existing = load_pendant_key(path)
        except KeyFileError as exc:
            raise ProvisionError(f"the pendant key file is unusable: {exc}", f"delete {path} and pair again") from exc
        return path, existing, False
    new = key if key is not None else secrets.token_bytes(32)
    try:
        paths.keys.mkdir(mode=0o700, parents=True, exist_ok=True)
        save_pendant_key(path, address.upper(), new)
    except KeyFileError as exc:
        raise ConfigWriteError(f"could not write the pendant key: {exc}", "free space on the hub's storage") from exc
    return path, new, True


def pendant_key_to_check(paths: HubPaths, address: str, key: bytes | None) -> bytes | None:
    """The key a pendant must prove at pairing (``docs/protocol.md`` §9.7): ``key`` if the installer gave one, else
    the one the hub already keeps for ``address`` (pairing again), else None (pairing a pendant then stops).

    Raises:
        ProvisionError: the kept key file is unusable.
    """
    if key is not None:
        return key
    path = paths.pendant_key(address)
    if not path.exists():
        return None
    try:
        return load_pendant_key(path)[1]
    except KeyFileError as exc:
        raise ProvisionError(f"the pendant key file is unusable: {exc}", f"delete {path} and pair again") from exc


def pendant_frame_refusal(device: DeviceConfig, data: bytes) -> ProvisionError | None:
    """Why the hub refused an Event frame from ``device``, when the cause is its key (the installation test's cause).

    Returns:
        The error to report when the frame is a well-formed event whose tag does not verify under the key paired for
        the pendant and its address (the pendant holds another key); None for any other refusal.
    """
    if device.pendant_key_file is None:
        return None
    try:
        _, key = load_pendant_key(device.pendant_key_file)
        event = PendantEvent.from_bytes(data)
    except (KeyFileError, DecodeError):
        return None
    if event.tag_valid(device.address, key):
        return None
    return ProvisionError(
        f"the pendant's press was refused: pendant {device.address}: event tag does not verify under the key paired "
        "for it (the pendant holds another key)",
        "pair it again with the key loaded into it: carehub provision pair "
        f"{device.address} --resident {device.resident} --pendant-key KEY (the pendant proves it)",
    )


def check_address(text: str) -> str:
    """``text`` as a Bluetooth device address in upper case (``AA:BB:CC:DD:EE:FF``), checked before any radio work.

    Raises:
        ProvisionError: not six colon-separated hex octets.
    """
    address = text.strip().upper()
    if not ADDRESS.fullmatch(address):
        raise ProvisionError(
            f"{text!r} is not a Bluetooth address",
            "copy it from `carehub provision scan`: six pairs of hex digits and colons, e.g. C0:11:00:00:00:01",
        )
    return address


# The Blood Pressure and Weight Measurement User ID field is a uint8 and 0xFF means "unknown user" (Bluetooth SIG;
# /work/shared/gatt-formats.md), so a meter's users are 0..254: some meters number them from 0. gateway.config
# accepts the same range for a device's ``user_id``.
USER_ID_MAX: Final = 254


def check_user_id(user_id: int | None) -> int | None:
    """``user_id`` checked as the User ID a multi-user meter stamps on a resident's readings (None: single-user).

    Raises:
        ProvisionError: not 0..254 (255 is the "unknown user" the meter sends when nobody was chosen).
    """
    if user_id is None:
        return None
    if isinstance(user_id, bool) or not isinstance(user_id, int) or not 0 <= user_id <= USER_ID_MAX:
        raise ProvisionError(
            f"user {user_id!r} is not a meter User ID",
            f"give the number the meter shows for this person's user, 0 to {USER_ID_MAX} (255 means unknown user), "
            "or leave it out for a single-user meter",
        )
    return user_id


def check_assignment(paths: HubPaths, address: str, resident: str, *, move: bool = False) -> str:
    """Check, before the radio is used, that ``address`` may be paired for ``resident``; returns the address.

    A device already paired for another resident is not moved silently: readings would be filed under the wrong
    person. ``move`` says the installer means it.

    Raises:
        ProvisionError: a malformed address, an unknown resident, or a device of another resident without ``move``.
    """
    wanted = check_address(address)
    data = load_document(paths)
    _resident_table(data, resident)
    for device in data.get("devices", []):
        if not isinstance(device, dict) or str(device.get("address", "")).upper() != wanted:
            continue
        owner = device.get("resident")
        if owner != resident and not move:
            raise ProvisionError(
                f"{wanted} is paired for resident {owner!r}, not {resident!r}",
                f"if it now belongs to {resident}, pair again with --move",
            )
    return wanted


def add_device(
    paths: HubPaths,
    *,
    address: str,
    kind: DeviceKind,
    resident: str,
    name: str | None = None,
    user_id: int | None = None,
    pendant_key_file: Path | None = None,
    move: bool = False,
    writer: Writer = os.write,
    consent_code: int | None = None,
) -> GatewayConfig:
    """Add (or replace) a device in the config.

    Raises:
        ProvisionError: unknown resident, a device of another resident without ``move``, or invalid values (the
            config is unchanged).
    """
    address = check_assignment(paths, address, resident, move=move)
    check_user_id(user_id)
    data = load_document(paths)
    entry: Mapping[str, object] = {
        "address": address.upper(),
        "kind": kind.value,
        "resident": resident,
        "name": name,
        "user_id": user_id,
        "consent_code": consent_code,  # a multi-user scale's UDS consent code for user_id (issue 14 item 6)
        "pendant_key_file": None if pendant_key_file is None else relative(paths, pendant_key_file),
    }
    upsert_device(data, entry)
    config = commit_document(paths, data, writer=writer)
    mark_step(paths, f"pair:{address.upper()}", {"kind": kind.value, "resident": resident}, writer=writer)
    return config
