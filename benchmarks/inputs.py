"""Benchmark inputs, all from the shop simulator (:mod:`producers.simulator`), and a fast
raw producer to put them on a broker.

* :func:`channel_records` - what the channel simulators send (optionally with duplicates
  and malformed records), for the producers' and the router's benchmarks;
* :func:`shop_run` - the simulated shop run through the real router decision and the
  real services' rules in this process, without a broker: the records every typed and
  service topic would hold (the analytics' and the sink's inputs). The same idea as the
  tests' ``support.lake.shop_run``, which benchmarks may not import;
* :func:`order_records` - ``OrderPlaced`` values only (replay, dashboard lakes).
"""

from __future__ import annotations

import time
import zlib
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from producers.app import ProduceOptions, record_streams
from producers.faults import FaultConfig
from producers.record import Record as ChannelRecord
from producers.simulator import ShopSimulator, SimConfig
from shopstream.events import encode, headers_for
from shopstream.kafka import make_producer
from shopstream.settings import Settings
from shopstream.topics import STOCK_LEVELS

PARTITIONS = 3
START_MS = 1_741_168_800_000  # 2025-03-05T10:00:00Z, a Wednesday morning

Headers = list[tuple[str, bytes]]
Record = tuple[str, int, int, int, bytes, bytes, Headers]
"""``(topic, partition, offset, timestamp, key, value, headers)``, as the sink stages them."""


def channel_records(
    n: int, seed: int = 1, start_ms: int = START_MS, faults: FaultConfig | None = None
) -> list[ChannelRecord]:
    """The first ``n`` traffic records of the simulated shop (no opening stock)."""
    options = ProduceOptions(start_ms=start_ms, seed=seed, opening=False,
                             faults=faults or FaultConfig())  # fmt: skip
    _, traffic = record_streams(options)
    return list(islice(traffic, n))


def opening_records(seed: int = 1, start_ms: int = START_MS) -> list[ChannelRecord]:
    """The warehouse's opening stock (one ``Restocked`` per SKU and location)."""
    return list(ShopSimulator(SimConfig(start_ms=start_ms, seed=seed)).opening())


@dataclass
class ShopRun:
    """The records every topic would hold after the simulated shop ran through the apps."""

    records: list[Record] = field(default_factory=list)
    _next: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))

    def append(self, topic: str, key: bytes, value: bytes, headers: Headers, ts: int) -> None:
        partition = zlib.crc32(key) % PARTITIONS  # stable; offsets are counted per partition
        offset = self._next[(topic, partition)]
        self._next[(topic, partition)] += 1
        self.records.append((topic, partition, offset, ts, key, value, headers))

    def traffic(self) -> list[Record]:
        """The records from the first order on: the opening stock load (one restock per
        SKU and location and all it leads to) left out."""
        first = next((i for i, r in enumerate(self.records) if r[0] == "orders"), 0)
        return self.records[first:]

    def by_topic(self) -> dict[str, list[Record]]:
        out: dict[str, list[Record]] = defaultdict(list)
        for record in self.records:
            out[record[0]].append(record)
        return dict(out)


def shop_run(events: int, seed: int = 1, start_ms: int = START_MS) -> ShopRun:
    """``events`` channel events (after the opening stock) through the router's decision
    and every service's rule, in order, as the records of each catalog topic."""
    from pipelines.router import decide
    from pipelines.services.apps import SERVICES, level_records
    from pipelines.services.state import MemoryState

    run = ShopRun()
    subscribers: dict[str, list[str]] = defaultdict(list)
    for definition in SERVICES.values():
        for spec in definition.inputs:
            subscribers[spec.name].append(definition.name)
    states: dict[tuple[str, str], MemoryState] = defaultdict(MemoryState)
    sim = ShopSimulator(SimConfig(start_ms=start_ms, seed=seed))
    channel = _chain(sim.opening(), islice(sim.records(), events))
    for rec in channel:
        decision = decide(rec.value, None)
        if decision.outcome != "routed" or decision.event is None or decision.route is None:
            continue
        pending = deque([(decision.route.name, decision.event, "router")])
        while pending:
            topic, event, app = pending.popleft()
            ts = int(event.occurred_at.timestamp() * 1000)
            key = event.store_id.encode()
            stamp = [("app", app.encode()), ("emitted_at", str(ts + 5).encode())]
            run.append(topic, key, encode(event), [*headers_for(event), *stamp], ts)
            for service in subscribers.get(topic, []):
                definition = SERVICES[service]
                if event.event_type not in definition.accepts:
                    continue
                state = states[(service, event.store_id)]
                for out in definition.rule(event, state):
                    pending.append((definition.outputs[out.event_type].name, out, service))
                    if service == "stock":
                        for _, level_key, level_value in level_records(out):
                            run.append(STOCK_LEVELS.name, level_key, level_value, [], ts)
    return run


def _chain(*parts: Iterable[ChannelRecord]) -> Iterator[ChannelRecord]:
    for part in parts:
        yield from part


def order_records(
    n: int, seed: int = 3, start_ms: int = START_MS, topic: str = "orders"
) -> list[Record]:
    """``n`` simulated ``OrderPlaced`` records of ``topic``, spread over its partitions."""
    out: list[Record] = []
    offsets = [0] * PARTITIONS
    for rec in ShopSimulator(SimConfig(start_ms=start_ms, seed=seed)).records():
        if rec.event_type != "OrderPlaced":
            continue
        partition = zlib.crc32(rec.key) % PARTITIONS
        out.append((topic, partition, offsets[partition], rec.timestamp_ms, rec.key, rec.value,
                    rec.headers))  # fmt: skip
        offsets[partition] += 1
        if len(out) == n:
            break
    return out


def produce_raw(
    settings: Settings,
    records: Iterable[Record],
    rename: dict[str, str] | None = None,
    keep_partition: bool = True,
) -> tuple[int, float]:
    """Send ``records`` as they are (pre-encoded) to the broker, every one acknowledged;
    ``rename`` maps topic names (a namespace). Returns ``(records, seconds)``."""
    producer = make_producer(settings)
    produce, poll = producer.produce, producer.poll
    names = rename or {}
    sent = 0
    started = time.perf_counter()
    for topic, partition, _, ts, key, value, headers in records:
        extra = {"partition": partition} if keep_partition else {}
        while True:
            try:
                produce(names.get(topic, topic), value, key, headers=headers or None,
                        timestamp=ts, **extra)  # fmt: skip
                break
            except BufferError:
                poll(0.05)
        sent += 1
        if sent % 1024 == 0:
            poll(0)
    remaining = producer.flush(120)
    if remaining:
        raise RuntimeError(f"{remaining} benchmark input records were not acknowledged")
    return sent, time.perf_counter() - started


def shared_shop_run(cache: dict[str, Any], events: int) -> ShopRun:
    """:func:`shop_run` of ``events``, made once per benchmark run (``Bench.cache``).

    Its event times start a day ago: record timestamps are event times, and outputs
    windowed on them must not be older than a topic's retention (Apache Kafka deletes
    them at its next retention check)."""
    key = f"shop_run:{events}"
    if key not in cache:
        hour = 3_600_000
        start = (int(time.time() * 1000) - 24 * hour) // hour * hour
        cache[key] = shop_run(events, start_ms=start)
    run: ShopRun = cache[key]
    return run
