"""Power-cut harness for the hub's storage (issue 17 item 1): ``scripts/powerloss --crash-points N [--json]``.

1. Run :mod:`powerloss_workload` (outbox, cursors, pendant counters, indication journal, config and key files, all
   through the product's code) once under strace and turn the trace into a timeline of file operations
   (:mod:`powerloss_trace`).
2. For N crash states, pick a crash point in the timeline and one state a power cut may leave there
   (:mod:`powerloss_model`: unsynced writes lost or torn sector by sector, unsynced names cut to a prefix), write it
   to a fresh directory and open it with the product's code (:mod:`powerloss_check`).
3. Print crash points tried, acknowledged records lost and files left unreadable; exit 1 unless both are 0.

The first states of every run are the exhaustive ones: for every crash point, the state with nothing unsynced kept
and the one with everything kept; the rest are random mixtures with torn writes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from powerloss_check import Acknowledged, InitFiles, check_state
from powerloss_model import FileSystem, Timeline, Variant, materialise
from powerloss_trace import Recording, record

from gateway import aio

__all__ = ["Report", "memory_dir", "record_workload", "run"]

_WORKLOAD = Path(__file__).with_name("powerloss_workload.py")
_ACKS = frozenset({"put", "journal", "acked", "done"})  # markers that say the product acknowledged something


@dataclass(frozen=True, slots=True)
class Report:
    """The figures of one run."""

    seed: int
    readings: int
    file_system: str
    syscalls_traced: int
    timeline_ops: int
    acknowledgements: int  # puts, journal flushes, platform acks and file writes that returned
    crash_points_tried: int
    distinct_crash_points: int
    torn_writes: int
    acknowledged_records_lost: int
    files_unreadable: int
    acked_rows_resurrected: int
    cursor_errors: int
    failures: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """The storage kept every promise in every state tried."""
        return not (
            self.acknowledged_records_lost or self.files_unreadable or self.acked_rows_resurrected or self.cursor_errors
        )


def memory_dir() -> Path | None:
    """Where to put scratch files: tmpfs when there is one (fsync there costs nothing, and the harness's own files
    need no durability), else the default temp directory."""
    shm = Path("/dev/shm")  # noqa: S108 - only ever a parent for tempfile.mkdtemp
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def record_workload(workdir: Path, readings: int, unsafe: tuple[str, ...] = ()) -> Recording:
    """Run the workload under strace in ``workdir`` (``unsafe``: deliberately broken variants, for self-tests)."""
    root = workdir / "root"
    root.mkdir()
    return record(
        [sys.executable, str(_WORKLOAD), str(root), str(workdir / "markers"), str(readings), *unsafe],
        root,
        workdir / "markers",
        workdir / "trace",
    )


def _order(step: tuple[int, Variant]) -> tuple[int, str]:
    return step[0], step[1].value


def _plan(timeline: Timeline, states: int, rng: random.Random) -> list[tuple[int, Variant]]:
    """Every crash point synced-only and everything-kept when there is room, otherwise half of the states so; the
    rest random mixtures with torn writes at random points."""
    extremes = [(p, v) for v in (Variant.SYNCED, Variant.EVERYTHING) for p in range(timeline.points)]
    rng.shuffle(extremes)
    chosen = extremes if states >= len(extremes) else extremes[: states // 2]
    extra = [(rng.randrange(timeline.points), Variant.RANDOM) for _ in range(states - len(chosen))]
    return sorted(chosen + extra, key=_order)


async def _check_all(
    timeline: Timeline, plan: list[tuple[int, Variant]], rng: random.Random, scratch: Path, progress: bool
) -> tuple[int, int, int, int, int, list[str]]:
    recording = timeline.recording
    markers = list(recording.markers())
    init = InitFiles.from_markers(m.event for m in markers)
    lost = unreadable = resurrected = cursors = torn = 0
    failures: list[str] = []
    for number, (point, variant) in enumerate(plan, 1):
        ack = Acknowledged(init)
        for marker in markers:
            if marker.index >= point:
                break
            ack.apply(marker.event)
        state = timeline.state(point, variant, rng)
        torn += state.torn_writes
        root = scratch / f"state-{number}"
        root.mkdir()
        try:
            materialise(state, root)
            findings = await check_state(root, ack)
        finally:
            shutil.rmtree(root)
        lost += findings.lost_records
        unreadable += findings.unreadable_files
        resurrected += findings.resurrected
        cursors += findings.cursor_errors
        if not findings.ok and len(failures) < 20:
            failures.append(f"crash point {point} ({variant.value}): " + "; ".join(findings.messages))
        if progress and number % 500 == 0:
            sys.stderr.write(f"powerloss: {number}/{len(plan)} crash states checked\n")
    return lost, unreadable, resurrected, cursors, torn, failures


def run(
    states: int,
    *,
    seed: int,
    readings: int,
    workdir: Path,
    fs: FileSystem = FileSystem.EXT4,
    progress: bool = False,
    unsafe: tuple[str, ...] = (),
) -> Report:
    """Record the workload once, then check ``states`` crash states."""
    recording = record_workload(workdir, readings, unsafe)
    rng = random.Random(seed)  # noqa: S311 - reproducible, not secret
    timeline = Timeline(recording, fs)
    plan = _plan(timeline, states, rng)
    # States are written to memory when it can: the checks fsync, and a disk would make them wait for nothing.
    scratch = Path(tempfile.mkdtemp(prefix="powerloss-states-", dir=memory_dir()))
    # The product logs what it repairs (a torn journal line, a rolled-back WAL); thousands of states would flood
    # the output, and the findings say what matters.
    quiet = logging.getLogger("gateway")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        lost, unreadable, resurrected, cursors, torn, failures = aio.run(
            _check_all(timeline, plan, rng, scratch, progress)
        )
    finally:
        quiet.setLevel(level)
        shutil.rmtree(scratch, ignore_errors=True)
    return Report(
        seed=seed,
        readings=readings,
        file_system=fs.value,
        syscalls_traced=recording.syscalls,
        timeline_ops=len(recording.ops),
        acknowledgements=sum(1 for m in recording.markers() if m.event.keys() & _ACKS),
        crash_points_tried=len(plan),
        distinct_crash_points=len({p for p, _ in plan}),
        torn_writes=torn,
        acknowledged_records_lost=lost,
        files_unreadable=unreadable,
        acked_rows_resurrected=resurrected,
        cursor_errors=cursors,
        failures=tuple(failures),
    )


def main(argv: list[str] | None = None) -> int:
    """``scripts/powerloss``: exit 0 when nothing acknowledged was lost and every file was readable."""
    parser = argparse.ArgumentParser(prog="scripts/powerloss", description=__doc__.split("\n\n")[0])
    parser.add_argument("--crash-points", type=int, default=2000, help="crash states to check (default 2000)")
    parser.add_argument("--readings", type=int, default=90, help="readings in the traced workload (default 90)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a fresh one, printed)")
    parser.add_argument(
        "--fs",
        choices=[f.value for f in FileSystem],
        default=FileSystem.EXT4.value,
        help="which promises about file names to rely on: ext4's journal (default) or only what POSIX promises",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--keep", type=Path, default=None, help="work in this directory and keep the trace")
    args = parser.parse_args(argv)
    if args.crash_points < 1 or args.readings < 1:
        parser.error("--crash-points and --readings must be >= 1")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=False)
        report = run(
            args.crash_points,
            seed=seed,
            readings=args.readings,
            workdir=args.keep,
            fs=FileSystem(args.fs),
            progress=not args.json,
        )
    else:
        with tempfile.TemporaryDirectory(prefix="powerloss-", dir=memory_dir()) as tmp:
            report = run(
                args.crash_points,
                seed=seed,
                readings=args.readings,
                workdir=Path(tmp),
                fs=FileSystem(args.fs),
                progress=True,
            )
    if args.json:
        sys.stdout.write(json.dumps({**asdict(report), "ok": report.ok}, indent=2) + "\n")
    else:
        sys.stdout.write(
            f"powerloss (seed {seed}, {report.file_system}): {report.crash_points_tried} crash states at "
            f"{report.distinct_crash_points} crash points of {report.timeline_ops} file operations "
            f"({report.torn_writes} torn writes); "
            f"acknowledged records lost: {report.acknowledged_records_lost}; "
            f"files unreadable: {report.files_unreadable}; acked rows back: {report.acked_rows_resurrected}; "
            f"cursor errors: {report.cursor_errors}\n"
        )
        for failure in report.failures:
            sys.stdout.write(f"  {failure}\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
