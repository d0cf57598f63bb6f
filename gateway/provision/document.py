"""The hub's config file as a document the provisioning steps edit, then validate with the gateway's own parser.

Each step loads ``hub.toml`` into plain TOML data, changes its part (hub and broker, a resident, a device, a
resident's thresholds), renders the whole document, checks the text with :func:`gateway.config.parse_config` - the
parser the gateway itself uses, so what is written is exactly what the gateway accepts - and only then replaces the
file atomically. A step that fails at any point leaves the old file as it was. Keys a person added by hand are kept;
comments are not (the file says so in its header).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.config import ConfigError, GatewayConfig, parse_config, render_config
from gateway.provision.errors import NotInitialisedError, ProvisionError
from gateway.provision.files import HubPaths, Writer, write_atomic

__all__ = ["commit_document", "load_document", "relative", "upsert_device", "upsert_resident"]

_HEADER = "carehub hub config, written by `carehub provision`; hand edits are kept, comments are not."


def load_document(paths: HubPaths) -> dict[str, Any]:
    """The current config as TOML data.

    Raises:
        NotInitialisedError: there is no config yet.
        ProvisionError: the file is not valid TOML.
    """
    try:
        text = paths.config.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotInitialisedError(
            f"no hub config at {paths.config}", "run `carehub provision init` first (with the same --config)"
        ) from None
    except OSError as exc:
        raise ProvisionError(f"cannot read {paths.config} ({exc.strerror})", "check the file's permissions") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProvisionError(
            f"{paths.config} is not valid TOML ({exc})", "fix the file by hand or restore it, then run this step again"
        ) from exc


def commit_document(paths: HubPaths, data: Mapping[str, Any], *, writer: Writer = os.write) -> GatewayConfig:
    """Validate ``data`` as the gateway would, then replace the config file atomically.

    Raises:
        ProvisionError: the document does not validate (the file is unchanged).
        ConfigWriteError: the file could not be written (the file is unchanged).
    """
    text = render_config(data, header=_HEADER)
    try:
        config = parse_config(text, paths.config)
    except ConfigError as exc:
        raise ProvisionError(
            f"the new config would not load: {exc.key}: {exc.expected}",
            "nothing was changed; correct the value named and run this step again",
        ) from exc
    write_atomic(paths.config, text.encode(), mode=0o600, writer=writer)
    return config


def upsert_resident(data: dict[str, Any], resident_id: str, **fields: object) -> dict[str, Any]:
    """The resident table for ``resident_id`` (created at the end of ``residents`` if new), with ``fields`` set."""
    residents: list[dict[str, Any]] = data.setdefault("residents", [])
    for table in residents:
        if table.get("id") == resident_id:
            table.update({k: v for k, v in fields.items() if v is not None})
            return table
    table = {"id": resident_id, **{k: v for k, v in fields.items() if v is not None}}
    residents.append(table)
    return table


def upsert_device(data: dict[str, Any], entry: Mapping[str, object]) -> None:
    """Add the device table ``entry``, replacing one at the same address."""
    address = str(entry["address"]).upper()
    devices: list[dict[str, Any]] = [d for d in data.get("devices", []) if str(d.get("address", "")).upper() != address]
    devices.append({k: v for k, v in entry.items() if v is not None})
    data["devices"] = devices


def relative(paths: HubPaths, path: Path) -> str:
    """``path`` relative to the hub directory when inside it (the config anchors relative paths there)."""
    try:
        return str(path.relative_to(paths.root))
    except ValueError:
        return str(path)
