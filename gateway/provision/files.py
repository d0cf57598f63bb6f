"""Where a hub keeps its provisioning files, and how they are written: atomically, or not at all.

Layout, all under the directory of the hub's config file (``--config``)::

    hub.toml                  the gateway config (gateway.config format)
    keys/                     mode 0700
      hub.key                 the hub's Ed25519 identity (0600, protocols.keys)
      hub.pub                 its public key file, for enrolment
      platform.pub            the platform's public keys
      broker.password         the hub's broker password (0600), referenced by [broker] password_file
      pendant-<address>.key   each pendant's 32-byte key (0600)
    data/                     the outbox (outbox.db) and BLE bonds (bonds.json), as the gateway runner expects
    provision/state.json      which steps are done, for `carehub provision status` and the web page
    provision/pin             the installer PIN's salted hash (0600)
    reports/                  installation reports (JSON and text)

Every write goes to a temp file in the same directory, is fsynced, renamed over the target and the directory is
fsynced, so a crash or a full disk leaves either the old file or the new one. The writer of the bytes is injectable
(:data:`Writer`), so tests can make the disk "full".
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from gateway.provision.errors import ConfigWriteError, NotInitialisedError
from protocols import atomic

__all__ = [
    "CONFIG_NAME",
    "HubPaths",
    "ProvisionState",
    "Writer",
    "load_state",
    "mark_step",
    "require_config",
    "write_atomic",
]

CONFIG_NAME: Final = "hub.toml"

Writer = atomic.Writer
"""Writes bytes to a file descriptor and returns how many were written (the signature of :func:`os.write`)."""


@dataclass(frozen=True, slots=True)
class HubPaths:
    """The files of one hub, all relative to the directory holding its config."""

    config: Path

    @classmethod
    def for_config(cls, config: Path) -> HubPaths:
        """Paths for the hub whose config is (or will be) ``config``."""
        return cls(config.expanduser().absolute())

    @property
    def root(self) -> Path:
        """The hub's directory."""
        return self.config.parent

    @property
    def keys(self) -> Path:
        """The key directory (mode 0700)."""
        return self.root / "keys"

    @property
    def hub_key(self) -> Path:
        """The hub's private identity file."""
        return self.keys / "hub.key"

    @property
    def hub_pub(self) -> Path:
        """The hub's public key file, handed to the platform."""
        return self.keys / "hub.pub"

    @property
    def platform_pub(self) -> Path:
        """The platform's public keys."""
        return self.keys / "platform.pub"

    @property
    def broker_password(self) -> Path:
        """The hub's broker password."""
        return self.keys / "broker.password"

    def pendant_key(self, address: str) -> Path:
        """The key file of the pendant at ``address``."""
        return self.keys / f"pendant-{address.upper().replace(':', '')}.key"

    @property
    def data(self) -> Path:
        """Outbox and bonds."""
        return self.root / "data"

    @property
    def outbox(self) -> Path:
        """The outbox database."""
        return self.data / "outbox.db"

    @property
    def bonds(self) -> Path:
        """The simulated radio's bond key store (the gateway runner uses the same file)."""
        return self.data / "bonds.json"

    @property
    def state_dir(self) -> Path:
        """Provisioning state."""
        return self.root / "provision"

    @property
    def state(self) -> Path:
        """Which steps are done."""
        return self.state_dir / "state.json"

    @property
    def pin(self) -> Path:
        """The installer PIN's hash."""
        return self.state_dir / "pin"

    @property
    def reports(self) -> Path:
        """Installation reports."""
        return self.root / "reports"


def require_config(paths: HubPaths) -> None:
    """Check that the hub has been set up: every command but ``init`` says the same when it has not.

    Nothing is created or written.

    Raises:
        NotInitialisedError: there is no config file at ``paths.config``.
    """
    if not paths.config.is_file():
        raise NotInitialisedError(
            f"no hub config at {paths.config}",
            f"run `carehub provision init --config {paths.config}` first, or pass the --config of a set-up hub",
        )


def _fix_for(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free space on the hub's storage (`carehub doctor` shows how much is free), then run this step again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "run as the hub's service user on writable storage, then run this step again"
    return "check the hub's storage (`carehub doctor`), then run this step again"


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, writer: Writer = os.write) -> None:
    """Replace ``path`` with ``data`` through :func:`protocols.atomic.write_atomic` (the one atomic-write helper).

    Raises:
        ConfigWriteError: nothing could be written; ``path`` still holds what it held before.
    """
    try:
        atomic.write_atomic(path, data, mode=mode, parents=True, writer=writer)
    except OSError as exc:
        raise ConfigWriteError(f"could not write {path} ({exc.strerror or exc})", _fix_for(exc)) from exc


@dataclass(frozen=True, slots=True)
class ProvisionState:
    """Which provisioning steps are done, each with when and a few details."""

    steps: Mapping[str, Mapping[str, Any]]

    def done(self, step: str) -> bool:
        """Whether ``step`` has completed at least once."""
        return step in self.steps


def load_state(paths: HubPaths) -> ProvisionState:
    """The recorded state; an absent or unreadable state file means nothing is recorded yet."""
    try:
        raw = json.loads(paths.state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ProvisionState({})
    steps = raw.get("steps") if isinstance(raw, dict) else None
    if not isinstance(steps, dict):
        return ProvisionState({})
    return ProvisionState({k: v for k, v in steps.items() if isinstance(k, str) and isinstance(v, dict)})


def mark_step(paths: HubPaths, step: str, details: Mapping[str, Any], *, writer: Writer = os.write) -> None:
    """Record that ``step`` completed now, with ``details`` (JSON values)."""
    steps = dict(load_state(paths).steps)
    steps[step] = {"at": datetime.now(UTC).isoformat(timespec="seconds"), **details}
    text = json.dumps({"version": 1, "steps": steps}, indent=2, sort_keys=True) + "\n"
    write_atomic(paths.state, text.encode(), mode=0o600, writer=writer)
