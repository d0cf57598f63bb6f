"""Package boundaries: ``community`` depends on ``protocols`` and ``runtime`` only; ``protocols`` depends on no other
package of carehub and stays sans-I/O (no asyncio, no event loop, no sockets).

Each check imports every module of a package in a fresh interpreter (a module already imported by this test
session would hide the import) and lists the modules of the forbidden packages that got loaded.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _modules(package: str) -> list[str]:
    """``package`` and every module under it, found on disk (a new module is checked without editing this test)."""
    walked = pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}.")
    return sorted([package, *(info.name for info in walked)])


def _loaded_after_importing(modules: list[str], forbidden: tuple[str, ...]) -> list[str]:
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"forbidden = {forbidden!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in forbidden)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout)
    return loaded


def test_the_packages_are_found() -> None:
    # The walk must see the modules themselves, or the checks below would pass on an empty list.
    assert {"community.ingest", "community.storage", "community.cli"} <= set(_modules("community"))
    assert {"protocols.envelope", "protocols.pendant", "protocols.gatt"} <= set(_modules("protocols"))
    assert {"runtime.aio", "runtime.output"} <= set(_modules("runtime"))


def test_community_never_imports_the_hub_or_the_simulator() -> None:
    assert _loaded_after_importing(_modules("community"), ("gateway", "sim", "carehub")) == []


def test_protocols_imports_neither_the_hub_nor_the_platform() -> None:
    assert _loaded_after_importing(_modules("protocols"), ("gateway", "community", "sim", "carehub", "runtime")) == []


def test_protocols_stays_sans_io() -> None:
    """DEVELOPERS.md: protocols/ imports only the standard library, cbor2 and PyNaCl; no asyncio, no sockets."""
    loaded = _loaded_after_importing(_modules("protocols"), ("asyncio", "uvloop", "socket", "selectors", "aiomqtt"))
    assert loaded == []


def test_runtime_imports_no_other_package_of_carehub() -> None:
    assert _loaded_after_importing(_modules("runtime"), ("gateway", "community", "sim", "carehub", "protocols")) == []


@pytest.mark.parametrize("forbidden", ["gateway", "community"])
def test_the_check_sees_a_forbidden_import(forbidden: str) -> None:
    # The same check on a module that does import the package reports it.
    module = {"gateway": "gateway.wire", "community": "community.wire"}[forbidden]
    assert forbidden + ".wire" in _loaded_after_importing([module], (forbidden,))
