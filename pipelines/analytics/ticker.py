"""Ticks: how windows close and silence is noticed when no events arrive.

Windows advance on event time, and event time only moves when events arrive: a
shop that goes quiet would never see its last windows closed, nor the silence
alert that should say so. The analytics app therefore reads a tick topic next
to its inputs (co-partitioned). A tick ``{"watermark": T}`` on partition ``p``
asserts "event time ``T`` has passed on every input of partition ``p``"; the
engine raises its watermarks to ``T`` (see
:meth:`~pipelines.analytics.local.PartitionAggregator.on_tick`). A tick with
``"watermark": null`` is a *probe*: it changes nothing, but the partition's
owner reports its clock, so a freshly started instance learns where event time
stands without waiting for data.

The :class:`Ticker` thread of the app decides the ticks from what the engines
report (:class:`ClockBoard`) with :func:`plan_ticks`:

* while events flow, no tick: event time is what the events say;
* a partition that has had no event for ``idle_timeout_s`` (wall clock) while
  others flow is ticked to the others' event time - an empty or quiet partition
  must not hold back the windows of the whole shop;
* when every partition has been idle for longer than ``idle_timeout_s``, event
  time advances at wall-clock speed from where the events stopped.

Events that arrive after a tick moved past them are late like any other: kept
on the late-events topic with the reason. Tests produce ticks directly, with
explicit watermarks, instead of relying on the wall clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from pipelines.analytics.config import AnalyticsConfig
from shopstream.kafka import make_producer
from shopstream.settings import Settings

log = logging.getLogger("pipelines.analytics")


@dataclass(frozen=True, slots=True)
class PartitionClock:
    """What the engine of one partition last reported (wall times are monotonic seconds)."""

    event_ms: int | None
    """The partition's event time (latest event or tick), ``None`` before any."""
    data_wall: float | None
    """When it last processed an input event; ``None`` if not since this process started."""
    seen_wall: float
    """When it last reported anything (event or tick)."""


class ClockBoard:
    """Thread-safe board where stream processing reports each partition's clock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clocks: dict[int, PartitionClock] = {}

    def report(self, partition: int, event_ms: int | None, *, data: bool) -> None:
        now = time.monotonic()
        with self._lock:
            before = self._clocks.get(partition)
            data_wall = now if data else (before.data_wall if before else None)
            self._clocks[partition] = PartitionClock(event_ms, data_wall, now)

    def snapshot(self) -> dict[int, PartitionClock]:
        with self._lock:
            return dict(self._clocks)


def plan_ticks(
    now: float,
    started: float,
    clocks: Mapping[int, PartitionClock],
    partitions: int,
    config: AnalyticsConfig,
) -> dict[int, int | None]:
    """The tick to send to each partition: a watermark, ``None`` (probe), or absent (none).

    ``now`` and ``started`` (when the process started) are monotonic seconds.
    Partitions that have not reported within five tick intervals are probed, not
    ticked: this instance may not own them, and a watermark computed here must
    not reach another instance's partitions.
    """
    stale_after = max(5 * config.tick_interval_s, 5.0)
    owned = {p: c for p, c in clocks.items() if now - c.seen_wall <= stale_after}
    plan: dict[int, int | None] = {p: None for p in range(partitions) if p not in owned}
    known = [c.event_ms for c in owned.values() if c.event_ms is not None]
    if not known:
        return plan
    last_data = max(
        (c.data_wall for c in owned.values() if c.data_wall is not None), default=started
    )
    all_idle_s = now - last_data - config.idle_timeout_s
    estimate = max(known) + (int(all_idle_s * 1000) if all_idle_s > 0 else 0)
    for partition, clock in owned.items():
        idle_s = now - (clock.data_wall if clock.data_wall is not None else started)
        behind = clock.event_ms is None or estimate > clock.event_ms
        if idle_s >= config.idle_timeout_s and behind:
            plan[partition] = estimate
    return plan


class Ticker:
    """Background thread that sends the ticks :func:`plan_ticks` decides."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        partitions: int,
        board: ClockBoard,
        config: AnalyticsConfig,
    ) -> None:
        self._topic = topic
        self._partitions = partitions
        self._board = board
        self._config = config
        self._producer = make_producer(settings, **{"linger.ms": 5})
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="analytics-ticker", daemon=True)
        self.sent = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._producer.flush(5)

    def _loop(self) -> None:
        while not self._stop.wait(self._config.tick_interval_s):
            try:
                self.tick_once()
            except Exception:  # a failed tick must not end the ticker: the next one retries
                log.exception("analytics ticker: sending ticks failed")

    def tick_once(self) -> dict[int, int | None]:
        now = time.monotonic()
        plan = plan_ticks(
            now, self._started, self._board.snapshot(), self._partitions, self._config
        )
        wall_ms = int(time.time() * 1000)
        for partition, watermark in plan.items():
            self._producer.produce(
                self._topic,
                key=str(partition).encode(),
                value=orjson.dumps({"watermark": watermark, "wall_ms": wall_ms}),
                partition=partition,
            )
        self._producer.poll(0)
        self.sent += len(plan)
        return plan
