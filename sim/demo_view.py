"""What `carehub demo` shows: a live log of the day while it plays, then the summary table."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Self

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sim.demo import DemoSummary

__all__ = ["DemoView"]


def _fmt(value: float | None, unit: str = " ms") -> str:
    return "—" if value is None else f"{value:g}{unit}"


class DemoView:
    """Prints each event of the day as it happens (with the real elapsed time) and the final summary."""

    def __init__(self, console: Console, *, quiet: bool = False) -> None:
        self._console = console
        self._quiet = quiet
        self._t0 = time.monotonic()

    def __enter__(self) -> Self:
        self._t0 = time.monotonic()
        if not self._quiet:
            self._console.rule("carehub demo: a resident's day")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._quiet:
            self._console.rule()

    def say(self, line: str) -> None:
        """One event of the day."""
        if self._quiet:
            return
        elapsed = time.monotonic() - self._t0
        self._console.print(f"[dim]{elapsed:6.1f}s[/] {escape(line)}", highlight=False, soft_wrap=True)

    def print_summary(self, s: DemoSummary) -> None:
        """The verdict table."""
        table = Table(title="carehub demo summary", show_header=True)
        table.add_column("what")
        table.add_column("value", justify="right")
        verdict = "[green]nothing lost, nothing duplicated[/]" if s.ok else "[bold red]LOSS OR DUPLICATION[/]"
        rows = [
            ("measurements produced by the meters", str(s.produced)),
            ("records stored by the platform (measurements)", str(s.stored)),
            ("measurements delivered", str(s.delivered)),
            ("duplicated", str(s.duplicates)),
            ("lost", str(s.lost)),
            (
                "alarms raised: notice / warning / critical",
                f"{s.alarms_notice} / {s.alarms_warning} / {s.alarms_critical}",
            ),
            ("alarm detection p99 (reading in -> resident told)", _fmt(s.alarm_detect_p99_ms)),
            ("alarm delivery p99 (reading in -> platform ack)", _fmt(s.alarm_delivery_p99_ms)),
            (
                "panic calls: pressed / answered / cancelled",
                f"{s.panic_presses} / {s.panic_answered} / {s.panic_cancelled}",
            ),
            ("panic press -> local feedback p99", _fmt(s.panic_local_p99_ms)),
            ("panic press -> platform ack p99", _fmt(s.panic_platform_p99_ms)),
            ("fallback notifications", str(s.fallback_notifications)),
            ("broker outage (simulated minutes)", _fmt(round(s.outage_s / 60), " min")),
            ("broker", s.broker),
            ("simulated hours / real seconds", f"{s.simulated_hours:g} h / {s.elapsed_s:g} s"),
            ("verdict", verdict),
        ]
        for what, value in rows:
            table.add_row(what, value)
        self._console.print(table)
