"""Producer throughput: shopstream's simulator+sender against raw confluent-kafka.

Starts its own embedded broker, then measures, in alternating rounds of the same
run and with the same producer settings (idempotent, acks=all, lz4, linger):

* ``shopstream produce``  - simulate + encode + send + count delivery reports
  (:func:`producers.app.run_produce`, unpaced, every channel, no faults);
* ``raw, same bytes``     - confluent-kafka sending the very records the
  shopstream run sent (key, value, headers, timestamp), pre-built: the ceiling;
* ``raw + json.dumps``    - confluent-kafka encoding the same events with
  ``json.dumps`` per record: the anchor figure of the issue (~80k/s here).

Each figure is the median of the rounds, from the first produce to the end of
the final flush (every record acknowledged). This is a benchmark, not a test:

    python benchmarks/produce_throughput.py [--events 200000] [--rounds 3]

``shopstream bench`` runs it as its producers stage (:func:`stage`).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the benchmarks package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import gc
import io
import json
import statistics
import time
from collections.abc import Callable
from itertools import islice
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.common import Bench, Figure, StageResult
from producers.app import ProduceOptions, record_streams, run_produce
from producers.record import INGRESS_CHANNELS
from shopstream.admin import create_topics
from shopstream.brokers import make_broker
from shopstream.kafka import make_producer
from shopstream.settings import Settings, load_settings
from shopstream.topics import INGRESS_BY_CHANNEL

START_MS = 1_741_168_800_000  # 2025-03-05T10:00:00Z, a Wednesday morning


def fresh_topics(settings: Settings, round_no: int, label: str) -> dict[str, str]:
    specs = [
        INGRESS_BY_CHANNEL[c].renamed(f"bench-{label}-{round_no}-{c}") for c in INGRESS_CHANNELS
    ]
    create_topics(settings, specs)
    return {c: s.name for c, s in zip(INGRESS_CHANNELS, specs, strict=True)}


def options(n: int, topics: dict[str, str]) -> ProduceOptions:
    return ProduceOptions(
        start_ms=START_MS, seed=1, rate=0.0, count=n, opening=False,
        topics=topics,  # type: ignore[arg-type]
    )  # fmt: skip


def bench_shopstream(settings: Settings, n: int, topics: dict[str, str]) -> float:
    stats = run_produce(settings, options(n, topics), console=Console(file=io.StringIO()))
    assert stats.acked == stats.sent == n and stats.failed == 0, stats
    return n / stats.elapsed


def bench_raw(
    settings: Settings,
    items: list[tuple[str, Any, bytes, Any, int]],
    encode: Callable[[Any], bytes],
) -> float:
    producer = make_producer(settings)
    produce, poll = producer.produce, producer.poll
    producer.list_topics(timeout=10)  # connected before the clock starts
    started = time.perf_counter()
    for i, (topic, value, key, headers, timestamp) in enumerate(items, start=1):
        payload = encode(value)
        while True:
            try:
                produce(topic, payload, key, headers=headers, timestamp=timestamp)
                break
            except BufferError:
                poll(0.05)
        if i % 1024 == 0:
            poll(0)
    remaining = producer.flush(60)
    assert remaining == 0
    return len(items) / (time.perf_counter() - started)


LABELS = {
    "shopstream": "shopstream produce (simulate + send)",
    "raw": "raw confluent-kafka, same bytes",
    "json": "raw confluent-kafka + json.dumps",
}


def measure(
    settings: Settings, events: int, rounds: int, on_round: Callable[[str], None] = print
) -> dict[str, list[float]]:
    """Events/s of each producer, round by round (alternating, same run)."""
    results: dict[str, list[float]] = {"shopstream": [], "raw": [], "json": []}
    for r in range(rounds):
        # What shopstream sends, pre-built for the raw producers (not timed).
        _, traffic = record_streams(options(events, {}))
        records = list(islice(traffic, events))
        gc.collect()
        raw_topics = fresh_topics(settings, r, "raw")
        same_bytes = [
            (raw_topics[x.channel], x.value, x.key, x.headers, x.timestamp_ms) for x in records
        ]
        json_topics = fresh_topics(settings, r, "json")
        as_dicts = [
            (json_topics[x.channel], json.loads(x.value), x.key, x.headers, x.timestamp_ms)
            for x in records
        ]
        del records
        results["shopstream"].append(
            bench_shopstream(settings, events, fresh_topics(settings, r, "shop"))
        )
        results["raw"].append(bench_raw(settings, same_bytes, lambda v: v))
        results["json"].append(bench_raw(settings, as_dicts, lambda v: json.dumps(v).encode()))
        del same_bytes, as_dicts
        on_round(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in results.items()))
    return results


def stage(bench: Bench) -> StageResult:
    """``shopstream bench``: the producers against raw confluent-kafka + json.dumps."""
    result = StageResult("producers", "Producers: simulator + sender vs raw produce")
    sizes = bench.sizes
    bench.reporter.step(f"producers: {sizes.produce_events:,} events x {sizes.produce_rounds}")
    rates = measure(
        bench.settings("producers"), sizes.produce_events, sizes.produce_rounds,
        on_round=bench.reporter.log,
    )  # fmt: skip
    best = {k: statistics.median(v) for k, v in rates.items()}
    result.add(Figure(
        "producers.shopstream", LABELS["shopstream"], best["shopstream"], "events/s",
        LABELS["json"], best["json"],
        note="simulate + encode + send + delivery reports, every channel, unpaced",
    ))  # fmt: skip
    result.add(Figure(
        "producers.shopstream_vs_same_bytes", LABELS["shopstream"] + " vs the same bytes",
        best["shopstream"], "events/s", LABELS["raw"], best["raw"],
        note="the ceiling: the very records shopstream sent, pre-built",
    ))  # fmt: skip
    result.details = {"events": sizes.produce_events, "rounds": rates}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with make_broker("embedded") as broker:
        settings = load_settings(broker_address=broker.address)
        results = measure(settings, args.events, args.rounds, on_round=lambda s: print(s))

    median = {k: statistics.median(v) for k, v in results.items()}
    table = Table(title=f"produce throughput, {args.events:,} events x {args.rounds} rounds")
    table.add_column("producer")
    table.add_column("events/s (median)", justify="right")
    table.add_column("min..max", justify="right")
    table.add_column("shopstream / this", justify="right")
    for key, label in LABELS.items():
        values = results[key]
        table.add_row(
            label,
            f"{median[key]:,.0f}",
            f"{min(values):,.0f}..{max(values):,.0f}",
            f"{median['shopstream'] / median[key]:.2f}x",
        )
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
