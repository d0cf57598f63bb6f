"""Running the hub daemon as a service: start-up checks, feedback and BLE backend selection, signal handling."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner

from gateway import aio
from gateway.app import open_gateway
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

__all__ = ["GatewayStartError", "check_gateway", "load_checked", "run_gateway", "serve", "summary"]

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


def _backends(config: GatewayConfig) -> tuple[type[BaseBleakScanner] | None, type[BaseBleakClient] | None]:
    """bleak's platform backend, or the simulated radio when the config names a sim link."""
    if config.ble_link is None:
        return None, None
    import sim.ble  # noqa: PLC0415  the simulated radio is needed only when the config asks for it

    keystore = str(config.storage_path.parent / "bonds.json")
    sim.ble.configure(link=config.ble_link, keystore=keystore, address=os.environ.get("CAREHUB_BLE_ADDRESS"))
    return sim.ble.backend_for(config.ble_link)


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
    scanner, client = _backends(config)
    try:
        async with open_gateway(
            config, feedback=_feedback(voice), scanner_backend=scanner, client_backend=client
        ) as gateway:
            probes = [uplink_probe(gateway.uplink)]
            if gateway.ble is not None:
                probes.append(ble_probe(gateway.ble))
            watchdog = Watchdog(notifier, probes, interval_s=watchdog_interval())
            watchdog.ready(f"hub {config.hub_id} running")
            _log.info("hub %s running", config.hub_id)
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
        f"broker {config.broker.host}:{config.broker.port}"
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
