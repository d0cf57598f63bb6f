"""`carehub-hub` (python -m gateway), the daemon as its service runs it, and the lazily loaded `carehub` groups."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

from carehub.bench import provision


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60, check=False)


def test_check_accepts_a_provisioned_hub(tmp_path: Path) -> None:
    home = provision(tmp_path, "mqtt://127.0.0.1:1883")
    result = run("-m", "gateway", "--config", str(home.path), "--check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok {home.path}: hub bench-hub, 1 resident(s), 4 device(s)")


def test_a_bad_config_names_the_file_and_key(tmp_path: Path) -> None:
    home = provision(tmp_path, "mqtt://127.0.0.1:1883")
    home.path.write_text(home.path.read_text(encoding="utf-8").replace("max_connections = 4", "max_connections = -1"))
    result = run("-m", "gateway", "--config", str(home.path), "--check")
    assert result.returncode == 2
    assert str(home.path) in result.stderr
    assert "max_connections" in result.stderr


def test_a_missing_key_file_is_refused_before_start(tmp_path: Path) -> None:
    home = provision(tmp_path, "mqtt://127.0.0.1:1883")
    (tmp_path / "hub.key").unlink()
    result = run("-m", "gateway", "--config", str(home.path))
    assert result.returncode == 2
    assert "hub.key" in result.stderr


def test_the_daemon_leaves_the_command_line_toolkit_out() -> None:
    toolkit = "{'typer', 'rich', 'pydantic', 'aiohttp', 'carehub'}"
    probe = f"import sys, gateway.__main__; print(sorted({{m.split('.')[0] for m in sys.modules}} & {toolkit}))"
    result = run("-c", probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_carehub_imports_only_the_group_it_runs() -> None:
    probe = (
        "import sys\n"
        "from carehub.cli import main\n"
        "sys.argv = ['carehub', 'gateway', '--help']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('community.cli', 'sim.cli', 'carehub.provision_cli') if m in sys.modules))\n"
    )
    result = run("-c", probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_full_help_lists_every_group() -> None:
    result = run("-c", "from carehub.cli import main; main()", "--help")
    assert result.returncode == 0, result.stderr
    for group in ("gateway", "platform", "sim", "provision", "doctor", "demo", "bench", "decode"):
        assert group in result.stdout


def test_the_service_unit_runs_the_daemon_with_options_it_accepts() -> None:
    import configparser  # noqa: PLC0415
    import shlex  # noqa: PLC0415
    import tomllib  # noqa: PLC0415

    from gateway.__main__ import _parser  # noqa: PLC0415

    root = Path(__file__).resolve().parents[2]
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(root / "deploy" / "carehub-hub.service", encoding="utf-8")
    scripts = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["carehub-hub"] == "gateway.__main__:main"
    for key in ("ExecStartPre", "ExecStart"):
        program, *args = shlex.split(unit["Service"][key])
        assert Path(program).name == "carehub-hub"
        _parser().parse_args(args)  # exits (SystemExit) on an option the daemon does not know
    assert unit["Service"]["Restart"] == "always"
    assert unit["Unit"]["StartLimitIntervalSec"] == "0"


def _run_until_running(tmp_path: Path, *flags: str) -> list[str]:
    """Start ``carehub-hub`` on a simulated radio, stop it with SIGTERM once it says it runs; its log lines."""
    home = provision(tmp_path, "mqtt://127.0.0.1:9", link="local:verbose-test")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--config", str(home.path), "--no-voice", *flags],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    killer = threading.Timer(60, proc.kill)  # a hub that never starts fails the test instead of hanging it
    killer.start()
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if " running" in line and "gateway.runner" in line:
                proc.send_signal(signal.SIGTERM)
        proc.wait()
    finally:
        killer.cancel()
    assert proc.returncode == 0, "\n".join(lines[-20:])
    return lines


_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})


def _loggers(lines: list[str]) -> list[tuple[str, str]]:
    """(level, logger) of each ``date time LEVEL logger: message`` line (continuation lines skipped)."""
    words = (line.split() for line in lines)
    return [(w[2], w[3].rstrip(":")) for w in words if len(w) > 3 and w[2] in _LEVELS and w[3].endswith(":")]


def test_verbose_logs_the_hub_not_the_radio_stack(tmp_path: Path) -> None:
    """Issue 16 item 10: -v is the hub's story; bumble's HCI debug only with --debug-lib bumble (or -vv)."""
    logged = _loggers(_run_until_running(tmp_path / "v", "-v"))
    assert ("INFO", "gateway.runner") in logged, logged
    own = ("gateway", "protocols", "runtime", "sim")
    foreign = [(level, name) for level, name in logged if level == "DEBUG" and name.split(".")[0] not in own]
    assert foreign == []
    with_bumble = _loggers(_run_until_running(tmp_path / "b", "-v", "--debug-lib", "bumble"))
    assert any(level == "DEBUG" and name.startswith("bumble.") for level, name in with_bumble), with_bumble
