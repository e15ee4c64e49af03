"""The live status table of ``shopstream up``: one row per process, redrawn in place.

Rates come from the counters each process publishes (:mod:`shopstream.status`), as the
difference between two readings, so the table costs the apps nothing.
"""

from __future__ import annotations

import time

from rich.console import Group
from rich.table import Table
from rich.text import Text

from shopstream.status import ProcessStatus
from shopstream.supervisor import Child, Supervisor

STALE_AFTER_S = 5.0
"""A status file older than this says nothing about the process any more."""


class StatusBoard:
    """Renders the supervisor's children with their published counters."""

    def __init__(self, supervisor: Supervisor, broker: str, urls: dict[str, str]) -> None:
        self.supervisor = supervisor
        self.broker = broker
        self.urls = urls
        self._last: dict[str, tuple[float, int, int]] = {}
        self._rates: dict[str, tuple[float, float]] = {}

    def _rate(self, name: str, status: ProcessStatus) -> tuple[float, float]:
        now = status.updated_at
        before = self._last.get(name)
        self._last[name] = (now, status.consumed, status.produced)
        if before is None or before[0] >= now or status.consumed < before[1]:
            return self._rates.get(name, (0.0, 0.0))
        elapsed = now - before[0]
        rates = ((status.consumed - before[1]) / elapsed, (status.produced - before[2]) / elapsed)
        self._rates[name] = rates
        return rates

    def _state(self, child: Child, status: ProcessStatus | None) -> Text:
        if child.state == "restarting":
            wait = max(0.0, child.restart_at - time.monotonic())
            return Text(f"restarting in {wait:.0f}s", style="yellow")
        if child.state == "failed":
            return Text(f"stopped (exit {child.last_exit})", style="bold red")
        if child.state == "finished":
            return Text("finished", style="dim")
        if status is not None and not status.broker_up:
            return Text("broker down", style="yellow")
        if status is not None and status.note:
            return Text(status.note, style="cyan")
        return Text("running", style="green")

    def render(self) -> Group:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for col, justify in (
            ("process", "left"), ("state", "left"), ("in/s", "right"), ("out/s", "right"),
            ("dead letters", "right"), ("restarts", "right"), ("last error", "left"),
        ):  # fmt: skip
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        statuses = self.supervisor.statuses()
        now = time.time()
        for name, child in list(self.supervisor.children.items()):
            status = statuses.get(name)
            fresh = (
                status is not None
                and child.popen is not None
                and status.pid == child.popen.pid
                and now - status.updated_at < STALE_AFTER_S
            )
            shown = status if fresh else None
            rate_in, rate_out = self._rate(name, status) if shown and status else (0.0, 0.0)
            error = (shown.last_error if shown else None) or (
                child.last_log_line() if child.state != "running" else ""
            )
            table.add_row(
                name,
                self._state(child, shown),
                f"{rate_in:,.0f}" if shown else "-",
                f"{rate_out:,.0f}" if shown else "-",
                f"{shown.dead_lettered:,}" if shown else "-",
                str(child.total_restarts),
                Text(error or "", style="red", overflow="ellipsis", no_wrap=True),
            )
        header = Text.assemble(
            ("shopstream up", "bold"), f"  broker {self.broker}",
            *[(f"  {label} {url}", "bold cyan") for label, url in self.urls.items()],
            ("  Ctrl-C stops everything", "dim"),
        )  # fmt: skip
        return Group(header, table)
