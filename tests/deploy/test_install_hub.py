"""Issue 16.7: deploy/install-hub.sh prepares a hub for deploy/carehub-hub.service, tested in a clean root directory.

The script runs for real (``--root DIR``: useradd/groupadd/usermod ``--prefix``, chown, install) against a directory
holding only a minimal etc/passwd and etc/group, so it needs root; without root those tests are skipped. What it
creates is checked against the unit file, parsed: the user and group the service runs as, the groups it needs, the
state directory its config and keys live in.
"""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from unit_files import DEPLOY, assert_systemd_accepts, needs_systemd_analyze

from gateway.provision.files import HubPaths
from gateway.provision.steps import init_hub
from protocols.keys import PlatformIdentity

SCRIPT = DEPLOY / "install-hub.sh"
UNIT = DEPLOY / "carehub-hub.service"

as_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None,
    reason="creates users and chowns files in a scratch root: needs root and shadow-utils (CI runs as root)",
)


@dataclass(frozen=True, slots=True)
class Unit:
    """What the unit file says about who the service is and where it writes."""

    user: str
    group: str
    supplementary: tuple[str, ...]
    state_dir: Path
    state_mode: int
    exec_start: tuple[str, ...]
    exec_start_pre: tuple[str, ...]


def read_unit(path: Path = UNIT) -> Unit:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path, encoding="utf-8")
    service = parser["Service"]
    return Unit(
        user=service["User"],
        group=service["Group"],
        supplementary=tuple(service["SupplementaryGroups"].split()),
        state_dir=Path("/var/lib") / service["StateDirectory"],
        state_mode=int(service["StateDirectoryMode"], 8),
        exec_start=tuple(shlex.split(service["ExecStart"])),
        exec_start_pre=tuple(shlex.split(service["ExecStartPre"])),
    )


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of etc/passwd or etc/group, split."""

    fields: tuple[str, ...]


def entries(path: Path) -> dict[str, Entry]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {line.split(":")[0]: Entry(tuple(line.split(":"))) for line in lines if line}


def inside(root: Path, path: Path) -> Path:
    return root / path.relative_to("/")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A clean root: only the users and groups a fresh Raspberry Pi OS has that matter here."""
    base = tmp_path / "root"
    (base / "etc").mkdir(parents=True)
    (base / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n", encoding="utf-8")
    (base / "etc" / "group").write_text("root:x:0:\naudio:x:29:pi\nbluetooth:x:112:\ngpio:x:997:pi\n", encoding="utf-8")
    return base


def install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(SCRIPT), "--root", str(root), *args], capture_output=True, text=True, timeout=60, check=False
    )


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path under ``root`` with its type, mode, owner, modification time and content (or link target)."""
    out: dict[str, tuple[object, ...]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            body: object = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            body = path.read_bytes()
        else:
            body = None
        out[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, body)
    return out


def ids(root: Path, unit: Unit) -> tuple[int, int]:
    user = entries(root / "etc" / "passwd")[unit.user]
    return int(user.fields[2]), int(entries(root / "etc" / "group")[unit.group].fields[2])


@as_root
def test_a_clean_root_gets_what_the_unit_needs(root: Path) -> None:
    unit = read_unit()
    result = install(root)
    assert result.returncode == 0, result.stderr

    users, groups = entries(root / "etc" / "passwd"), entries(root / "etc" / "group")
    user, group = users[unit.user], groups[unit.group]
    uid, gid = int(user.fields[2]), int(group.fields[2])
    assert 0 < uid < 1000, "a system user"
    assert int(user.fields[3]) == gid, "its primary group is the unit's Group="
    assert user.fields[5] == str(unit.state_dir)
    assert user.fields[6] == "/usr/sbin/nologin"
    for name in unit.supplementary:
        assert unit.user in groups[name].fields[3].split(","), name
    assert "pi" in groups["gpio"].fields[3].split(","), "existing members are kept"

    state = inside(root, unit.state_dir)
    for directory, mode in ((state, unit.state_mode), (state / "keys", 0o700)):
        st = directory.lstat()
        assert stat.S_ISDIR(st.st_mode)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, gid, mode), directory

    installed = root / "etc" / "systemd" / "system" / "carehub-hub.service"
    assert installed.read_bytes() == UNIT.read_bytes()
    st = installed.lstat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o644)

    # The daemon's config is in the state directory the script made, and the toolkit is the daemon's venv.
    for command in (unit.exec_start, unit.exec_start_pre):
        config = Path(command[command.index("--config") + 1])
        assert config.parent == unit.state_dir, command
    link = root / "usr" / "local" / "bin" / "carehub"
    assert Path(os.readlink(link)).parent == Path(unit.exec_start[0]).parent


@as_root
def test_a_second_run_changes_nothing(root: Path) -> None:
    assert install(root).returncode == 0
    before = snapshot(root)
    again = install(root)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "nothing to change"
    assert snapshot(root) == before


@as_root
def test_a_dry_run_changes_nothing_and_says_what_it_would_do(root: Path) -> None:
    before = snapshot(root)
    result = install(root, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert snapshot(root) == before
    assert "would create system user carehub" in result.stdout
    assert "would install /etc/systemd/system/carehub-hub.service" in result.stdout


@as_root
def test_a_hub_provisioned_as_root_is_handed_to_the_service_user(root: Path) -> None:
    unit = read_unit()
    assert install(root).returncode == 0
    uid, gid = ids(root, unit)
    state = inside(root, unit.state_dir)
    # What `sudo carehub provision init` does: the real step, as root.
    paths = HubPaths.for_config(state / "hub.toml")
    init_hub(
        paths,
        hub_id="hub-0001",
        platform=PlatformIdentity.generate().public,
        broker_url="mqtt://127.0.0.1:1",
        username="hub-0001",
        password=None,
        timezone="Asia/Shanghai",
    )
    assert paths.hub_key.stat().st_uid == 0
    (paths.keys / "broker.password").write_text("secret\n", encoding="utf-8")  # as a careless hand would: 0644
    outside = root / "etc" / "passwd"
    (state / "escape").symlink_to(outside)
    outside_before = outside.lstat()

    result = install(root)
    assert result.returncode == 0, result.stderr
    assert "not carehub's: /var/lib/carehub/keys/hub.key" in result.stdout
    for path in (state, *state.rglob("*")):
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == (uid, gid), path
    for private in (paths.hub_key, paths.keys / "broker.password"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    assert stat.S_IMODE(paths.keys.stat().st_mode) == 0o700
    after = outside.lstat()
    assert (after.st_uid, after.st_gid, after.st_mode) == (outside_before.st_uid, outside_before.st_gid, 0o100644)
    assert install(root).stdout.strip() == "nothing to change"


@as_root
def test_a_missing_group_stops_the_script_before_any_change(root: Path) -> None:
    (root / "etc" / "group").write_text("root:x:0:\naudio:x:29:\nbluetooth:x:112:\n", encoding="utf-8")
    before = snapshot(root)
    result = install(root)
    assert result.returncode == 1
    assert "gpio" in result.stderr
    assert snapshot(root) == before


@as_root
def test_an_existing_user_in_another_primary_group_is_refused(root: Path) -> None:
    with (root / "etc" / "passwd").open("a", encoding="utf-8") as passwd:
        passwd.write("carehub:x:990:29::/home/carehub:/bin/sh\n")
    with (root / "etc" / "group").open("a", encoding="utf-8") as group:
        group.write("carehub:x:990:\n")
    before = snapshot(root)
    result = install(root)
    assert result.returncode == 1
    assert "primary group" in result.stderr
    assert snapshot(root) == before


def test_a_bad_option_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        ["sh", str(SCRIPT), "--bogus"], capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "--bogus" in result.stderr


@needs_systemd_analyze
def test_systemd_analyze_accepts_the_unit(tmp_path: Path) -> None:
    program = read_unit().exec_start[0]
    assert program in UNIT.read_text(encoding="utf-8")
    assert_systemd_accepts(UNIT, program, tmp_path, "carehub-hub.service")
