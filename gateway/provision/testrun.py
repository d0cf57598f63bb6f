"""The installation test: a reading from every paired device and a press of the pendant, each followed to the
platform and back, then a signed installation report.

How it runs (only public gateway API is used):

1. :func:`gateway.app.open_gateway` runs the hub from its config with ``ble=False``; this module starts the
   :class:`gateway.ble.BleManager` itself with a :class:`TappingSink` between the BLE sessions and the hub core.
   The tap passes every call through unchanged and notes, once the hub has made it durable (the sink's coroutine
   returned), which device it came from. Same outbox, same uplink; one difference (issue 16 item 2): the hub is
   told it is under test (``Hub.installation_test``) before any device is heard, so every reading and pendant event
   of the test is recorded as installation-test data (``docs/protocol.md`` §3.10): the rules never judge it (the
   test cuff reading raises no alarm, the control-solution strip is no glucose of the resident's), the test press
   is no call for help, and the platform stores it marked, never as an alarm or as the resident's figures. The mark
   covers everything the hub receives while the test runs, so stored records a meter sends from its memory during
   the test (readings taken before it, not yet collected) are marked too: kept and listed with the mark, not judged.
   The hub cannot tell them apart reliably (a meter's clock may be wrong, and its memory holds no test flag).
2. Devices are tested one at a time, pendant last. For each, the installer is told what to do; the device's first
   reading (for the pendant: an authenticated press) that the hub commits is its *arrival*.
3. Delivery: the platform's application-level ack removes envelopes from the outbox, and nothing else does but
   eviction. So once the outbox has been empty with no eviction since the arrival, the arrival's records were
   stored by the platform and acknowledged. The test awaits the uplink's ack event and re-reads the outbox stats;
   it never sleeps.

The hub daemon must be stopped while the test runs (the outbox and the radio have one owner): :data:`STOP_SERVICE`
tells the installer how, naming the systemd unit the hub runs as (:data:`SERVICE_UNIT`, deploy/carehub-hub.service).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner

from gateway.ble import BleManager, Reading, ReadingSink
from gateway.config import DeviceConfig, DeviceKind, GatewayConfig
from gateway.events import BatteryLevel, DeviceReport, ErrorClass, LinkFailed, PendantFrame
from gateway.feedback import Feedback, LogFeedback
from gateway.outbox import Outbox
from gateway.provision.errors import InstallationTestError, ProvisionError
from gateway.provision.files import HubPaths, Writer, write_atomic
from gateway.provision.radio import INSTRUCTIONS
from gateway.provision.steps import pendant_frame_refusal
from gateway.thresholds import DEFAULTS, resolve_thresholds
from gateway.uplink import Uplink
from protocols.errors import DecodeError, KeyFileError
from protocols.keys import load_hub_identity, load_platform_public_keys, sign_detached
from protocols.pendant import PendantEvent, PendantEventType
from protocols.profiles import PROFILES

__all__ = [
    "REPORT_DOMAIN",
    "SERVICE_UNIT",
    "STOP_SERVICE",
    "Arrival",
    "DeviceOutcome",
    "HubUnderTest",
    "InstallationReport",
    "TappingSink",
    "open_hub_under_test",
    "run_installation_test",
    "write_report",
]

REPORT_DOMAIN: Final = b"carehub/v1/installation-report\0"

#: The systemd unit that runs the hub daemon on a hub (``deploy/carehub-hub.service``, docs/raspberry-pi.md).
SERVICE_UNIT: Final = "carehub-hub"
#: What the installer is told before the test starts.
STOP_SERVICE: Final = f"Stop the hub service first (sudo systemctl stop {SERVICE_UNIT}); the test runs the hub itself."

_TEST_PROMPTS: Final[dict[DeviceKind, str]] = {kind: p.test_prompt for kind, p in PROFILES.items()}  # their profiles


@dataclass(frozen=True, slots=True)
class Arrival:
    """Something from a device that the hub has made durable.

    Attributes:
        address: the device.
        what: ``"reading"``, ``"press"`` (a pendant button press), ``"battery"`` or ``"refused"`` (a pendant frame
            the hub refused because its tag does not verify under the key paired for it, or a device that refused
            the hub: an AUTH failure, issue 14 item 3).
        battery: a battery level, when the arrival carried one.
        at: event-loop time when the hub's commit returned.
        refusal: why a ``"refused"`` frame was refused (issue 16 item 3: the cause, not "no press").
    """

    address: str
    what: str
    battery: int | None
    at: float
    refusal: ProvisionError | None = None


class TappingSink:
    """A :class:`gateway.ble.ReadingSink` that forwards to the hub and reports what became durable."""

    def __init__(self, inner: ReadingSink) -> None:
        self._inner = inner
        self.arrivals: asyncio.Queue[Arrival] = asyncio.Queue()

    def _note(self, address: str, what: str, battery: int | None = None, refusal: ProvisionError | None = None) -> None:
        self.arrivals.put_nowait(Arrival(address, what, battery, asyncio.get_running_loop().time(), refusal))

    async def store_readings(self, readings: Sequence[Reading], cursor: tuple[str, int] | None = None) -> None:
        """Forward, then note one arrival per device."""
        await self._inner.store_readings(readings, cursor)
        for address in dict.fromkeys(r.device.address for r in readings):
            self._note(address, "reading")

    async def get_cursor(self, key: str) -> int | None:
        """Forward."""
        return await self._inner.get_cursor(key)

    async def report(self, event: DeviceReport) -> None:
        """Forward, then note a battery level."""
        await self._inner.report(event)
        if isinstance(event, BatteryLevel):
            self._note(event.device.address, "battery", event.level)
        elif isinstance(event, LinkFailed) and event.error_class is ErrorClass.AUTH:
            # The meter refused the hub (it lost its bond, or wants its PIN): no reading can come until it is
            # paired again, and the next try waits the slow AUTH pace, so the device's test ends here.
            device = event.device
            self._note(
                device.address,
                "refused",
                refusal=ProvisionError(
                    f"{device.address} refused the hub (it lost its bond, or wants the PIN it shows): {event.detail}",
                    f"pair it again: carehub provision pair {device.address} --resident {device.resident} "
                    f"--kind {device.kind.value} (add --passkey with the 6 digits if it shows a PIN), then test again",
                ),
            )

    async def pendant_frame(self, frame: PendantFrame) -> bytes | None:
        """Forward; an authenticated, durable press is an arrival."""
        confirm = await self._inner.pendant_frame(frame)
        if confirm is None:
            refusal = pendant_frame_refusal(frame.device, frame.data)
            if refusal is not None:
                self._note(frame.device.address, "refused", refusal=refusal)
        else:
            try:
                event = PendantEvent.from_bytes(frame.data)
            except DecodeError:
                return confirm
            if event.event is PendantEventType.PRESS:
                self._note(frame.device.address, "press", event.battery)
        return confirm


class HubUnderTest(Protocol):
    """What the installation test needs from a running hub."""

    config: GatewayConfig

    @property
    def arrivals(self) -> asyncio.Queue[Arrival]:
        """Durable arrivals, in order."""
        ...

    async def wait_delivered(self) -> None:
        """Return once everything committed so far has been acknowledged by the platform (and none evicted).

        Raises:
            InstallationTestError: an envelope was evicted instead of delivered.
        """
        ...


@runtime_checkable
class _OnBroker(Protocol):
    """A hub under test that can tell which broker node it is connected to (the real one can)."""

    @property
    def broker_node(self) -> str | None:
        """The broker node (``HOST:PORT``) the uplink is connected to now, or None."""
        ...


@dataclass(slots=True)
class _GatewayUnderTest:
    config: GatewayConfig
    tap: TappingSink
    outbox: Outbox
    uplink: Uplink

    @property
    def acked(self) -> asyncio.Event:
        return self.uplink.acked

    @property
    def broker_node(self) -> str | None:
        return self.uplink.node

    @property
    def arrivals(self) -> asyncio.Queue[Arrival]:
        return self.tap.arrivals

    async def wait_delivered(self) -> None:
        evicted_before = (await self.outbox.stats()).evicted_rows_total
        while True:
            self.acked.clear()
            stats = await self.outbox.stats()
            if stats.evicted_rows_total != evicted_before:
                raise InstallationTestError(
                    "the outbox evicted readings instead of delivering them", "run `carehub doctor` and free storage"
                )
            if stats.rows == 0:
                return
            await self.acked.wait()


@contextlib.asynccontextmanager
async def open_hub_under_test(
    config: GatewayConfig,
    *,
    scanner_backend: type[BaseBleakScanner] | None = None,
    client_backend: type[BaseBleakClient] | None = None,
    feedback: Feedback | None = None,
) -> AsyncIterator[HubUnderTest]:
    """Run the hub from ``config`` with the tap in place; leaving the block stops it."""
    from gateway.app import open_gateway  # noqa: PLC0415 - the daemon's wiring is loaded only for a test run

    async with contextlib.AsyncExitStack() as stack:
        gateway = await stack.enter_async_context(open_gateway(config, feedback=feedback or LogFeedback(), ble=False))
        gateway.hub.installation_test = True  # before the radio starts: nothing of the test is the resident's
        tap = TappingSink(gateway.hub)
        manager = await stack.enter_async_context(
            BleManager(config, tap, scanner_backend=scanner_backend, client_backend=client_backend)
        )
        gateway.hub.set_pendant_writer(manager.write_pendant_state)
        yield _GatewayUnderTest(config, tap, gateway.outbox, gateway.uplink)


@dataclass(frozen=True, slots=True)
class DeviceOutcome:
    """How one device did.

    Attributes:
        address, kind, name, resident, user_id: from the config.
        ok: its test reading (or press) reached the platform and was acknowledged.
        detail: one line for the installer.
        arrival_s: seconds from the prompt until the hub had the reading durably.
        delivery_s: seconds from then until the platform's acknowledgement.
        battery: the last battery level seen, percent.
        broker_node: the broker node (``HOST:PORT``) the hub was connected to when the platform's acknowledgement
            arrived (one of a cluster's nodes, issue 15 item 3), or None when it was not acknowledged.
    """

    address: str
    kind: str
    name: str | None
    resident: str
    user_id: int | None
    ok: bool
    detail: str
    arrival_s: float | None
    delivery_s: float | None
    battery: int | None
    broker_node: str | None = None


@dataclass(frozen=True, slots=True)
class InstallationReport:
    """The signed-off record of an installation.

    ``signature`` is the hub's Ed25519 signature over ``REPORT_DOMAIN || canonical JSON of every other field``.
    ``broker`` lists every broker URL the hub tries, in order (``mqtt://a:1883, mqtt://b:1883`` for a cluster's
    nodes); each device's ``broker_node`` says which node its acknowledgement came through.
    """

    hub_id: str
    hub_key_id: str
    platform_key_id: str
    broker: str
    installer: str
    started_at: str
    finished_at: str
    devices: tuple[DeviceOutcome, ...]
    residents: tuple[Mapping[str, Any], ...]
    passed: bool
    signature: str = ""

    def nodes_used(self) -> tuple[str, ...]:
        """The broker nodes the acknowledgements came through, in the order first used."""
        return tuple(dict.fromkeys(d.broker_node for d in self.devices if d.broker_node is not None))

    def body(self) -> dict[str, Any]:
        """Every field but the signature, as JSON values."""
        data = asdict(self)
        data.pop("signature")
        data["devices"] = [asdict(d) for d in self.devices]
        data["residents"] = [dict(r) for r in self.residents]
        return data

    def canonical(self) -> bytes:
        """What the signature covers (after the domain)."""
        return json.dumps(self.body(), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    def to_json(self) -> str:
        """The report with its signature."""
        return json.dumps({**self.body(), "signature": self.signature}, indent=2, ensure_ascii=False) + "\n"

    def to_text(self) -> str:
        """A Markdown summary for people."""
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [
            f"# carehub installation report: {self.hub_id} - {verdict}",
            "",
            f"- installer: {self.installer}",
            f"- tested: {self.started_at} to {self.finished_at}",
            f"- hub key id: {self.hub_key_id}; platform key id: {self.platform_key_id}; broker: {self.broker}",
            f"- acknowledged through broker node: {', '.join(self.nodes_used()) or 'none'}",
            "",
            "## Devices",
            "",
            "| device | kind | resident | result | reading (s) | to platform and back (s) | battery |",
            "|---|---|---|---|---|---|---|",
        ]
        for d in self.devices:
            who = d.resident + (f" (user {d.user_id})" if d.user_id is not None else "")
            lines.append(
                f"| {d.name or d.address} ({d.address}) | {d.kind} | {who} | {'ok' if d.ok else 'FAILED: ' + d.detail}"
                f" | {_num(d.arrival_s)} | {_num(d.delivery_s)} | {'-' if d.battery is None else f'{d.battery}%'} |"
            )
        lines += ["", "## Thresholds", ""]
        for r in self.residents:
            profiles = ", ".join(r["profiles"]) or "defaults"
            lines.append(f"- {r['name']} ({r['id']}): profiles {profiles}")
            changed: Mapping[str, float] = r["differs_from_default"]
            lines += [f"  - {k} = {v:g}" for k, v in sorted(changed.items())] or ["  - every value at its default"]
        lines += ["", f"Signed by the hub (Ed25519, key id {self.hub_key_id}): `{self.signature}`", ""]
        return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@dataclass(slots=True)
class _Progress:
    say: Callable[[str, Mapping[str, Any]], None]
    batteries: dict[str, int] = field(default_factory=dict)
    early: list[Arrival] = field(default_factory=list)  # arrivals of devices whose turn has not come yet


def _refused_or(arrival: Arrival) -> Arrival:
    """``arrival``, unless it is a refused frame: then its cause ends the device's test (issue 16 item 3)."""
    if arrival.refusal is not None:
        raise InstallationTestError(arrival.refusal.what, arrival.refusal.fix)
    return arrival


async def _next_arrival(hub: HubUnderTest, device: DeviceConfig, want: str, progress: _Progress) -> Arrival:
    """The device's first arrival of kind ``want``, including one that came before its turn (kept, not lost)."""
    for i, arrival in enumerate(progress.early):
        if arrival.address == device.address and arrival.what in (want, "refused"):
            return _refused_or(progress.early.pop(i))
    while True:
        arrival = await hub.arrivals.get()
        if arrival.battery is not None:
            progress.batteries[arrival.address] = arrival.battery
        if arrival.address == device.address and arrival.what in (want, "refused"):
            return _refused_or(arrival)
        if arrival.what != "battery":
            progress.early.append(arrival)


async def _test_device(hub: HubUnderTest, device: DeviceConfig, limit_s: float, progress: _Progress) -> DeviceOutcome:
    loop = asyncio.get_running_loop()
    want = "press" if device.kind is DeviceKind.PENDANT else "reading"
    prompt = _TEST_PROMPTS[device.kind]
    progress.say("prompt", {"address": device.address, "kind": device.kind.value, "text": prompt})
    started = loop.time()
    arrival_s: float | None = None
    delivery_s: float | None = None
    broker_node: str | None = None
    try:
        async with asyncio.timeout(limit_s):
            arrival = await _next_arrival(hub, device, want, progress)
            arrival_s = max(0.0, arrival.at - started)
            progress.say("arrived", {"address": device.address, "seconds": round(arrival_s, 3)})
            await hub.wait_delivered()
            delivery_s = loop.time() - max(arrival.at, started)
            broker_node = hub.broker_node if isinstance(hub, _OnBroker) else None
        ok, detail = True, "reached the platform and was acknowledged"
    except TimeoutError:
        if arrival_s is None:
            # The test's own prompt (what to do now), not the pairing instruction (how to wake a device to pair it).
            prompt = _TEST_PROMPTS.get(device.kind, INSTRUCTIONS[device.kind])
            ok, detail = False, f"no {want} within {limit_s:g} s: {prompt} Then test again."
        else:
            ok, detail = (
                False,
                (
                    f"the platform did not acknowledge within {limit_s:g} s: check the broker "
                    "(`carehub doctor`) and that the hub is enrolled"
                ),
            )
    except InstallationTestError as exc:
        ok, detail = False, str(exc)
    outcome = DeviceOutcome(
        address=device.address,
        kind=device.kind.value,
        name=device.name,
        resident=device.resident,
        user_id=device.user_id,
        ok=ok,
        detail=detail,
        arrival_s=None if arrival_s is None else round(arrival_s, 3),
        delivery_s=None if delivery_s is None else round(delivery_s, 3),
        battery=progress.batteries.get(device.address),
        broker_node=broker_node,
    )
    progress.say("result", asdict(outcome))
    return outcome


def _residents(config: GatewayConfig) -> tuple[dict[str, Any], ...]:
    out = []
    for r in config.residents:
        values = resolve_thresholds(r.profiles, dict(r.thresholds)).values
        differs = {k.value: v for k, v in values.items() if DEFAULTS[k] != v}
        out.append({"id": r.id, "name": r.name, "profiles": list(r.profiles), "differs_from_default": differs})
    return tuple(out)


async def run_installation_test(
    config: GatewayConfig,
    *,
    installer: str,
    per_device_timeout: float = 120.0,
    scanner_backend: type[BaseBleakScanner] | None = None,
    client_backend: type[BaseBleakClient] | None = None,
    progress: Callable[[str, Mapping[str, Any]], None] = lambda _kind, _data: None,
    hub_factory: Callable[..., contextlib.AbstractAsyncContextManager[HubUnderTest]] = open_hub_under_test,
) -> InstallationReport:
    """Test every device of ``config`` in turn (pendant last) and return the signed report.

    Args:
        config: the hub's validated config.
        installer: who signs off (name or id).
        per_device_timeout: how long each device may take, from prompt to acknowledgement.
        scanner_backend, client_backend: bleak backends (None: the platform's).
        progress: called with ``("prompt" | "arrived" | "result", details)`` as the test goes.
        hub_factory: runs the hub (tests may substitute a fake).

    Raises:
        InstallationTestError: no devices, or the hub cannot start (keys, storage).
    """
    if not config.devices:
        raise InstallationTestError("no devices are paired yet", "pair the kit first: carehub provision pair ...")
    try:
        identity = load_hub_identity(config.hub_key_file)
        platform = load_platform_public_keys(config.platform_key_file)
    except KeyFileError as exc:
        raise InstallationTestError(f"the hub cannot start: {exc}", "run `carehub doctor` for the fix") from exc
    state = _Progress(progress)
    started = datetime.now(UTC)
    order = sorted(config.devices, key=lambda d: d.kind is DeviceKind.PENDANT)
    outcomes: list[DeviceOutcome] = []
    async with hub_factory(config, scanner_backend=scanner_backend, client_backend=client_backend) as hub:
        for device in order:  # one at a time: the installer handles one device at once
            outcome = await _test_device(hub, device, per_device_timeout, state)
            outcomes.append(outcome)
    report = InstallationReport(
        hub_id=config.hub_id,
        hub_key_id=identity.key_id,
        platform_key_id=platform.key_id,
        broker=", ".join(config.broker.urls()),
        installer=installer,
        started_at=started.isoformat(timespec="seconds"),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        devices=tuple(outcomes),
        residents=_residents(config),
        passed=all(o.ok for o in outcomes),
    )
    signature = sign_detached(identity.signing_key, REPORT_DOMAIN, report.canonical()).hex()
    return InstallationReport(**{**{f: getattr(report, f) for f in report.__slots__}, "signature": signature})


def write_report(paths: HubPaths, report: InstallationReport, *, writer: Writer = os.write) -> tuple[Path, Path]:
    """Write ``installation-<time>.json`` and ``.md`` to the hub's reports directory, and the ``latest`` copies."""
    stamp = report.finished_at.replace(":", "").replace("-", "").replace("+0000", "Z")
    json_path = paths.reports / f"installation-{stamp}.json"
    text_path = paths.reports / f"installation-{stamp}.md"
    for path, text in ((json_path, report.to_json()), (text_path, report.to_text())):
        write_atomic(path, text.encode(), writer=writer)
    write_atomic(paths.reports / "latest.json", report.to_json().encode(), writer=writer)
    write_atomic(paths.reports / "latest.md", report.to_text().encode(), writer=writer)
    return json_path, text_path
