"""``carehub-hub`` (or ``python -m gateway``): the resident's hub daemon, as its service runs it.

The same daemon and options as ``carehub gateway run``, parsed with the standard library alone: the installer's
command-line toolkit (typer with pydantic, rich, the simulator's and the platform's commands) would otherwise stay in
the hub's memory for as long as it runs. Exit status: 0 after SIGINT or SIGTERM, 1 when the hub cannot start (or
standard output went away before ``--check`` could say so), 2 for a bad option, a missing or bad config or key file.
A relative ``--config`` is made absolute once, while the arguments are parsed.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from gateway.config import ConfigError
from gateway.provision.errors import NotInitialisedError
from gateway.provision.files import HubPaths, require_config
from gateway.runner import GatewayStartError, load_checked, serve, summary

__all__ = ["main"]


def _absolute(text: str) -> Path:
    return Path(text).expanduser().absolute()


def _write(stream: TextIO, text: str) -> bool:
    """Write ``text`` to ``stream`` completely, or return False when its reader went away.

    The descriptor is made blocking for the write (and left as it was found): a pipe that another process left
    non-blocking would otherwise end the line at the first full buffer without a word.
    """
    fd = stream.fileno()
    was_blocking = os.get_blocking(fd)
    try:
        os.set_blocking(fd, True)
        stream.write(text)
        stream.flush()
    except OSError:  # EPIPE, ENOSPC, EIO: the line did not get out
        return False
    finally:
        os.set_blocking(fd, was_blocking)
    return True


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line in one line (argparse's default repeats the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        _write(sys.stderr, f"error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="carehub-hub", description="Run the carehub hub daemon (or, with --check, validate its config)."
    )
    parser.add_argument("--config", "-c", type=_absolute, required=True, help="the hub's TOML config file")
    parser.add_argument("--check", action="store_true", help="only validate the config and the key files")
    parser.add_argument(
        "--voice", action=argparse.BooleanOptionalAction, default=True, help="speak to the resident with espeak-ng"
    )
    parser.add_argument(
        "--verbose",
        "-v",
        action="count",
        default=0,
        help="log every step of the hub (-vv: of every library too)",
    )
    parser.add_argument(
        "--debug-lib",
        action="append",
        default=[],
        metavar="LOGGER",
        help="also log this library's debug output (e.g. bumble, aiomqtt); repeat for more",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments), then check or run; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        require_config(HubPaths.for_config(args.config))
        config = load_checked(args.config)
    except NotInitialisedError as exc:
        _write(sys.stderr, f"error: {exc.what}. Fix: {exc.fix}\n")
        return 2
    except (ConfigError, GatewayStartError) as exc:
        _write(sys.stderr, f"error: {exc}\n")
        return 2
    if args.check:
        return 0 if _write(sys.stdout, f"ok {summary(config, args.config)}\n") else 1
    # systemd's watchdog kills a hung hub with SIGABRT: the fault handler first writes every thread's stack to
    # standard error (the journal), which shows where it hung.
    faulthandler.enable()
    try:
        serve(config, voice=args.voice, verbosity=args.verbose, debug_libraries=tuple(args.debug_lib))
    except GatewayStartError as exc:
        _write(sys.stderr, f"error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
