"""Ticks: how windows close and silence is noticed when no events arrive.

Windows advance on event time, and event time only moves when events arrive: a
shop that goes quiet would never see its last windows closed, nor the silence
alert that should say so; and a partition whose stock questions stopped would
hold back its demand windows. The analytics app therefore reads a tick topic next
to its inputs (co-partitioned). A tick ``{"watermark": T, "inputs": [...]}`` on
partition ``p`` asserts "event time ``T`` has passed on these inputs of partition
``p``" (all inputs when ``inputs`` is null); the engine raises those watermarks to
``T`` (:meth:`~pipelines.analytics.local.PartitionAggregator.on_tick`). A tick
with ``"watermark": null`` is a *probe*: it changes nothing, but the partition's
owner reports its clock, so a fresh instance learns where event time stands
without waiting for data.

The :class:`Ticker` thread of the app decides the ticks from what the engines
report (:class:`ClockBoard`) with :func:`plan_ticks`, on wall-clock idleness:

* while an input's events flow, no tick for it: event time is what events say;
* an input with no event for ``idle_timeout_s`` while its partition has others
  flowing is ticked to the partition's event time (an empty stock log must not
  hold back the demand windows);
* a partition with every input idle is ticked to the other partitions' event
  time, and once every partition has been idle for ``idle_timeout_s``, event
  time advances at wall-clock speed from where the events stopped.

Idleness is about wall-clock silence, never about one topic being consumed ahead
of another, so replaying a backlog does not make events late. Events that arrive
after a tick moved past them are late like any other: kept on the late-events
topic with the reason. Tests produce ticks directly, with explicit watermarks.
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
    """Latest event time the partition has seen (ticks excluded), ``None`` before any."""
    data_wall: Mapping[str, float]
    """Per input: when it last processed an event of that input (this process only)."""
    seen_wall: float
    """When it last reported anything (event or tick)."""


Tick = tuple[int, tuple[str, ...] | None]
"""(watermark, inputs it raises - ``None`` for all)."""


class ClockBoard:
    """Thread-safe board where stream processing reports each partition's clock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clocks: dict[int, PartitionClock] = {}

    def report(self, partition: int, kind: str | None, event_ms: int | None) -> None:
        """Partition ``partition`` processed an event of input ``kind`` (``None``: a tick)."""
        now = time.monotonic()
        with self._lock:
            before = self._clocks.get(partition)
            data_wall = dict(before.data_wall) if before else {}
            if kind is not None:
                data_wall[kind] = now
            self._clocks[partition] = PartitionClock(event_ms, data_wall, now)

    def snapshot(self) -> dict[int, PartitionClock]:
        with self._lock:
            return dict(self._clocks)


def plan_ticks(
    now: float,
    started: float,
    clocks: Mapping[int, PartitionClock],
    partitions: int,
    inputs: tuple[str, ...],
    config: AnalyticsConfig,
) -> dict[int, Tick | None]:
    """The tick to send to each partition: a :data:`Tick`, ``None`` (probe), or absent.

    ``now`` and ``started`` (when the process started) are monotonic seconds.
    Partitions that have not reported within five tick intervals are probed, not
    ticked: this instance may not own them, and a watermark computed here must
    not reach another instance's partitions.
    """
    stale_after = max(5 * config.tick_interval_s, 5.0)
    timeout = config.idle_timeout_s
    owned = {p: c for p, c in clocks.items() if now - c.seen_wall <= stale_after}
    plan: dict[int, Tick | None] = {p: None for p in range(partitions) if p not in owned}
    known = [c.event_ms for c in owned.values() if c.event_ms is not None]
    if not known:
        return plan
    last_data = max((w for c in owned.values() for w in c.data_wall.values()), default=started)
    all_idle_s = now - max(last_data, started) - timeout
    estimate = max(known) + (int(all_idle_s * 1000) if all_idle_s > 0 else 0)
    for partition, clock in owned.items():
        idle = tuple(k for k in inputs if now - clock.data_wall.get(k, started) >= timeout)
        if len(idle) == len(inputs):
            if clock.event_ms is None or estimate > clock.event_ms:
                plan[partition] = (estimate, None)
        elif idle and clock.event_ms is not None:
            plan[partition] = (clock.event_ms, idle)
    return plan


class Ticker:
    """Background thread that sends the ticks :func:`plan_ticks` decides."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        partitions: int,
        inputs: tuple[str, ...],
        board: ClockBoard,
        config: AnalyticsConfig,
    ) -> None:
        self._topic = topic
        self._partitions = partitions
        self._inputs = inputs
        self._board = board
        self._config = config
        self._producer = make_producer(settings, **{"linger.ms": 5})
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="analytics-ticker", daemon=True)
        self._sent: dict[int, Tick] = {}
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

    def tick_once(self) -> dict[int, Tick | None]:
        """Send this round's ticks; a tick equal to the last one sent is not repeated."""
        now = time.monotonic()
        plan = plan_ticks(
            now, self._started, self._board.snapshot(), self._partitions, self._inputs, self._config
        )
        wall_ms = int(time.time() * 1000)
        for partition, tick in plan.items():
            if tick is not None and self._sent.get(partition) == tick:
                continue
            watermark, inputs = tick if tick is not None else (None, None)
            value = {"watermark": watermark, "inputs": inputs, "wall_ms": wall_ms}
            self._producer.produce(
                self._topic,
                key=str(partition).encode(),
                value=orjson.dumps(value),
                partition=partition,
            )
            if tick is not None:
                self._sent[partition] = tick
            self.sent += 1
        self._producer.poll(0)
        return plan
