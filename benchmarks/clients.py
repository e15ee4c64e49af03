"""Raw confluent-kafka: the baselines every other figure stands on.

    python benchmarks/clients.py [--events 200000]

On one input (the channel simulators' records, pre-built), with shopstream's producer
settings (idempotent, acks=all, lz4, linger) and one consumer assigned to every
partition (no group join):

* **produce, same bytes** - the pre-encoded records: the ceiling of any producer here;
* **produce + json.dumps** - each event encoded by ``json.dumps`` as it is sent;
* **consume, batches** - ``consume(10_000)`` without decoding: the ceiling of any reader
  (timed from the first batch on, that batch not counted);
* **consume + json.loads** - the plain per-message loop (``poll()`` + ``json.loads``), the
  baseline of the replay's >= 3x target (issue 16).

Consume figures count from the first record to the last; produce figures from the first
``produce`` to the end of the final flush (every record acknowledged).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the benchmarks package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from benchmarks.common import Bench, Figure, QuietReporter, Reporter, StageResult
from benchmarks.inputs import channel_records
from benchmarks.produce_throughput import bench_raw
from shopstream.admin import create_topics
from shopstream.brokers import make_broker
from shopstream.kafka import fetch_metadata, make_consumer
from shopstream.settings import Settings, load_settings
from shopstream.topics import ORDERS

CONSUMER_TUNING = {
    "fetch.max.bytes": 64 * 1024 * 1024,
    "max.partition.fetch.bytes": 16 * 1024 * 1024,
    "queued.max.messages.kbytes": 262144,
    "queued.min.messages": 1_000_000,
}
"""The replay's consumer settings: a fair baseline reads with the same buffers."""


def assigned_consumer(settings: Settings, topic: str, **overrides: Any) -> Any:
    """A consumer assigned to every partition of ``topic`` from offset zero."""
    consumer = make_consumer(settings, f"bench-{uuid.uuid4().hex[:8]}",
                             **(CONSUMER_TUNING | overrides))  # fmt: skip
    partitions = fetch_metadata(settings).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    return consumer


def consume_batches(settings: Settings, topic: str, total: int) -> float:
    """Records/s of ``consume(10_000)`` without decoding, first record to the last."""
    consumer = assigned_consumer(settings, topic)
    seen, counted, first = 0, 0, 0.0
    deadline = time.monotonic() + 120
    try:
        while seen < total and time.monotonic() < deadline:
            batch = consumer.consume(10_000, timeout=0.5)
            got = sum(1 for m in batch if m.error() is None)
            if got and not first:  # the clock starts once the first batch is here
                first = time.perf_counter()
            else:
                counted += got
            seen += got
        seconds = time.perf_counter() - first
        return counted / seconds if counted and seconds > 0 else 0.0
    finally:
        consumer.close()


def consume_json_loop(settings: Settings, topic: str, total: int) -> float:
    """Records/s of the plain loop: ``poll()`` one message, ``json.loads`` its value."""
    consumer = assigned_consumer(settings, topic)
    poll, loads = consumer.poll, json.loads
    seen, first = 0, 0.0
    deadline = time.monotonic() + 300
    try:
        while seen < total and time.monotonic() < deadline:
            msg = poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            if not seen:
                first = time.perf_counter()
            loads(msg.value())
            seen += 1
        return (seen - 1) / (time.perf_counter() - first) if seen > 1 else 0.0
    finally:
        consumer.close()


def measure(settings: Settings, events: int, reporter: Reporter) -> dict[str, float]:
    tag = uuid.uuid4().hex[:6]
    specs = [ORDERS.renamed(f"bench-clients-{tag}-{x}") for x in ("bytes", "json")]
    create_topics(settings, specs)
    bytes_topic, json_topic = (s.name for s in specs)
    records = channel_records(events)
    reporter.step(f"clients: raw produce of {events:,} records")
    same = [(bytes_topic, r.value, r.key, r.headers, r.timestamp_ms) for r in records]
    as_dicts = [(json_topic, json.loads(r.value), r.key, r.headers, r.timestamp_ms)
                for r in records]  # fmt: skip
    del records
    out = {
        "produce_bytes": bench_raw(settings, same, lambda v: v),
        "produce_json": bench_raw(settings, as_dicts, lambda v: json.dumps(v).encode()),
    }
    del same, as_dicts
    reporter.step(f"clients: raw consume of {events:,} records")
    out["consume_batches"] = consume_batches(settings, bytes_topic, events)
    out["consume_json"] = consume_json_loop(settings, bytes_topic, events)
    return out


def stage(bench: Bench) -> StageResult:
    """``shopstream bench``: raw client figures (baselines)."""
    result = StageResult("clients", "Raw confluent-kafka produce and consume (baselines)")
    events = bench.sizes.produce_events
    rates = measure(bench.settings("clients"), events, bench.reporter)
    bench.cache["raw_produce_json"] = rates["produce_json"]
    result.add(Figure("clients.produce_bytes", "raw produce, pre-encoded bytes",
                      rates["produce_bytes"], "records/s"))  # fmt: skip
    result.add(Figure(
        "clients.produce_json", "raw produce + json.dumps", rates["produce_json"], "records/s",
        "raw produce, pre-encoded bytes", rates["produce_bytes"],
    ))  # fmt: skip
    result.add(Figure("clients.consume_batches", "raw consume(10k), no decode",
                      rates["consume_batches"], "records/s"))  # fmt: skip
    result.add(Figure(
        "clients.consume_json", "raw poll() + json.loads per message", rates["consume_json"],
        "records/s", "raw consume(10k), no decode", rates["consume_batches"],
    ))  # fmt: skip
    result.details = {"events": events}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    with make_broker("embedded") as broker:
        rates = measure(load_settings(broker_address=broker.address), args.events,
                        QuietReporter())  # fmt: skip
    for name, rate in rates.items():
        print(f"{name:<18} {rate:>12,.0f} records/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
