"""What the operator sees: a live line while sending, a summary at the end.

On a terminal the line is redrawn in place by rich (4 times a second); when the
output is a file or a pipe (``shopstream up`` logs), one plain line is printed
every ``log_every`` seconds instead, so logs stay readable.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from producers.record import from_ms
from producers.sender import ProduceStats


class RateMeter:
    """Records per second over the last few seconds of samples."""

    def __init__(self, window: float = 3.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def update(self, now: float, count: int) -> float:
        samples = self._samples
        samples.append((now, count))
        while len(samples) > 2 and now - samples[0][0] > self.window:
            samples.popleft()
        (t0, c0), (t1, c1) = samples[0], samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0


def status_line(stats: ProduceStats, rate: float) -> Text:
    """``sent 1,234 | acked 1,230 | failed 0 | 512/s | event time ...``."""
    text = Text()
    text.append("sent ", style="dim")
    text.append(f"{stats.sent:,}", style="bold")
    text.append("  acked ", style="dim")
    text.append(f"{stats.acked:,}", style="green")
    text.append("  failed ", style="dim")
    text.append(f"{stats.failed:,}", style="red" if stats.failed else "green")
    text.append(f"  {rate:,.0f}/s", style="cyan")
    if stats.last_event_ms is not None:
        when = from_ms(stats.last_event_ms).strftime("%Y-%m-%d %H:%M:%S")
        text.append(f"  event time {when}", style="dim")
    if stats.faults:
        faults = sum(stats.faults.values())
        text.append(f"  faults {faults:,}", style="yellow")
    if stats.last_error and stats.failed:
        text.append(f"  last error: {stats.last_error}", style="red")
    return text


class LiveLine:
    """Context manager showing :func:`status_line` while the body runs."""

    def __init__(self, stats: ProduceStats, console: Console, log_every: float = 10.0):
        self.stats = stats
        self.console = console
        self.log_every = log_every
        self._meter = RateMeter()
        self._live: Live | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()

    def render(self) -> Text:
        rate = self._meter.update(time.monotonic(), self.stats.sent)
        return status_line(self.stats, rate)

    def __enter__(self) -> LiveLine:
        if self.console.is_terminal:
            self._live = Live(
                get_renderable=self.render, console=self.console,
                refresh_per_second=4, transient=False,
            )  # fmt: skip
            self._live.start()
        else:
            self._thread = threading.Thread(target=self._log_loop, daemon=True)
            self._thread.start()
        return self

    def _log_loop(self) -> None:
        while not self._done.wait(self.log_every):
            self.console.print(self.render(), soft_wrap=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        if self._live is not None:
            self._live.stop()
        if self._thread is not None:
            self._thread.join(timeout=1.0)


def summary_table(stats: ProduceStats, *, seed: int, start_iso: str) -> Table:
    """The end-of-run summary: totals, per topic and type, faults, and how to reproduce."""
    table = Table(title="produce summary", show_header=False, box=None, pad_edge=False)
    table.add_column(style="dim")
    table.add_column()
    elapsed = stats.elapsed
    rate = stats.sent / elapsed if elapsed > 0 else 0.0
    table.add_row("sent", f"{stats.sent:,} records in {elapsed:.1f} s ({rate:,.0f}/s)")
    if stats.opening:
        table.add_row("  opening stock", f"{stats.opening:,} (unpaced)")
        if stats.traffic_started is not None:
            traffic = stats.sent - stats.opening
            took = (stats.finished or time.monotonic()) - stats.traffic_started
            per_s = f" ({traffic / took:,.0f}/s)" if took > 0 else ""
            table.add_row("  traffic", f"{traffic:,} in {took:.1f} s{per_s}")
    table.add_row("acked", f"{stats.acked:,}")
    failed = f"{stats.failed:,}" + (f" ({stats.last_error})" if stats.failed else "")
    table.add_row("failed", failed)
    if stats.unflushed:
        table.add_row("unflushed", f"{stats.unflushed:,} (flush timed out)")
    for topic, n in sorted(stats.by_topic.items()):
        table.add_row(f"topic {topic}", f"{n:,}")
    for event_type, n in sorted(stats.by_type.items()):
        table.add_row(f"type {event_type}", f"{n:,}")
    for fault, n in sorted(stats.faults.items()):
        table.add_row(f"fault {fault}", f"{n:,}")
    if stats.first_event_ms is not None and stats.last_event_ms is not None:
        first = from_ms(stats.first_event_ms).isoformat(timespec="seconds")
        last = from_ms(stats.last_event_ms).isoformat(timespec="seconds")
        table.add_row("event time", f"{first} .. {last}")
    table.add_row("stopped by", stats.stopped_by or "end of input")
    table.add_row("reproduce with", f"--seed {seed} --start-time {start_iso}")
    return table
