"""Issue 16, first use of the command line: one line for every bad option, a missing extra named, the same message
for every command run before ``init``, and help text that shows what each option is.

Bad options and missing configs run as real processes; help pages are read through :func:`carehub.cli.run` (the
entry point's body) for every command in one process.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import typer.main
from clirun import CAREHUB, CAREHUB_HUB, carehub, one_error_line

from carehub.bench import provision
from carehub.cli import build_app, run

# --- every bad option: one line, exit 2


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["demo", "--speed", "0"], "--speed"),
        (["demo", "--speed", "nan"], "--speed"),
        (["demo", "--hours", "30"], "--hours"),
        (["demo", "--bogus"], "--bogus"),
        (["bench", "--quick", "--bogus"], "--bogus"),
        (["decode"], "UUID"),
        (["nonsense"], "nonsense"),
        (["gateway", "run"], "--config"),
        (["doctor", "--timeout", "-1"], "--timeout"),
        (["provision", "scan", "--seconds", "0"], "--seconds"),
        (["provision", "init", "--hub-id", "Hub 1", "--broker-url", "mqtt://h"], "--hub-id"),
        (["provision", "pair", "--resident", "r1"], "ADDRESS"),
        (["provision", "web", "--port", "70000"], "--port"),
        (["provision", "test", "--installer", "me", "--timeout", "inf"], "--timeout"),
        (["sim", "home", "--scenario", "s.toml", "--speed", "0"], "--speed"),
        (["sim", "home", "--scenario", "s.toml", "--link", "bogus"], "link 'bogus'"),
        (["platform", "readings"], "--config"),
        (["platform", "thresholds", "-c", "p.toml", "--hub", "h"], "--resident"),
    ],
)
def test_a_bad_option_is_one_line_and_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    result = carehub(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert needle in one_error_line(result)
    assert result.stdout == ""


def test_the_daemon_reports_a_bad_option_in_one_line(tmp_path: Path) -> None:
    result = carehub("--config", "hub.toml", "--bogus", cwd=tmp_path, program=CAREHUB_HUB)
    assert result.returncode == 2
    assert "--bogus" in one_error_line(result)


# --- commands before `provision init`

BEFORE_INIT = [
    ["provision", "enroll"],
    ["provision", "resident", "r1"],
    ["provision", "scan", "--link", "local:none"],
    ["provision", "pair", "C0:11:00:00:00:01", "--resident", "r1", "--link", "local:none"],
    ["provision", "thresholds", "--resident", "r1"],
    ["provision", "test", "--installer", "me", "--link", "local:none"],
    ["provision", "pin"],
    ["provision", "status"],
    ["provision", "web", "--port", "1"],
    ["doctor"],
    ["gateway", "run", "--check"],
]


@pytest.mark.parametrize("args", BEFORE_INIT, ids=lambda a: " ".join(a[:2]))
def test_before_init_every_command_says_the_same_and_creates_nothing(tmp_path: Path, args: list[str]) -> None:
    result = carehub(*args, "--config", "hub/hub.toml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    config = tmp_path / "hub" / "hub.toml"
    assert line == (
        f"error: no hub config at {config}. Fix: run `carehub provision init --config {config}` first, "
        "or pass the --config of a set-up hub"
    )
    assert "PIN" not in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_before_init_the_daemon_says_the_same(tmp_path: Path) -> None:
    daemon = carehub("--config", "hub/hub.toml", "--check", cwd=tmp_path, program=CAREHUB_HUB)
    toolkit = carehub("gateway", "run", "--config", "hub/hub.toml", "--check", cwd=tmp_path)
    assert daemon.returncode == toolkit.returncode == 2
    assert one_error_line(daemon) == one_error_line(toolkit)


# --- missing optional extras

_BLOCK_EXTRAS = """\
import sys
from importlib.abc import MetaPathFinder

class NotInstalled(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {BLOCKED}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
from carehub.cli import main
main()
"""


def without(blocked: set[str], *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``carehub ARGS`` in a process where the modules ``blocked`` cannot be imported (as if not installed)."""
    program = (CAREHUB[0], "-c", _BLOCK_EXTRAS.format(BLOCKED=sorted(blocked)))
    return carehub(*args, cwd=cwd, program=program)


EXTRA_MODULES = {"bumble", "amqtt", "aiohttp", "gpiozero"}


def test_help_works_without_any_extra(tmp_path: Path) -> None:
    for args in (["--help"], ["sim", "--help"], ["sim", "home", "--help"], ["provision", "--help"], ["demo", "--help"]):
        result = without(EXTRA_MODULES, *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "Usage: carehub" in result.stdout
    full = without(EXTRA_MODULES, "--help", cwd=tmp_path)
    for group in ("gateway", "platform", "sim", "provision", "doctor", "demo", "bench", "decode"):
        assert group in full.stdout


def test_a_command_whose_extra_is_missing_names_the_extra(tmp_path: Path) -> None:
    home = provision(tmp_path / "hub", "mqtt://127.0.0.1:1")
    (tmp_path / "s.toml").write_text("", encoding="utf-8")
    cases = [
        (["demo", "--hours", "1"], "[sim]", "bumble"),
        (["sim", "home", "--scenario", "s.toml"], "[sim]", "bumble"),
        (["provision", "web", "--config", str(home.path), "--port", "1"], "[installer]", "aiohttp"),
    ]
    for args, extra, module in cases:
        result = without(EXTRA_MODULES, *args, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        line = one_error_line(result)
        assert f"pip install 'carehub{extra}'" in line
        assert module in line
    # The hub's own commands need no extra.
    check = without(EXTRA_MODULES, "gateway", "run", "--config", home.path, "--check", cwd=tmp_path)
    assert check.returncode == 0, check.stderr


def test_a_missing_core_module_is_a_defect_not_a_missing_extra(tmp_path: Path) -> None:
    result = without({"protocols"}, "decode", "2A19", "5a", cwd=tmp_path)
    assert result.returncode == 1
    assert "ModuleNotFoundError: No module named 'protocols'" in result.stderr


# --- help text


def _every_command() -> list[list[str]]:
    paths: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        paths.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, [*path, name])

    walk(typer.main.get_command(build_app()), [])
    return paths


@pytest.mark.parametrize("path", _every_command(), ids=lambda p: " ".join(p) or "carehub")
def test_help_shows_types_not_bool_flags_nor_markup(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run([*path, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"Usage: {' '.join(['carehub', *path])}")
    assert "<bool>" not in text  # flags take no value
    for markup in ("``", ":mod:", ":func:", ":class:", "[bold"):
        assert markup not in text


def test_help_marks_what_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["gateway", "run", "--help"]) == 0
    gateway = capsys.readouterr().out
    assert "[required]" in gateway.split("--config", 1)[1].split("--check", 1)[0]
    assert run(["provision", "thresholds", "--help"]) == 0
    thresholds = " ".join(capsys.readouterr().out.split())
    assert "Whose thresholds. Required, except with --list." in thresholds
    assert run(["provision", "pair", "--help"]) == 0
    assert "Usage: carehub provision pair [OPTIONS] {ADDRESS}" in capsys.readouterr().out  # {required}
