"""Read models for tests and benchmarks without a broker: the simulated shop run through the
real router decision and the real services' rules in this process, then written by the
real sink writer into a real DuckLake.

This is the choreography without Kafka in between: each event goes to the services that
subscribe to its topic (the app registry's declarations), whose outputs go on in turn,
in order. Offsets are counted per topic partition as a broker would.
"""

from __future__ import annotations

import itertools
import time
import zlib
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson

from pipelines.router import decide
from pipelines.runtime.outputs import AppCounters
from pipelines.services.apps import SERVICES, level_records
from pipelines.services.state import MemoryState
from pipelines.sink.app import LakeSink, feeds_for
from pipelines.sink.writer import LakeWriter, Record
from producers.simulator import ShopSimulator, SimConfig
from readmodels.generations import open_for
from readmodels.lake import connect
from shopstream.events import encode, headers_for
from shopstream.settings import Settings
from shopstream.topics import CATALOG, STOCK_LEVELS

PARTITIONS = 3
START_MS = 1_764_590_400_000  # a Monday, 12:00 UTC


def sink_for(settings: Settings, broker_id: str = "b1") -> LakeSink:
    """A sink writing into ``settings``' lake, in the generation of ``broker_id``."""
    con = connect(settings, read_only=False)
    generation, _ = open_for(con, broker_id)
    return LakeSink(LakeWriter(con, generation, feeds_for(CATALOG)), AppCounters())


def order_records(n: int, first_offset: int = 0, seed: int = 3) -> list[Record]:
    """``n`` simulated orders as records of the ``orders`` topic, partition 0."""
    out: list[Record] = []
    for rec in ShopSimulator(SimConfig(start_ms=START_MS, seed=seed)).records():
        if rec.event_type != "OrderPlaced":
            continue
        offset = first_offset + len(out)
        out.append(("orders", 0, offset, rec.timestamp_ms, rec.key, rec.value, rec.headers))
        if len(out) == n:
            return out
    raise AssertionError("the simulator ran dry")


def simulated_orders(n: int, seed: int = 11) -> list[tuple[bytes, bytes, int]]:
    """``(key, value, timestamp)`` of ``n`` simulated orders to produce onto an ``orders``
    topic (see :func:`simulated_order_stream`)."""
    out = list(itertools.islice(simulated_order_stream(seed), n))
    assert len(out) == n, "the simulator ran dry"
    return out


def simulated_order_stream(seed: int = 11) -> Iterator[tuple[bytes, bytes, int]]:
    """``(key, value, timestamp)`` of simulated orders, as many as are drawn, their event
    times from two days ago: unpaced, the simulated shop's clock runs hours ahead (at
    night, when it is quiet, 6,000 orders span hours), and Apache Kafka refuses record
    times over an hour ahead of its own (``INVALID_TIMESTAMP``)."""
    start = int(time.time() * 1000) - 2 * 86_400_000
    for rec in ShopSimulator(SimConfig(start_ms=start, seed=seed)).records():
        if rec.event_type == "OrderPlaced":
            yield rec.key, rec.value, rec.timestamp_ms


STOCK_KEYS = [(f"store-{s:02d}", f"SKU-{k:05d}") for s in range(1, 5) for k in range(1, 16)]
"""Store and SKU pairs (60) of the stock levels the tests write themselves."""


def stock_level(store: str, sku: str, level: int, event_id: str) -> tuple[bytes, bytes]:
    """Key and value of a record of the stock-levels topic, as the stock app writes it."""
    doc = {"store_id": store, "sku": sku, "level": level,
           "as_of": "2026-12-01T12:00:00.000Z", "event_id": event_id}  # fmt: skip
    return f"{store}/{sku}".encode(), orjson.dumps(doc)


def feed(sink: LakeSink, records: list[Record]) -> None:
    """Hand ``records`` to ``sink`` as Quix would, commit a checkpoint, and wait until
    the sink has written them (it writes behind the checkpoint)."""
    for topic, partition, offset, ts, key, value, headers in records:
        sink.add(value, key, ts, headers, topic, partition, offset)
    sink.drain()


@dataclass
class ShopRun:
    """The records every topic would hold after the simulated shop ran through the apps."""

    records: list[Record] = field(default_factory=list)
    _next: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))

    def append(self, topic: str, key: bytes, value: bytes, headers: list, ts: int) -> None:  # type: ignore[type-arg]
        partition = zlib.crc32(key) % PARTITIONS  # any stable choice: offsets are per partition
        offset = self._next[(topic, partition)]
        self._next[(topic, partition)] += 1
        self.records.append((topic, partition, offset, ts, key, value, headers))


def shop_run(events: int, seed: int = 1, start_ms: int = START_MS) -> ShopRun:
    """``events`` channel events of the simulated shop (after its opening stock), through
    the router and every service, as the records of each topic."""
    run = ShopRun()
    subscribers: dict[str, list[str]] = defaultdict(list)
    for definition in SERVICES.values():
        for spec in definition.inputs:
            subscribers[spec.name].append(definition.name)
    states: dict[tuple[str, str], MemoryState] = defaultdict(MemoryState)
    sim = ShopSimulator(SimConfig(start_ms=start_ms, seed=seed))
    sent = 0
    for rec in _channel_records(sim, events):
        decision = decide(rec.value, None)
        if decision.outcome != "routed" or decision.event is None or decision.route is None:
            continue
        sent += 1
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
                    spec = definition.outputs[out.event_type]
                    pending.append((spec.name, out, service))
                    if service == "stock":
                        for _, level_key, level_value in level_records(out):
                            run.append(STOCK_LEVELS.name, level_key, level_value, [], ts)
    assert sent > 0
    return run


def _channel_records(sim: ShopSimulator, events: int) -> Iterator:  # type: ignore[type-arg]
    yield from sim.opening()
    for i, rec in enumerate(sim.records()):
        if i >= events:
            return
        yield rec
