"""The live line and the summary: what an operator reads."""

from __future__ import annotations

import io
import time
from collections import Counter

from rich.console import Console

from producers.live import LiveLine, RateMeter, status_line, summary_table
from producers.sender import ProduceStats


def render(renderable: object) -> str:
    out = io.StringIO()
    Console(file=out, width=200).print(renderable)
    return out.getvalue()


def stats() -> ProduceStats:
    return ProduceStats(
        sent=1200, acked=1150, failed=2, opening=0,
        by_topic=Counter({"ingress.web": 1200}), by_type=Counter({"OrderPlaced": 1200}),
        faults=Counter({"duplicate": 7}), first_event_ms=1_741_168_800_000,
        last_event_ms=1_741_168_860_000, last_error="ingress.web[1]: timed out",
    )  # fmt: skip


def test_status_line_shows_sent_acked_failed_rate_and_event_time() -> None:
    text = status_line(stats(), 512.4).plain
    for fragment in ("sent 1,200", "acked 1,150", "failed 2", "512/s", "2025-03-05 10:01:00",
                     "faults 7", "ingress.web[1]: timed out"):  # fmt: skip
        assert fragment in text


def test_rate_meter_measures_the_recent_rate() -> None:
    meter = RateMeter(window=3.0)
    assert meter.update(0.0, 0) == 0.0
    assert meter.update(1.0, 100) == 100.0
    assert meter.update(10.0, 1000) == 100.0  # old samples age out: (1000-100)/(10-1)


def test_summary_names_totals_faults_and_how_to_reproduce() -> None:
    s = stats()
    s.stopped_by = "count"
    text = render(summary_table(s, seed=7, start_iso="2025-03-05T10:00:00.000Z"))
    for fragment in ("1,200 records", "topic ingress.web", "type OrderPlaced", "fault duplicate",
                     "count", "--seed 7 --start-time 2025-03-05T10:00:00.000Z"):  # fmt: skip
        assert fragment in text


def test_without_a_terminal_the_line_is_logged_periodically() -> None:
    out = io.StringIO()
    with LiveLine(stats(), Console(file=out, width=200), log_every=0.05):
        time.sleep(0.3)
    lines = [line for line in out.getvalue().splitlines() if line]
    assert len(lines) >= 3
    assert all(line.startswith("sent 1,200") for line in lines)
