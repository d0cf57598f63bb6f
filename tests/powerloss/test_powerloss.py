"""Power-cut harness (issue 17 item 1): the model of what a power cut leaves, the short pass over the hub's storage,
and proof that the harness finds the loss a missing fsync causes.

The long pass is ``scripts/powerloss --crash-points N``; see powerloss_engine.py.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from powerloss_engine import main, memory_dir, run
from powerloss_model import SECTOR, FileSystem, Timeline, Variant
from powerloss_trace import Op, OpKind, Recording, parse_trace

needs_strace = pytest.mark.skipif(
    shutil.which("strace") is None, reason="strace not installed (scripts/test installs it)"
)

ROOT = "/r"


def _rng(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 - reproducible, not secret


def _timeline(*ops: tuple[OpKind, dict[str, object]]) -> Timeline:
    built = tuple(Op(i, kind, **fields) for i, (kind, fields) in enumerate(ops))  # type: ignore[arg-type]
    return Timeline(Recording(ROOT, built, len(built)))


def _write(inode: int, offset: int, data: bytes) -> tuple[OpKind, dict[str, object]]:
    return OpKind.WRITE, {"inode": inode, "offset": offset, "data": data}


def _create(inode: int, name: str) -> tuple[OpKind, dict[str, object]]:
    return OpKind.CREATE, {"inode": inode, "path": f"{ROOT}/{name}"}


def _sync(kind: OpKind, inode: int = -1, directory: bool = False) -> tuple[OpKind, dict[str, object]]:
    return kind, {"inode": inode, "directory": directory, "path": ROOT if directory else ""}


def test_unsynced_bytes_are_lost_and_synced_bytes_kept() -> None:
    timeline = _timeline(_create(0, "f"), _write(0, 0, b"old"), _sync(OpKind.FSYNC, 0), _write(0, 0, b"new"))
    rng = _rng(1)
    assert timeline.state(4, Variant.SYNCED, rng).files == {"f": b"old"}
    assert timeline.state(4, Variant.EVERYTHING, rng).files == {"f": b"new"}
    assert {timeline.state(4, Variant.RANDOM, _rng(s)).files["f"] for s in range(40)} == {b"old", b"new"}


def test_a_torn_write_keeps_whole_sectors_of_old_and_new() -> None:
    old, new = b"a" * (4 * SECTOR), b"b" * (4 * SECTOR)
    timeline = _timeline(_create(0, "f"), _write(0, 0, old), _sync(OpKind.FDATASYNC, 0), _write(0, 0, new))
    seen = set()
    for seed in range(60):
        state = timeline.state(4, Variant.RANDOM, _rng(seed))
        data = state.files["f"]
        sectors = tuple(data[i * SECTOR : (i + 1) * SECTOR] for i in range(4))
        assert all(s in (b"a" * SECTOR, b"b" * SECTOR) for s in sectors)
        seen.add(sectors)
    assert len(seen) > 4  # torn mixtures, not only all-old and all-new


def test_names_persist_as_a_prefix_committed_by_a_directory_sync() -> None:
    timeline = _timeline(
        _create(0, "new"),
        _write(0, 0, b"v2"),
        _sync(OpKind.FSYNC, 0),
        (OpKind.RENAME, {"path": f"{ROOT}/new", "target": f"{ROOT}/f"}),
        _sync(OpKind.FSYNC, directory=True),
    )
    rng = _rng(2)
    assert timeline.state(4, Variant.SYNCED, rng).files == {"new": b"v2"}  # rename not yet committed
    assert timeline.state(4, Variant.EVERYTHING, rng).files == {"f": b"v2"}
    assert timeline.state(5, Variant.SYNCED, rng).files == {"f": b"v2"}


def test_fdatasync_of_an_unchanged_size_does_not_commit_names() -> None:
    timeline = _timeline(
        _create(0, "a"),
        _write(0, 0, b"x"),
        _sync(OpKind.FSYNC, 0),
        _create(1, "b"),
        _write(0, 0, b"y"),
        _sync(OpKind.FDATASYNC, 0),
    )
    assert timeline.state(6, Variant.SYNCED, _rng(3)).files == {"a": b"y"}


def test_trace_lines_become_operations(tmp_path: Path) -> None:
    def hexed(text: str) -> str:
        return "".join(f"\\x{b:02x}" for b in text.encode())

    root = tmp_path / "root"
    file = f"{root}/f"
    lines = [
        f'7 openat(AT_FDCWD<{hexed(str(tmp_path))}>, "{hexed(file)}", O_WRONLY|O_CREAT, 0600) = 3<{hexed(file)}>',
        f'7 write(3<{hexed(file)}>, "{hexed("hello")}", 5 <unfinished ...>',
        "7 <... write resumed>) = 5",
        f"7 fsync(3<{hexed(file)}>) = 0",
        f'7 pwrite64(3<{hexed(file)}>, "{hexed("J")}", 1, 0) = 1',
        f'7 rename("{hexed(file)}", "{hexed(file + "2")}") = 0',
        f'7 unlink("{hexed(str(root) + "/missing")}") = -1 ENOENT (No such file or directory)',
    ]
    recording = parse_trace(lines, root, tmp_path / "markers")
    assert [op.kind for op in recording.ops] == [
        OpKind.CREATE,
        OpKind.WRITE,
        OpKind.FSYNC,
        OpKind.WRITE,
        OpKind.RENAME,
    ]
    timeline = Timeline(recording)
    assert timeline.state(5, Variant.SYNCED, _rng(0)).files == {"f": b"hello"}
    assert timeline.state(5, Variant.EVERYTHING, _rng(0)).files == {"f2": b"Jello"}


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A scratch directory in memory where possible: the traced workload's own fsyncs need not reach a disk."""
    with tempfile.TemporaryDirectory(prefix="powerloss-test-", dir=memory_dir()) as tmp:
        yield Path(tmp)


@needs_strace
def test_short_pass_over_the_hubs_storage(workdir: Path) -> None:
    """Outbox (WAL, evictions, acks, close and reopen), cursors, pendant counters, journal, config and key files."""
    report = run(500, seed=17, readings=45, workdir=workdir)
    assert report.crash_points_tried == 500
    assert report.torn_writes > 0
    assert report.acknowledgements > 50
    assert report.failures == ()
    assert report.ok


@needs_strace
def test_short_pass_relying_only_on_what_posix_promises(workdir: Path) -> None:
    """Names durable only once their directory is synced: the outbox's and journal's data directory, created at the
    hub's first start, used to be synced nowhere, so a power cut could take every acknowledged record with it."""
    report = run(300, seed=23, readings=30, workdir=workdir, fs=FileSystem.POSIX)
    assert report.failures == ()
    assert report.ok


@needs_strace
def test_the_posix_pass_finds_a_data_directory_never_synced_in_its_parent(workdir: Path) -> None:
    report = run(200, seed=29, readings=15, workdir=workdir, fs=FileSystem.POSIX, unsafe=("mkdir",))
    assert report.acknowledged_records_lost > 0


def test_posix_names_wait_for_their_own_directory() -> None:
    timeline = _timeline(
        (OpKind.MKDIR, {"path": f"{ROOT}/d"}),
        _create(0, "d/f"),
        _write(0, 0, b"x"),
        _sync(OpKind.FSYNC, 0),
        (OpKind.FSYNC, {"inode": -1, "directory": True, "path": f"{ROOT}/d"}),
    )
    ext4 = Timeline(timeline.recording, FileSystem.EXT4)
    posix = Timeline(timeline.recording, FileSystem.POSIX)
    assert ext4.state(5, Variant.SYNCED, _rng(0)).files == {"d/f": b"x"}
    lost = posix.state(5, Variant.SYNCED, _rng(0))
    assert lost.files == {}  # the directory's own name was never synced in the root
    assert lost.dirs == frozenset()


@needs_strace
@pytest.mark.parametrize("unsafe", ["config", "outbox", "journal", "bonds"])
def test_the_harness_finds_what_a_missing_fsync_loses(workdir: Path, unsafe: str) -> None:
    report = run(120, seed=5, readings=15, workdir=workdir, unsafe=(unsafe,))
    assert not report.ok
    assert report.acknowledged_records_lost + report.files_unreadable > 0


@needs_strace
def test_scripts_powerloss_prints_the_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--crash-points", "20", "--readings", "6", "--seed", "1", "--json", "--keep", str(tmp_path / "w")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert '"crash_points_tried": 20' in out
    assert '"acknowledged_records_lost": 0' in out
    assert '"files_unreadable": 0' in out
