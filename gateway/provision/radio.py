"""Finding and pairing the kit over bleak's public API, on whichever backend the caller chooses.

``scanner_backend``/``client_backend`` are bleak backend classes: ``None`` for bleak's platform default (BlueZ on
the hub), or the simulated radio's classes (``sim.ble.backend_for(link)``).

On the platform's backend, a hub whose Bluetooth stack cannot be reached (no system D-Bus socket, bluetoothd not
running, no adapter, the adapter off) ends the first radio step with :class:`BluetoothUnavailableError` and a one-line
fix, never with the D-Bus library's traceback (issue 16.5).

A pendant is paired with the key loaded into it, and the key is proved before anything is saved (issue 16.3,
``docs/protocol.md`` §9.7): over the same link the hub reads Device Info (the pendant's id must be its Bluetooth
identity address, which the hub verifies every frame against), writes a fresh :class:`~protocols.pendant.KeyChallenge`
to Key Check and verifies the answer under the key given. A mistyped key ends pairing with
:class:`PendantKeyMismatchError` ("the pendant's key does not match: ...").

A meter that shows a 6-digit PIN (passkey entry, issue 14 item 3) asks for it while it bonds. :func:`open_radio` given
a :class:`~gateway.ble_passkey.PasskeyDesk` makes whichever backend it opens ask that desk (BlueZ through the hub's
pairing agent, `gateway.ble_agent`; the simulated radio through the hub central's SMP delegate), and
:func:`pair_device` routes the request to the installer's :class:`~gateway.ble_passkey.PasskeySource` for the
pairing. A PIN the meter refuses ends pairing with :class:`PasskeyRejectedError`, a PIN the installer did not give with
:class:`PasskeyNeededError`; nothing is saved either way. Any bond the hub held with the device is forgotten before it
pairs again, so a meter that lost its bond (reset, batteries out, paired with a phone) is paired afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bleak import BleakClient, BleakScanner
from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
)
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from gateway.ble_agent import AgentRegistrationError, bluez_agent
from gateway.ble_passkey import (
    FixedPasskey,
    NoPasskey,
    PasskeyDesk,
    PasskeyFormatError,
    PasskeyLog,
    PasskeySource,
    PromptedPasskey,
    parse_passkey,
)
from gateway.config import DeviceKind
from gateway.provision.consent import check_consent
from gateway.provision.errors import (
    BluetoothUnavailableError,
    BondRefusedError,
    DeviceNotFoundError,
    ProvisionError,
)
from protocols.errors import AuthenticationError, DecodeError
from protocols.gatt.uds import Consent
from protocols.pendant import DEVICE_INFO_CHAR_UUID, KEY_CHECK_CHAR_UUID, DeviceInfo, KeyAnswer, KeyChallenge
from protocols.profiles import PROFILES

__all__ = [
    "INSTRUCTIONS",
    "LOAD_PENDANT_KEY",
    "SERVICE_KINDS",
    "Found",
    "PairResult",
    "PasskeyNeededError",
    "PasskeyRejectedError",
    "PendantIdentityError",
    "PendantKeyMismatchError",
    "check_pendant_key",
    "installer_passkeys",
    "kind_of",
    "open_radio",
    "pair_device",
    "scan_devices",
]


def _uuid16(short: int) -> str:
    return f"0000{short:04x}-0000-1000-8000-00805f9b34fb"


# Bluetooth SIG assigned numbers (GATT services) and the carehub pendant service (docs/protocol.md §9).
# The service that identifies each kind, and how the installer makes a device of that kind advertise for pairing, are
# the kind's profile (protocols.profiles).
SERVICE_KINDS: Final[dict[str, DeviceKind]] = {p.service_uuid: kind for kind, p in PROFILES.items()}
_SERVICE_OF: Final = {kind: uuid for uuid, kind in SERVICE_KINDS.items()}
_BATTERY_LEVEL: Final = _uuid16(0x2A19)

INSTRUCTIONS: Final[dict[DeviceKind, str]] = {kind: p.instructions for kind, p in PROFILES.items()}
#: How a key gets into a pendant: over USB with mpremote, as ``firmware/README.md`` ("Provisioning") shows.
LOAD_PENDANT_KEY: Final = (
    "load it over USB: mpremote exec \"import store; store.provision('', b'ADDRESS', bytes.fromhex('KEY'))\" "
    "then mpremote reset (firmware/README.md, 'Provisioning')"
)
_ANSWER_WAIT_S: Final = 5.0  # the firmware answers within a scheduler turn; a lost indication is read instead


class PendantKeyMismatchError(ProvisionError):
    """The pendant's answer to the key challenge does not verify under the key given: it holds another key."""


class PendantIdentityError(ProvisionError):
    """The pendant's id (Device Info) is not its Bluetooth identity address, which the hub verifies frames against."""


class PasskeyRejectedError(BondRefusedError):
    """The meter refused the PIN the installer gave (a wrong passkey): it did not bond, nothing was saved."""


class PasskeyNeededError(BondRefusedError):
    """The meter asked for the PIN it shows and none was given: it did not bond, nothing was saved."""


_NO_BLUEZ_FIX: Final = "install bluez and start bluetoothd, or pass --link for the simulated radio"
# D-Bus errors meaning nobody answers for org.bluez on the system bus: bluetoothd is not running.
_NO_BLUEZ_SERVICE: Final = frozenset(
    {"org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner"}
)


def _unavailable(exc: BaseException) -> BluetoothUnavailableError | None:
    """The setup problem ``exc`` (raised by bleak's BlueZ backend at its first use) stands for, if it is one."""
    if isinstance(exc, BleakBluetoothNotAvailableError):
        if exc.reason is BleakBluetoothNotAvailableReason.POWERED_OFF:
            return BluetoothUnavailableError(
                f"Bluetooth is switched off ({exc.args[0]})", "switch it on: rfkill unblock bluetooth"
            )
        return BluetoothUnavailableError(f"Bluetooth is not available ({exc.args[0]})", _NO_BLUEZ_FIX)
    if isinstance(exc, BleakDBusError) and exc.dbus_error in _NO_BLUEZ_SERVICE:
        return BluetoothUnavailableError("Bluetooth is not available (bluetoothd is not running)", _NO_BLUEZ_FIX)
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
        # The system bus socket is missing or refuses: no D-Bus, hence no BlueZ.
        reason = exc.strerror or type(exc).__name__
        return BluetoothUnavailableError(f"Bluetooth is not available (no system D-Bus: {reason})", _NO_BLUEZ_FIX)
    return None


@contextlib.contextmanager
def _bluetooth_needed(platform: bool) -> Iterator[None]:
    """Turn the platform stack's "there is no Bluetooth here" errors into :class:`BluetoothUnavailableError`."""
    try:
        yield
    except (BleakError, OSError) as exc:
        problem = _unavailable(exc) if platform else None
        if problem is None:
            raise
        raise problem from exc


def kind_of(service_uuids: Collection[str]) -> DeviceKind | None:
    """The kit kind advertising these services, or None for anything else."""
    for uuid in service_uuids:
        kind = SERVICE_KINDS.get(uuid.lower())
        if kind is not None:
            return kind
    return None


@dataclass(frozen=True, slots=True)
class Found:
    """A device heard during a scan.

    Attributes:
        address: its Bluetooth address (upper case).
        name: advertised local name, if any.
        kind: what kind of kit it is, by its advertised service, or None for a stranger.
        rssi: signal strength of the last advertisement, dBm.
        paired: whether the hub's config already has it.
        last_seen: monotonic time of the last advertisement.
    """

    address: str
    name: str | None
    kind: DeviceKind | None
    rssi: int | None
    paired: bool
    last_seen: float


async def scan_devices(
    seconds: float,
    *,
    paired: Collection[str] = (),
    scanner_backend: type[BaseBleakScanner] | None = None,
    only_kit: bool = True,
) -> AsyncIterator[tuple[Found, ...]]:
    """Scan for ``seconds``; yield the table of devices heard so far (strongest first) after each change.

    Args:
        seconds: how long to listen.
        paired: addresses already in the config.
        scanner_backend: bleak backend class, None for the platform default.
        only_kit: leave out devices that advertise none of the kit's services.

    Raises:
        BluetoothUnavailableError: the platform's Bluetooth stack cannot be used (see the module docstring).
    """
    known = {a.upper() for a in paired}
    seen: dict[str, Found] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    async with contextlib.AsyncExitStack() as stack:
        with _bluetooth_needed(scanner_backend is None):
            scanner = await stack.enter_async_context(BleakScanner(backend=scanner_backend))
        generator = scanner.advertisement_data()
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                try:
                    async with asyncio.timeout(remaining):
                        device, adv = await anext(generator)
                except TimeoutError:
                    return
                kind = kind_of(adv.service_uuids)
                if kind is None and only_kit:
                    continue
                address = device.address.upper()
                found = Found(
                    address, adv.local_name or device.name, kind, adv.rssi, address in known, time.monotonic()
                )
                before = seen.get(address)
                seen[address] = found
                if before is None or (before.name, before.kind, before.rssi) != (found.name, found.kind, found.rssi):
                    yield tuple(sorted(seen.values(), key=lambda f: -(f.rssi if f.rssi is not None else -999)))
        finally:
            await generator.aclose()


@dataclass(frozen=True, slots=True)
class PairResult:
    """A bonded device.

    Attributes:
        address: its identity address: the one the stack reports once bonded (under BlueZ, a device found at a
            resolvable private address is known by its identity from then on, and is matched by it later).
        kind: its kind, from its GATT services.
        name: its advertised name.
        battery: battery level read after bonding, if it has the Battery service.
        key_checked: a pendant that proved it holds the key given (``docs/protocol.md`` §9.7).
    """

    address: str
    kind: DeviceKind
    name: str | None
    battery: int | None
    key_checked: bool = False


def _key_needed(address: str) -> ProvisionError:
    return ProvisionError(
        f"{address} is a pendant, and a pendant is paired with the key loaded into it",
        "give that key with --pendant-key (64 hex digits); to make one (python3 -c 'import secrets; "
        "print(secrets.token_hex(32))') and " + LOAD_PENDANT_KEY.replace("ADDRESS", address),
    )


def _parse_answer(raw: bytes) -> KeyAnswer | None:
    try:
        return KeyAnswer.from_bytes(bytes(raw))
    except DecodeError:
        return None  # empty (nothing answered yet) or the hub's own challenge, still the value


async def check_pendant_key(client: BleakClient, identity: str, key: bytes) -> None:
    """Prove over ``client`` that the pendant at ``identity`` holds ``key`` under the id the hub will verify.

    Raises:
        PendantIdentityError: its Device Info names another id.
        PendantKeyMismatchError: its answer to a fresh challenge does not verify under ``key``.
        ProvisionError: its firmware has no Key Check, or it did not answer.
        BleakError: the link failed.
    """
    try:
        info = DeviceInfo.from_bytes(bytes(await client.read_gatt_char(str(DEVICE_INFO_CHAR_UUID))))
    except DecodeError as exc:
        raise ProvisionError(f"{identity}: unreadable pendant Device Info ({exc})", "update its firmware") from exc
    if info.pendant_id != identity:
        raise PendantIdentityError(
            f"the pendant at {identity} was provisioned with the id {info.pendant_id!r}, but the hub verifies its "
            f"calls against its Bluetooth address {identity}",
            "load its key again with the id " + LOAD_PENDANT_KEY.replace("ADDRESS", identity),
        )
    char = client.services.get_characteristic(str(KEY_CHECK_CHAR_UUID))
    if char is None:
        raise ProvisionError(
            f"the pendant at {identity} cannot prove its key (no Key Check, docs/protocol.md §9.7)",
            "update its firmware (firmware/README.md) and pair again",
        )
    challenge = KeyChallenge.fresh()
    answers: asyncio.Queue[bytes] = asyncio.Queue()
    await client.start_notify(char, lambda _char, data: answers.put_nowait(bytes(data)))
    try:
        await client.write_gatt_char(char, bytes(challenge), response=True)
        answer: KeyAnswer | None = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_ANSWER_WAIT_S):
                while answer is None:
                    candidate = _parse_answer(await answers.get())
                    if candidate is not None and candidate.answers(challenge):
                        answer = candidate
        if answer is None:  # the indication was lost or refused (one at a time): the answer is still the value
            candidate = _parse_answer(bytes(await client.read_gatt_char(char)))
            if candidate is not None and candidate.answers(challenge):
                answer = candidate
    finally:
        with contextlib.suppress(BleakError):
            await client.stop_notify(char)
    if answer is None:
        raise ProvisionError(
            f"the pendant at {identity} did not answer the hub's key check",
            "update its firmware (firmware/README.md) and pair again",
        )
    try:
        answer.verify(challenge, identity, key)
    except AuthenticationError as exc:
        raise PendantKeyMismatchError(
            f"the pendant's key does not match: {identity} answered the hub's challenge under another key ({exc})",
            "check the 64 hex digits of the key given, or "
            + LOAD_PENDANT_KEY.replace("ADDRESS", identity)
            + "; nothing was saved",
        ) from exc


_PROMPT_TRIES: Final = 3


def _ask_terminal(address: str) -> int | None:
    """Ask on the terminal for the PIN the meter shows (blocking: run in a thread); None when the installer gives
    up (an empty line, end of input, or three entries that are not six digits)."""
    for _ in range(_PROMPT_TRIES):
        sys.stderr.write(f"{address} shows a 6-digit PIN; type it (empty to give up): ")
        sys.stderr.flush()
        line = sys.stdin.readline()
        if not line.strip():
            return None
        try:
            return parse_passkey(line)
        except PasskeyFormatError as exc:
            sys.stderr.write(f"{exc}\n")
    return None


async def _terminal_passkey(address: str) -> int | None:
    return await asyncio.to_thread(_ask_terminal, address)


def installer_passkeys(passkey: str | None, *, interactive: bool) -> PasskeySource:
    """The installer's passkey source for ``carehub provision pair``: the ``--passkey`` given, else a prompt on the
    terminal when there is one (``interactive``: standard input is a TTY), else none (a meter that asks for its
    PIN then ends pairing with :class:`PasskeyNeededError`).

    Raises:
        ProvisionError: ``passkey`` is not six digits (checked before the radio is used).
    """
    if passkey is not None:
        try:
            return FixedPasskey(parse_passkey(passkey))
        except PasskeyFormatError as exc:
            raise ProvisionError(
                f"--passkey: {exc}", "give the 6 digits the meter shows, e.g. --passkey 042917"
            ) from exc
    return PromptedPasskey(_terminal_passkey) if interactive else NoPasskey()


def _bond_refused(
    address: str, kind: DeviceKind | None, exc: BaseException, log: PasskeyLog | None = None
) -> BondRefusedError:
    if log is not None and log.was_asked:
        if log.given is not None:
            return PasskeyRejectedError(
                f"{address} refused the PIN {log.given:06d}",
                "type the 6 digits the meter shows now (it may show new ones for each try) and pair again; "
                "nothing was saved",
            )
        return PasskeyNeededError(
            f"{address} shows a 6-digit PIN and asked for it, but none was given",
            "pair again with --passkey followed by the 6 digits on the meter's display (or type them when asked); "
            "nothing was saved",
        )
    how = INSTRUCTIONS.get(kind, "Put the device in pairing mode") if kind else "Put the device in pairing mode"
    return BondRefusedError(
        f"{address} refused to pair ({exc})",
        "it may still be paired with another hub or phone: clear its pairings (see its manual, often by holding "
        f"the Bluetooth button for 10 s), then {how[0].lower()}{how[1:]} and pair again",
    )


async def pair_device(
    address: str,
    *,
    expect: DeviceKind | None = None,
    scanner_backend: type[BaseBleakScanner] | None = None,
    client_backend: type[BaseBleakClient] | None = None,
    give_up_after: float = 20.0,
    pendant_key: bytes | None = None,
    desk: PasskeyDesk | None = None,
    passkeys: PasskeySource | None = None,
    consent: Consent | None = None,
) -> PairResult:
    """Forget any bond the hub held with the device, find it, connect, bond (LE Secure Connections), and check it
    offers the service of its kind.

    A pendant must prove it holds ``pendant_key`` (:func:`check_pendant_key`) before this returns. A meter that
    shows a PIN asks ``desk`` (the one :func:`open_radio` installed), which asks ``passkeys`` (none: the request is
    refused).

    Raises:
        DeviceNotFoundError: nothing advertises at ``address`` within ``give_up_after`` seconds.
        BluetoothUnavailableError: the platform's Bluetooth stack cannot be used (see the module docstring).
        BondRefusedError: the device refused bonding; :class:`PasskeyRejectedError` when it refused the PIN given,
            :class:`PasskeyNeededError` when it asked for one and none was given.
        PendantKeyMismatchError, PendantIdentityError: a pendant that does not hold ``pendant_key`` under its
            address.
        ConsentRefusedError: a multi-user scale refused ``consent`` (its User Data Service consent for the
            resident's user index, `gateway.provision.consent`).
        ProvisionError: the device is not the expected kind, a pendant without ``pendant_key``, or the link failed.
    """
    wanted = address.upper()
    if expect is DeviceKind.PENDANT and pendant_key is None:
        raise _key_needed(wanted)
    how = INSTRUCTIONS.get(expect, "") if expect else "Put the device in pairing mode."
    extra: dict[str, Any] = {} if scanner_backend is None else {"backend": scanner_backend}
    with _bluetooth_needed(scanner_backend is None):
        moved = await _forget_bond(wanted, client_backend)
        device = await BleakScanner.find_device_by_address(wanted, timeout=give_up_after, **extra)
    if device is None and moved:
        raise DeviceNotFoundError(
            f"nothing is advertising at {wanted}: its old bond is removed, and without it the hub cannot recognise "
            "the private addresses it advertises under",
            f"{how} Then find it with `carehub provision scan` and pair the private address it shows now.",
        )
    if device is None:
        raise DeviceNotFoundError(
            f"nothing is advertising at {wanted}", f"{how} Then pair again within a minute (bring it near the hub)."
        )
    try:
        async with BleakClient(device, backend=client_backend, timeout=give_up_after) as client:
            with desk.pairing(wanted, passkeys or NoPasskey()) if desk else contextlib.nullcontext() as log:
                try:
                    await client.pair()
                except BleakError as exc:
                    raise _bond_refused(wanted, expect, exc, log) from exc
            identity = client.address.upper()  # bleak follows BlueZ's Address change when the bond resolves an RPA
            uuids = {s.uuid.lower() for s in client.services}
            kind = kind_of(uuids)
            if kind is None:
                raise ProvisionError(
                    f"{wanted} offers none of the kit's services", "check the address: this is not a carehub kit device"
                )
            if expect is not None and kind is not expect:
                raise ProvisionError(
                    f"{wanted} is a {kind.value}, not a {expect.value}", f"pair it as --kind {kind.value}"
                )
            if kind is DeviceKind.PENDANT:
                if pendant_key is None:
                    raise _key_needed(wanted)
                await check_pendant_key(client, identity, pendant_key)
            if consent is not None:
                await check_consent(client, wanted, consent)
            battery: int | None = None
            if client.services.get_characteristic(_BATTERY_LEVEL) is not None:
                try:
                    raw = await client.read_gatt_char(_BATTERY_LEVEL)
                    battery = raw[0] if raw else None
                except BleakError:
                    battery = None
    except BleakDeviceNotFoundError as exc:
        raise DeviceNotFoundError(f"{wanted} stopped advertising ({exc})", f"{how} Then pair again.") from exc
    except (BleakError, TimeoutError) as exc:
        raise ProvisionError(
            f"the Bluetooth link to {wanted} failed ({exc or type(exc).__name__})",
            f"bring the device next to the hub; {how[0].lower()}{how[1:]} and pair again",
        ) from exc
    return PairResult(identity, kind, device.name, battery, key_checked=kind is DeviceKind.PENDANT)


async def _forget_bond(address: str, client_backend: type[BaseBleakClient] | None) -> bool:
    """Drop the bond the hub holds with `address`, if any (BlueZ: RemoveDevice; the simulated radio: its key
    store), so that pairing makes a fresh one: a meter that lost its own copy refuses the old keys for good.

    A bond is kept under the meter's identity address. The simulated radio's key store resolves a private address
    typed here with its bonds' IRKs (`sim.ble.client.BumbleClient.unpair`). BlueZ gives no IRKs over D-Bus (it
    resolves a bonded meter's private addresses itself and reports the identity, which is what to type), but keeps
    the bond in an object named after the address the meter was first seen at: one bonded at a private address is
    found by its ``Address`` (:func:`_forget_bluez_identity`).

    Returns:
        True when the bond removed was one BlueZ kept under another address (the meter advertises under private
        addresses, which BlueZ cannot resolve without the bond).
    """
    try:
        await BleakClient(address, backend=client_backend).unpair()
    except BleakDeviceNotFoundError:  # no bond under that name (BlueZ: no such object)
        return client_backend is None and await _forget_bluez_identity(address)
    return False


_BLUEZ_DEVICE: Final = "org.bluez.Device1"


async def _forget_bluez_identity(address: str) -> bool:
    """Remove bluetoothd's bonded device objects whose ``Address`` is `address` (their path names the private address
    they were first seen at); whether one was removed."""
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        reply = await bus.call(
            Message(
                destination="org.bluez", path="/", interface="org.freedesktop.DBus.ObjectManager",
                member="GetManagedObjects",
            )
        )  # fmt: skip
        if reply is None or reply.message_type is MessageType.ERROR:
            return False
        removed = False
        for path, interfaces in reply.body[0].items():
            device = interfaces.get(_BLUEZ_DEVICE)
            if device is None or str(device["Address"].value).upper() != address:
                continue
            if "Paired" in device and not device["Paired"].value:
                continue
            gone = await bus.call(
                Message(
                    destination="org.bluez", path=str(device["Adapter"].value), interface="org.bluez.Adapter1",
                    member="RemoveDevice", signature="o", body=[path],
                )
            )  # fmt: skip
            removed = removed or (gone is not None and gone.message_type is not MessageType.ERROR)
        return removed
    finally:
        bus.disconnect()


@contextlib.asynccontextmanager
async def open_radio(
    link: str | None, *, keystore: Path | None = None, desk: PasskeyDesk | None = None
) -> AsyncIterator[tuple[type[BaseBleakScanner] | None, type[BaseBleakClient] | None]]:
    """The bleak backends to use: the platform's (``link`` None) or the simulated radio on ``link``.

    With a simulated link, the hub's central is opened here with the bond key store the gateway runner uses
    (``data/bonds.json``), so bonds made while pairing are the ones the gateway later re-encrypts with. With a
    ``desk``, pairing asks it for passkeys and yes/no answers: on BlueZ through the hub's pairing agent (registered
    here), on the simulated radio through the hub central's SMP delegate.

    Raises:
        BluetoothUnavailableError: with a ``desk`` on the platform's backend, bluetoothd cannot be reached.
    """
    if link is None:
        if desk is None:
            yield None, None
            return
        async with contextlib.AsyncExitStack() as stack:
            with _bluetooth_needed(True):
                try:
                    await stack.enter_async_context(bluez_agent(desk))
                except AgentRegistrationError as exc:
                    if exc.dbus_error in _NO_BLUEZ_SERVICE:
                        raise BluetoothUnavailableError(
                            "Bluetooth is not available (bluetoothd is not running)", _NO_BLUEZ_FIX
                        ) from exc
                    raise ProvisionError(
                        f"bluetoothd did not take the hub's pairing agent ({exc})",
                        "restart bluetoothd (systemctl restart bluetooth) and pair again",
                    ) from exc
            yield None, None
        return
    import sim.ble  # noqa: PLC0415 - the simulated radio is needed only when a link is named
    import sim.ble.world  # noqa: PLC0415

    try:
        spec = sim.ble.parse_link(link)
    except sim.ble.LinkConfigError as exc:
        raise ProvisionError(f"--link {link!r} is not usable ({exc})", "use local[:NAME] or tcp:HOST:PORT") from exc
    async with sim.ble.open_central(spec, keystore=None if keystore is None else str(keystore)) as central:
        if desk is not None:
            sim.ble.world.answer_pairing_with(central.device, desk)
        yield sim.ble.backend_for(spec)
