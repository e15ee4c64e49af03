"""Router throughput against a plain Quix Streams stateless app, same input, same run.

    python benchmarks/router_throughput.py [--events 200000] [--rounds 3]
        [--broker HOST:PORT | --broker-kind embedded|kafka]

Without ``--broker`` it starts a broker on a free port: the embedded one, or the Apache
Kafka reference (``--broker-kind kafka``, needs Java). It writes one input
set into the four ingress topics (orders, returns, questions, restocks in the channel
mix, plus 1% duplicates and 1% malformed records), then runs, each with a fresh
consumer group over that same input and in the same processing guarantee:

* ``quix pass-through``: the floor - a stateless Quix app, bytes in, ``apply`` of the
  identity, bytes out to one topic;
* ``quix json apply``: a plain stateless app as Quix's docs write it (JSON
  deserializer, ``apply``, JSON serializer, one output topic);
* ``router, no dedupe``: validation against the contracts, routing to the typed topics,
  dead letters (``build_router(dedupe_ttl=None)``);
* ``router``: the same plus dedupe of event ids (the default: a window per partition,
  persisted per checkpoint, see ``pipelines/dedupe.py``).

Throughput counts input records between the first and the last one processed (group
join and start-up excluded). Each app runs ``--rounds`` times, alternating; the table
reports each app's best round, and the last lines the router's rate over the json
apply's round by round (the two ran back to back, so they saw the same neighbours) with
the median, the figure to judge by on a noisy machine. The table gives each
rate against both baselines; issue 5's target is router >= 0.8x a plain stateless Quix
app (``quix json apply``).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Sample events come from the tests' support package (not part of the product).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import argparse
import logging
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.router import build_router, router_topics
from pipelines.runtime.quix import quix_app
from shopstream.admin import create_topics
from shopstream.brokers import make_broker
from shopstream.events import Envelope, encode, headers_for
from shopstream.kafka import make_producer
from shopstream.settings import Settings, load_settings
from shopstream.topics import INGRESS_BY_CHANNEL, Namespace, TopicSpec
from support import service_samples as samples

BASELINE_OUT = TopicSpec("bench.baseline-out", "analytics", "benchmark baseline output")
SKUS = [f"SKU-{i:05d}" for i in range(1, 501)]
STORES = [f"store-{i:02d}" for i in range(1, 21)]


def make_input(n: int, seed: int = 7) -> list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]:
    """``(channel, key, value, headers)`` records: valid events, 1% dupes, 1% malformed."""
    rng = random.Random(seed)
    out: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []
    channels = ("mobile", "pos", "web")
    for i in range(n):
        roll = rng.random()
        store = rng.choice(STORES)
        channel = rng.choice(channels)
        event: Envelope
        if roll < 0.01 and out:
            out.append(rng.choice(out))  # a duplicate: same bytes, same event_id
            continue
        if roll < 0.02:
            out.append((channel, store.encode(), b'{"event_type": "OrderPlaced", "trunc', []))
            continue
        if roll < 0.75:
            lines = [
                (rng.choice(SKUS), rng.randint(1, 3), f"{rng.randint(100, 9999) / 100:.2f}")
                for _ in range(rng.randint(1, 5))
            ]
            event = samples.order(
                f"o-{i}", lines, store_id=store, channel=channel, customer_id=f"c-{i % 997}", t=i
            )
        elif roll < 0.85:
            event = samples.returned(
                f"r-{i}", f"o-{i - 50}", rng.choice(SKUS), 1, "9.99",
                store_id=store, channel=channel, t=i,
            )  # fmt: skip
        elif roll < 0.95:
            event = samples.question(
                f"q-{i}", rng.choice(SKUS), store_id=store, channel=channel, t=i
            )
        else:
            event = samples.restock(f"s-{i}", rng.choice(SKUS), 50, store_id=store, t=i)
            channel = "warehouse"
        out.append((channel, store.encode(), encode(event), headers_for(event)))
    return out


def produce(settings: Settings, ns: Namespace, records: list[Any]) -> None:
    producer = make_producer(settings)
    for channel, key, value, headers in records:
        topic = ns.topic(INGRESS_BY_CHANNEL[channel]).name
        while True:
            try:
                producer.produce(topic, key=key, value=value, headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)


@dataclass
class Meter:
    """First/last processing time and count, from Quix's per-message callback."""

    first: float = 0.0
    last: float = 0.0
    count: int = 0

    def __call__(self, _topic: str, _partition: int, _offset: int) -> None:
        now = time.perf_counter()
        if not self.count:
            self.first = now
        self.last = now
        self.count += 1

    @property
    def rate(self) -> float:
        return (self.count - 1) / (self.last - self.first) if self.count > 1 else 0.0


def run_passthrough(settings: Settings, ns: Namespace, group: str, meter: Meter) -> None:
    app = quix_app(settings, f"bench-pass-{group}", group, on_message_processed=meter)
    out = app.topic(ns.topic(BASELINE_OUT).name, key_serializer="bytes", value_serializer="bytes")
    for spec in INGRESS_BY_CHANNEL.values():
        topic = app.topic(ns.topic(spec).name, key_deserializer="bytes", value_deserializer="bytes")
        app.dataframe(topic).apply(lambda v: v).to_topic(out)
    app.run(timeout=3)


def run_json_apply(settings: Settings, ns: Namespace, group: str, meter: Meter) -> None:
    app = quix_app(settings, f"bench-json-{group}", group, on_message_processed=meter)
    out = app.topic(ns.topic(BASELINE_OUT).name, value_serializer="json")
    # A malformed record must not stop the baseline: skip what the deserializer rejects.
    app._consumer._on_error = lambda *_: True
    for spec in INGRESS_BY_CHANNEL.values():
        topic = app.topic(ns.topic(spec).name, value_deserializer="json")
        app.dataframe(topic).apply(lambda v: v).to_topic(out)
    app.run(timeout=3)


def run_router(settings: Settings, ns: Namespace, group: str, meter: Meter) -> None:
    built = build_router(settings, ns, on_message_processed=meter, consumer_group=group)
    built.app.run(timeout=3)
    assert built.processor.stats.balanced, built.processor.stats.summary()


def run_router_no_dedupe(settings: Settings, ns: Namespace, group: str, meter: Meter) -> None:
    built = build_router(
        settings, ns, dedupe_ttl=None, on_message_processed=meter, consumer_group=group
    )
    built.app.run(timeout=3)


APPS: dict[str, Callable[[Settings, Namespace, str, Meter], None]] = {
    "quix pass-through": run_passthrough,
    "quix json apply": run_json_apply,
    "router, no dedupe": run_router_no_dedupe,
    "router": run_router,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--broker", help="HOST:PORT of a running broker")
    where.add_argument("--broker-kind", choices=["embedded", "kafka"], default="embedded")
    parser.add_argument(
        "--guarantees", default="exactly-once,at-least-once", help="comma-separated"
    )
    args = parser.parse_args()
    # The input's malformed 1% would otherwise log a warning each (throttled, still noise).
    logging.getLogger("pipelines").setLevel(logging.ERROR)

    broker = None
    if args.broker:
        address = args.broker
    else:
        broker = make_broker(args.broker_kind).start()
        address = broker.address
    try:
        return _bench(address, args)
    finally:
        if broker is not None:
            broker.stop()


def _bench(address: str, args: argparse.Namespace) -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="router-bench-"))
    ns = Namespace(uuid.uuid4().hex[:8])
    base = load_settings(broker_address=address, data_dir=data_dir)
    create_topics(base, ns.topics([*router_topics(), BASELINE_OUT]))
    records = make_input(args.events)
    t = time.perf_counter()
    produce(base, ns, records)
    print(
        f"input: {len(records):,} records produced in {time.perf_counter() - t:.1f}s",
        file=sys.stderr,
    )

    rows: list[tuple[str, str, int, float]] = []
    paired: dict[str, list[float]] = {}
    for guarantee in args.guarantees.split(","):
        settings = load_settings(base=base, processing_guarantee=guarantee)
        rates: dict[str, list[float]] = {name: [] for name in APPS}
        counts: dict[str, int] = {}
        for round_no in range(args.rounds):
            for name, run in APPS.items():
                meter = Meter()
                group = f"bench-{name.replace(' ', '-')}-{guarantee}-{round_no}-{ns.suffix}"
                run(settings, ns, group, meter)
                rates[name].append(meter.rate)
                counts[name] = meter.count
                print(
                    f"  {guarantee} {name} round {round_no}: {meter.rate:,.0f}/s", file=sys.stderr
                )
        for name in APPS:
            rows.append((guarantee, name, counts[name], max(rates[name])))
        paired[guarantee] = [
            r / j for r, j in zip(rates["router"], rates["quix json apply"], strict=True)
        ]

    floor = {g: r for g, n, _, r in rows if n == "quix pass-through"}
    plain = {g: r for g, n, _, r in rows if n == "quix json apply"}
    print()
    header = f"{'guarantee':<14} {'app':<18} {'records':>9} {'events/s':>10}"
    print(f"{header} {'vs pass-through':>16} {'vs json apply':>14}")
    print("-" * 86)
    for guarantee, name, count, rate in rows:
        r1 = rate / floor[guarantee] if floor[guarantee] else 0.0
        r2 = rate / plain[guarantee] if plain[guarantee] else 0.0
        print(f"{guarantee:<14} {name:<18} {count:>9,} {rate:>10,.0f} {r1:>15.2f}x {r2:>13.2f}x")
    print()
    print("router / quix json apply, round by round (each pair ran back to back):")
    for guarantee, ratios in paired.items():
        listed = ", ".join(f"{r:.2f}x" for r in ratios)
        print(f"  {guarantee:<14} {listed}   median {statistics.median(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
