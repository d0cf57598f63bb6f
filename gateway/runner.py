"""Running the hub daemon as a service: start-up checks, feedback and BLE backend selection, signal handling."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Final

from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner

from gateway import aio
from gateway.app import Gateway, open_gateway
from gateway.ble_passkey import PasskeyDesk
from gateway.clock import Clock
from gateway.config import GatewayConfig, load_config
from gateway.errors import OutboxError
from gateway.feedback import (
    FanOutFeedback,
    Feedback,
    FeedbackUnavailableError,
    GpioFeedback,
    LogFeedback,
    VoiceFeedback,
)
from gateway.watchdog import (
    Notifier,
    Watchdog,
    WatchdogUnavailableError,
    ble_probe,
    install_stall_hook,
    uplink_probe,
    watchdog_interval,
)
from protocols.errors import KeyFileError
from protocols.keys import load_hub_identity, load_pendant_key, load_platform_public_keys

__all__ = [
    "GatewayStartError",
    "broker_nodes",
    "check_gateway",
    "load_checked",
    "open_daemon",
    "run_gateway",
    "serve",
    "summary",
]

_log = logging.getLogger(__name__)


class GatewayStartError(RuntimeError):
    """The hub cannot start; the message says what to fix."""


def check_gateway(config: GatewayConfig) -> None:
    """Everything that can be checked before starting: key files, storage directory."""
    try:
        identity = load_hub_identity(config.hub_key_file)
        load_platform_public_keys(config.platform_key_file)
        for device in config.devices:
            if device.pendant_key_file is not None:
                load_pendant_key(device.pendant_key_file)
    except KeyFileError as exc:
        raise GatewayStartError(str(exc)) from None
    if identity.hub_id != config.hub_id:
        raise GatewayStartError(
            f"{config.hub_key_file}: key belongs to hub {identity.hub_id!r}, config says {config.hub_id!r}"
        )
    directory = config.storage_path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise GatewayStartError(f"{directory}: storage directory is not writable ({exc.strerror})") from None


def _feedback(voice: bool) -> Feedback:
    targets: list[Feedback] = [LogFeedback()]
    if voice:
        try:
            targets.append(VoiceFeedback())
        except FeedbackUnavailableError as exc:
            _log.warning("no voice: %s", exc)
    with contextlib.suppress(FeedbackUnavailableError):
        targets.append(GpioFeedback())
    return FanOutFeedback(targets)


@contextlib.asynccontextmanager
async def open_daemon(
    config: GatewayConfig, *, feedback: Feedback | None = None, clock: Clock | None = None
) -> AsyncIterator[Gateway]:
    """The daemon's radio and gateway, opened together; leaving the block closes both.

    The radio is bleak's platform backend (BlueZ on the hub), or the simulated radio when the config names a
    ``[ble] link``. Either way the meters' pairing requests are answered from one desk, the BLE manager's
    (:attr:`gateway.ble.BleManager.passkeys`): on BlueZ through the hub's pairing agent (the manager registers it),
    on the simulated radio through the hub central's SMP delegate (`sim.ble.world.answer_pairing_with`), attached
    here. The daemon has no installer: a meter asking for its PIN is refused (provisioning keeps no PIN to give), and
    Just Works is accepted for provisioned devices only (issue 14 item 3).

    Raises:
        GatewayStartError: the simulated radio's relay cannot be reached.
    """
    async with contextlib.AsyncExitStack() as stack:
        scanner: type[BaseBleakScanner] | None = None
        client: type[BaseBleakClient] | None = None
        central_device = None
        if config.ble_link is not None:
            import sim.ble  # noqa: PLC0415  the simulated radio is needed only when the config asks for it
            import sim.ble.world  # noqa: PLC0415

            keystore = str(config.storage_path.parent / "bonds.json")
            sim.ble.configure(link=config.ble_link, keystore=keystore, address=os.environ.get("CAREHUB_BLE_ADDRESS"))
            try:
                central = await stack.enter_async_context(sim.ble.open_central(config.ble_link))
            except sim.ble.RelayError as exc:
                raise GatewayStartError(f"[ble] link {config.ble_link}: {exc}") from None
            # Until the manager's desk answers (attached below, before its scan has run once), nobody may pair.
            sim.ble.world.answer_pairing_with(central.device, PasskeyDesk())
            central_device = central.device
            scanner, client = sim.ble.backend_for(config.ble_link)
        gateway = await stack.enter_async_context(
            open_gateway(config, feedback=feedback, scanner_backend=scanner, client_backend=client, clock=clock)
        )
        if central_device is not None and gateway.ble is not None:
            sim.ble.world.answer_pairing_with(central_device, gateway.ble.passkeys)
        yield gateway


def broker_nodes(config: GatewayConfig) -> str:
    """The broker nodes the uplink tries, in order, as one phrase for logs and reports."""
    urls = config.broker.urls()
    if len(urls) == 1:
        return urls[0]
    return f"{', '.join(urls)} (a cluster of {len(urls)} nodes, tried in this order)"


async def run_gateway(config: GatewayConfig, *, voice: bool = True) -> None:
    """Run until SIGINT or SIGTERM, telling systemd (when it runs the hub) READY=1, WATCHDOG=1 while the hub makes
    progress, and STOPPING=1 (:mod:`gateway.watchdog`)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        notifier = Notifier()
    except WatchdogUnavailableError as exc:
        raise GatewayStartError(str(exc)) from None
    install_stall_hook(loop, notifier)
    try:
        async with open_daemon(config, feedback=_feedback(voice)) as gateway:
            probes = [uplink_probe(gateway.uplink)]
            if gateway.ble is not None:
                probes.append(ble_probe(gateway.ble))
            watchdog = Watchdog(notifier, probes, interval_s=watchdog_interval())
            watchdog.ready(f"hub {config.hub_id} running")
            _log.info("hub %s running; broker %s", config.hub_id, broker_nodes(config))
            async with asyncio.TaskGroup() as tasks:
                pinger = tasks.create_task(watchdog.run(), name="gateway.watchdog")
                await stop.wait()
                watchdog.stopping()
                pinger.cancel()
    except OutboxError as exc:
        raise GatewayStartError(str(exc)) from None
    finally:
        notifier.close()
    _log.info("hub %s stopped", config.hub_id)


def load_checked(path: Path) -> GatewayConfig:
    """Parse the config at ``path`` and check its key files and storage directory.

    Raises:
        gateway.config.ConfigError: the config is invalid (names the file and key).
        GatewayStartError: a key file or the storage directory is unusable.
    """
    config = load_config(path)
    check_gateway(config)
    return config


def summary(config: GatewayConfig, path: Path) -> str:
    """One line saying what a valid config provisions (``--check``)."""
    return (
        f"{path}: hub {config.hub_id}, {len(config.residents)} resident(s), {len(config.devices)} device(s), "
        f"broker {broker_nodes(config)}"
    )


#: The loggers of carehub's own packages: what ``-v`` makes verbose.
CAREHUB_LOGGERS: Final = ("gateway", "protocols", "runtime", "sim")


def configure_logging(verbosity: int = 0, debug_libraries: Sequence[str] = ()) -> None:
    """Log to standard error, one line per event with its level and logger.

    carehub's own loggers log INFO (``verbosity`` 0) or DEBUG (1 and more); other libraries only warnings, unless
    ``verbosity`` is 2 or more (everything at DEBUG) or they are named in ``debug_libraries`` (e.g. ``bumble``,
    ``aiomqtt``): a radio stack's debug output is thousands of lines a second and drowns the hub's own story.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbosity >= 2 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    own = logging.DEBUG if verbosity >= 1 else logging.INFO
    for name in CAREHUB_LOGGERS:
        logging.getLogger(name).setLevel(own)
    for name in debug_libraries:
        logging.getLogger(name).setLevel(logging.DEBUG)


def serve(config: GatewayConfig, *, voice: bool, verbosity: int = 0, debug_libraries: Sequence[str] = ()) -> None:
    """Log to standard error (:func:`configure_logging`) and run the daemon until SIGINT or SIGTERM.

    Raises:
        GatewayStartError: the outbox cannot be opened.
    """
    configure_logging(verbosity, debug_libraries)
    aio.run(run_gateway(config, voice=voice))
