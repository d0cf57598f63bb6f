"""The fuzz loop behind ``scripts/fuzz``: every target, seeded from the test vectors, hypothesis-driven.

For each target the loop first replays every seed (the documented vectors, the test suite's hex literals, the
known-bad corpus and valid messages made with the codecs) exactly, then generates inputs two ways:

* hypothesis-driven structured inputs (:func:`hypothesis.core.fuzz_one_input` turns random bytes into a draw from the
  target's strategy: hostile CBOR items, valid messages with one hostile field, valid GATT values, pendant frames
  with extreme fields, arbitrary bytes);
* fast byte mutations of the pool (seeds plus every generated input the target accepted), libFuzzer style.

Each input runs under a CPU-time limit (``ITIMER_VIRTUAL``, so a busy machine does not make inputs "slow"). An input
fails when an exception other than the target's documented errors escapes, or when it takes longer than the limit;
failures are reported with the target, the problem and the reproducer bytes in hex. Everything is deterministic for
a given ``--seed``.
"""

from __future__ import annotations

import argparse
import random
import signal
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Final

import fuzz_inputs
import fuzz_targets
from fuzz_targets import TARGETS, TARGETS_BY_NAME, Target
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DEFAULT_TIME_LIMIT: Final = 0.5
"""CPU seconds one input may take; every decoder needs well under 10 ms for the largest valid frame."""
_STRUCTURED_SHARE: Final = 0.3
_POOL_LIMIT: Final = 1024
_BATCH: Final = 32
_SHOWN_PER_PROBLEM: Final = 3
_SHOWN_HEX: Final = 4096


class SlowInput(BaseException):
    """The per-input CPU-time limit ran out (a ``BaseException``, so no ``except Exception`` can swallow it)."""


@dataclass(frozen=True, slots=True)
class Failure:
    """One input that broke the contract.

    Attributes:
        target: the target's name.
        problem: ``"slow"`` or the escaped exception's qualified type name.
        detail: the exception message, or the CPU time taken.
        where: the innermost source line of the traceback (``file:line``), for grouping.
        data: the reproducer.
    """

    target: str
    problem: str
    detail: str
    where: str
    data: bytes


@dataclass(slots=True)
class TargetStats:
    """Counts for one target."""

    target: str
    inputs: int = 0
    accepted: int = 0
    failures: int = 0
    slowest: float = 0.0


@dataclass(slots=True)
class Report:
    """The outcome of a run."""

    stats: list[TargetStats]
    failures: list[Failure] = field(default_factory=list)
    elapsed: float = 0.0
    seed: int = 0

    @property
    def inputs(self) -> int:
        """Inputs run, all targets together."""
        return sum(s.inputs for s in self.stats)

    @property
    def failed(self) -> int:
        """Failing inputs, all targets together (each one counted, not only the ones kept)."""
        return sum(s.failures for s in self.stats)


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception as problem:  # noqa: BLE001 - str() of the escaped exception may itself fail (int digit limit)
        text = f"<str() of the exception raised {type(problem).__name__}>"
    return text[:300]


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


def _on_timer(_signum: int, _frame: FrameType | None) -> None:
    raise SlowInput


def run_one(target: Target, data: bytes, time_limit: float) -> tuple[bool, Failure | None, float]:
    """Feed ``data`` to ``target`` once.

    Returns:
        Whether the target accepted the input (returned without error), the failure if the contract broke, and the
        CPU seconds taken.
    """
    timed = threading.current_thread() is threading.main_thread()
    if timed:
        previous = signal.signal(signal.SIGVTALRM, _on_timer)
        signal.setitimer(signal.ITIMER_VIRTUAL, time_limit)
    started = time.process_time()
    accepted = False
    failure: Failure | None = None
    try:
        target.call(data)
        accepted = True
    except target.documented:
        pass
    except SlowInput:
        failure = Failure(target.name, "slow", "", "", data)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - anything but the documented errors is what the fuzzer reports
        failure = Failure(
            target.name, f"{type(exc).__module__}.{type(exc).__qualname__}", _describe(exc), _where(exc), data
        )
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_VIRTUAL, 0)
            signal.signal(signal.SIGVTALRM, previous)
    spent = time.process_time() - started
    if failure is None and spent > time_limit:
        failure = Failure(target.name, "slow", "", "", data)  # stuck in C code the timer could not interrupt
    if failure is not None and failure.problem == "slow":
        failure = Failure(target.name, "slow", f"{spent:.3f} s CPU, limit {time_limit:.3f} s", "", data)
    return accepted, failure, spent


# --- input generation -----------------------------------------------------------------------------------------------


def _frames(layout: struct.Struct) -> st.SearchStrategy[bytes]:
    fields = []
    for code in layout.format.lstrip("<"):
        bits = {"B": 8, "H": 16, "I": 32}[code]
        fields.append(
            st.one_of(st.sampled_from((0, 1, 41, 42, 43, 2 ** (bits - 1), 2**bits - 1)), st.integers(0, 2**bits - 1))
        )
    return st.tuples(*fields).map(lambda values: layout.pack(*values))


def _pendant_inputs() -> st.SearchStrategy[bytes]:
    from protocols.pendant import CONFIRM, EVENT, FEEDBACK, TAG_LEN  # noqa: PLC0415 - only pendant targets need them

    frames = st.one_of(_frames(EVENT), _frames(CONFIRM), _frames(FEEDBACK))
    tails = st.one_of(st.just(b""), st.binary(min_size=TAG_LEN, max_size=TAG_LEN), st.binary(max_size=20))
    return st.tuples(frames, tails).map(lambda parts: parts[0] + parts[1])


def strategy_for(target: Target, templates: Sequence[object]) -> st.SearchStrategy[bytes]:
    """The structured inputs worth drawing for ``target``."""
    options: list[st.SearchStrategy[bytes]] = [st.binary(max_size=512)]
    if target.cbor_body:
        options.append(fuzz_inputs.cbor_items())
        if templates:
            options.append(fuzz_inputs.templated(templates))  # type: ignore[arg-type]  # decoded CBOR maps
    if target.name.startswith("gatt."):
        fuzz_targets.ensure_strategies_importable()
        from strategies import MEASUREMENT_STRATEGIES  # noqa: PLC0415 - tests/protocols, importable only now

        valid = MEASUREMENT_STRATEGIES.get(int(target.name.removeprefix("gatt."), 16))
        if valid is not None:
            options.append(valid.map(bytes))
    if target.name.startswith("pendant."):
        options.append(_pendant_inputs())
    return st.one_of(options)


class _Source:
    """Inputs for one target: its seeds first, then hypothesis draws and mutations of the pool."""

    def __init__(self, target: Target, seeds: Sequence[bytes], templates: Sequence[object], rng: random.Random):
        self._rng = rng
        self._queue = list(reversed(seeds))
        self._pool = list(seeds)
        self._known = set(seeds)
        self._fixed = len(self._pool)  # the seeds stay in the pool; accepted inputs take up to _POOL_LIMIT more
        self._drawn: bytes | None = None

        @settings(database=None, suppress_health_check=list(HealthCheck), deadline=None)
        @given(strategy_for(target, templates))
        def capture(value: bytes) -> None:
            self._drawn = value

        self._fuzz_one: Callable[[bytes], bytes | None] = capture.hypothesis.fuzz_one_input  # type: ignore[attr-defined]

    def next(self) -> bytes:
        if self._queue:
            return self._queue.pop()
        if self._rng.random() < _STRUCTURED_SHARE:
            drawn = self._draw(self._rng.randbytes(self._rng.randint(16, 1024)))
            if drawn is not None:
                return drawn[: fuzz_inputs.MAX_INPUT]
        return fuzz_inputs.mutate(self._rng, self._rng.choice(self._pool), self._pool)

    def _draw(self, choices: bytes) -> bytes | None:
        """The strategy's value for ``choices``, or ``None`` when they do not make one (too short, filtered)."""
        self._drawn = None
        self._fuzz_one(choices)
        return self._drawn

    def keep(self, data: bytes) -> None:
        """Remember an accepted input: mutating valid inputs reaches deeper than mutating rejected ones."""
        if data in self._known:
            return
        self._known.add(data)  # mirrors the pool, so memory stays bounded however long the run
        if len(self._pool) < self._fixed + _POOL_LIMIT:
            self._pool.append(data)
        else:
            slot = self._rng.randrange(self._fixed, len(self._pool))
            self._known.discard(self._pool[slot])
            self._pool[slot] = data


def run(
    targets: Sequence[Target],
    inputs: int,
    *,
    seed: int = 0,
    time_limit: float = DEFAULT_TIME_LIMIT,
    progress: Callable[[Report], None] | None = None,
    progress_every: float = 60.0,
) -> Report:
    """Run about ``inputs`` inputs spread evenly over ``targets`` (never fewer than each target's seeds).

    Returns:
        The counts and the failures (every failing input is counted; the first few of each kind are kept).
    """
    seeds = fuzz_targets.seeds()
    templates = fuzz_inputs.cbor_templates(seeds)
    report = Report([TargetStats(t.name) for t in targets], seed=seed)
    budget = [max(inputs // len(targets) + (i < inputs % len(targets)), len(seeds)) for i in range(len(targets))]
    sources: dict[str, _Source] = {}
    kept: dict[tuple[str, str, str], int] = {}
    started = time.monotonic()
    last_progress = started
    while any(budget):
        for index, target in enumerate(targets):
            if not budget[index]:
                continue
            source = sources.get(target.name)
            if source is None:
                rng = random.Random(f"{seed}/{target.name}")  # noqa: S311 - reproducible, not secret
                source = sources[target.name] = _Source(target, seeds, templates, rng)
            stats = report.stats[index]
            for _ in range(min(_BATCH, budget[index])):
                data = source.next()
                accepted, failure, spent = run_one(target, data, time_limit)
                stats.inputs += 1
                stats.slowest = max(stats.slowest, spent)
                if accepted:
                    stats.accepted += 1
                    source.keep(data)
                if failure is not None:
                    stats.failures += 1
                    key = (failure.target, failure.problem, failure.where)
                    kept[key] = kept.get(key, 0) + 1
                    if kept[key] <= _SHOWN_PER_PROBLEM:
                        report.failures.append(failure)
            budget[index] -= min(_BATCH, budget[index])
        now = time.monotonic()
        if progress is not None and now - last_progress >= progress_every:
            report.elapsed = now - started
            progress(report)
            last_progress = now
    report.elapsed = time.monotonic() - started
    return report


# --- reporting and the command line ---------------------------------------------------------------------------------


def format_report(report: Report) -> str:
    """The summary table and every kept failure with its reproducer in hex."""
    width = max(len(s.target) for s in report.stats)
    lines = [f"{'target':<{width}}  {'inputs':>9}  {'accepted':>9}  {'failures':>8}  slowest (ms CPU)"]
    lines += [
        f"{s.target:<{width}}  {s.inputs:>9}  {s.accepted:>9}  {s.failures:>8}  {s.slowest * 1000:>10.2f}"
        for s in report.stats
    ]
    rate = report.inputs / report.elapsed if report.elapsed else 0.0
    lines.append(
        f"total: {report.inputs} inputs over {len(report.stats)} targets in {report.elapsed:.1f} s "
        f"({rate:.0f}/s), {report.failed} failures, seed {report.seed}"
    )
    for failure in report.failures:
        shown = failure.data.hex()
        cut = f" ... ({len(failure.data)} bytes in all)" if len(shown) > _SHOWN_HEX else ""
        where = f" at {failure.where}" if failure.where else ""
        lines += [
            f"FAIL {failure.target}: {failure.problem}{where}: {failure.detail}",
            f"  reproducer ({len(failure.data)} bytes): {shown[:_SHOWN_HEX]}{cut}",
        ]
    return "\n".join(lines)


def save_failures(report: Report, directory: Path) -> list[Path]:
    """Write each kept failure in the corpus format (``tests/fuzz/corpus/*.hex``), so it can be added there."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for number, failure in enumerate(report.failures):
        path = directory / f"{failure.target}-{number}.hex"
        comment = f"# {failure.target}: {failure.problem}: {failure.detail}".replace("\n", " ")
        path.write_text(f"{comment}\n{failure.data.hex()}\n", encoding="ascii")
        written.append(path)
    return written


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """``scripts/fuzz``: exit 0 when every input kept the contract, 1 when any did not, 2 on a usage error."""
    parser = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--inputs", type=_positive, default=100_000, help="inputs in all, spread over the targets")
    parser.add_argument("--seed", type=int, default=0, help="random seed (a run is deterministic for a seed)")
    parser.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT, help="CPU seconds per input")
    parser.add_argument("--targets", default="", help="comma-separated target names or prefixes (default: all)")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--save", type=Path, help="write failing inputs to this directory in the corpus format")
    parser.add_argument("--progress", type=float, default=60.0, help="seconds between progress lines on stderr")
    args = parser.parse_args(argv)
    if args.list:
        for target in TARGETS:
            sys.stdout.write(f"{target.name}\n")
        return 0
    chosen = list(TARGETS)
    if args.targets:
        wanted = [name.strip() for name in args.targets.split(",") if name.strip()]
        chosen = [t for t in TARGETS if any(t.name == w or t.name.startswith(f"{w}.") for w in wanted)]
        unknown = [w for w in wanted if not any(t.name == w or t.name.startswith(f"{w}.") for t in TARGETS)]
        if unknown or not chosen:
            parser.error(f"unknown targets {unknown}; see --list ({', '.join(TARGETS_BY_NAME)})")

    def show_progress(report: Report) -> None:
        sys.stderr.write(f"fuzz: {report.inputs} inputs, {report.failed} failures, {report.elapsed:.0f} s\n")

    report = run(
        chosen,
        args.inputs,
        seed=args.seed,
        time_limit=args.time_limit,
        progress=show_progress,
        progress_every=args.progress,
    )
    sys.stdout.write(format_report(report) + "\n")
    if args.save is not None and report.failures:
        for path in save_failures(report, args.save):
            sys.stdout.write(f"saved {path}\n")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
