"""``carehub-hub`` (or ``python -m gateway``): the resident's hub daemon, as its service runs it.

The same daemon and options as ``carehub gateway run``, parsed with the standard library alone: the installer's
command-line toolkit (typer with pydantic, rich, the simulator's and the platform's commands) would otherwise stay in
the hub's memory for as long as it runs. Exit status: 0 after SIGINT or SIGTERM, 1 when the hub cannot start, 2 for
a bad config or key file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.config import ConfigError
from gateway.runner import GatewayStartError, load_checked, serve, summary

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carehub-hub", description="Run the carehub hub daemon (or, with --check, validate its config)."
    )
    parser.add_argument("--config", "-c", type=Path, required=True, help="the hub's TOML config file")
    parser.add_argument("--check", action="store_true", help="only validate the config and the key files")
    parser.add_argument(
        "--voice", action=argparse.BooleanOptionalAction, default=True, help="speak to the resident with espeak-ng"
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log every step")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments), then check or run; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        config = load_checked(args.config)
    except (ConfigError, GatewayStartError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if args.check:
        sys.stdout.write(f"ok {summary(config, args.config)}\n")
        return 0
    try:
        serve(config, voice=args.voice, verbose=args.verbose)
    except GatewayStartError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
