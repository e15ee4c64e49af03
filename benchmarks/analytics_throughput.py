"""Analytics throughput: the full analytics app vs a naive Quix window app, same input.

    python benchmarks/analytics_throughput.py [--events 200000] [--guarantee exactly-once]
                                              [--broker HOST:PORT | --broker-kind embedded|kafka]

One synthetic input (:mod:`pipelines.analytics.samples`: orders, the stock log,
returns, stock questions; 24 stores, 600 SKUs, a little disorder and a few late
events) is produced once into the four typed input topics. Then, each on its own
consumer group over those same topics:

* **naive** - per input topic ``tumbling_window(60 s, grace).sum().final()`` of 1 per
  event, keyed by store, to an output topic: the baseline the issue names;
* **analytics** - the real app with every aggregate on (sales per channel and store,
  15-minute top sellers hopping every minute, returns and return rates, demand with
  stock as of each question, late events, alerts), reading the same topics.

Throughput = input events / seconds from the first to the last input record
processed (start-up and group join excluded; both apps commit every 5 s). Each app
is stopped once it has processed every input record - the analytics app two commit
intervals later, because its second stage reads the digests only once the first
stage's transaction commits. Progress goes to stderr every second. Figures vary
with the machine and the broker; the ratio is what to compare.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Sample events come from the tests' support package (not part of the product).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import argparse
import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from pipelines.analytics.app import AnalyticsTopics, build_app
from pipelines.analytics.catalog import load_category_of, load_traffic_curve
from pipelines.analytics.config import AnalyticsConfig
from pipelines.analytics.ticker import ClockBoard
from pipelines.runtime.quix import quix_app
from shopstream.admin import create_topics
from shopstream.brokers import BrokerProcess, make_broker
from shopstream.kafka import fetch_metadata, make_consumer, make_producer
from shopstream.settings import Settings, load_settings
from shopstream.topics import SALES_BY_STORE, Namespace, TopicSpec
from support.analytics_samples import SampleSpec, generate

COMMIT_INTERVAL_S = 5.0
"""Quix's default; stated so the stop rule below can rely on it."""
DEADLINE_S = 300.0


def run_until_seen(
    app: Any, label: str, seen: Callable[[], int], total: int, linger_s: float
) -> None:
    """Run ``app`` until it has processed ``total`` input records, then ``linger_s`` more."""

    def watch() -> None:
        start = time.monotonic()
        last = -1
        while time.monotonic() - start < DEADLINE_S:
            time.sleep(1.0)
            count = seen()
            if count != last:
                print(f"  {label}: {count:,} / {total:,}", file=sys.stderr)
                last = count
            if count >= total:
                time.sleep(linger_s)
                break
        app.stop()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    app.run()
    watcher.join()


class CountingBoard(ClockBoard):
    """The app's clock board, also timing the first and last input record it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.first = self.last = 0.0
        self.events = 0

    def report(self, partition: int, kind: str | None, event_ms: int | None) -> None:
        if kind is not None:
            now = time.perf_counter()
            if not self.events:
                self.first = now
            self.last = now
            self.events += 1
        super().report(partition, kind, event_ms)


@dataclass
class Result:
    app: str
    guarantee: str
    events: int
    seconds: float
    outputs: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def produce_input(settings: Settings, topics: AnalyticsTopics, events: int, seed: int) -> int:
    # About 2.6 input events per order (its stock event, returns with their release,
    # questions): pick the minutes so the total lands near ``events``.
    per_minute = 100
    minutes = max(1, round(events / 2.6 / per_minute))
    # Record timestamps are event times (the naive app windows on them), so the input
    # lies in the recent past: a broker deletes records older than the topic's
    # retention (7 days for stock questions) at its next retention check, and Apache
    # Kafka did exactly that mid-benchmark when the input was dated 2024.
    start = int(time.time() * 1000) - (minutes + 60) * 60_000
    spec = SampleSpec(
        start_ms=start - start % 60_000,
        minutes=minutes,
        orders_per_minute=per_minute,
        stores=24,
        skus=600,
        late_ratio=0.002,
    )
    t0 = time.perf_counter()
    samples = generate(spec, seed=seed)
    print(
        f"generated {len(samples):,} input events in {time.perf_counter() - t0:.1f}s",
        file=sys.stderr,
    )
    producer = make_producer(settings)
    names = {kind: spec.name for kind, spec in topics.inputs().items()}
    t0 = time.perf_counter()
    for s in samples:
        while True:
            try:
                producer.produce(
                    names[s.kind],
                    key=s.key.encode(),
                    value=orjson.dumps(s.value),
                    timestamp=s.time_ms,
                )
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)
    print(f"produced in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return len(samples)


def count_outputs(settings: Settings, specs: list[TopicSpec]) -> dict[str, int]:
    consumer = make_consumer(settings, "benchmark-reader")
    metadata = fetch_metadata(settings).topics
    consumer.assign(
        [
            TopicPartition(s.name, p, OFFSET_BEGINNING)
            for s in specs
            for p in metadata[s.name].partitions
        ]
    )
    counts: dict[str, int] = defaultdict(int)
    idle = 0
    while idle < 3:
        batch = consumer.consume(10_000, timeout=1.0)
        if not batch:
            idle += 1
            continue
        for msg in batch:
            if msg.error() is None:
                counts[msg.topic()] += 1
    consumer.close()
    return counts


def run_naive(
    settings: Settings,
    topics: AnalyticsTopics,
    config: AnalyticsConfig,
    total: int,
    out: TopicSpec,
    tag: str,
) -> Result:
    app = quix_app(settings, f"naive-{tag}", f"bench-naive-{tag}")
    output = app.topic(out.name, key_serializer="bytes", value_serializer="json")
    marks = {"first": 0.0, "last": 0.0, "n": 0}

    def mark(_value: Any) -> None:
        now = time.perf_counter()
        if not marks["n"]:
            marks["first"] = now
        marks["last"] = now
        marks["n"] += 1

    def quiet(*_: Any) -> bool:  # count nothing, log nothing: like the analytics app
        return False

    for spec in topics.inputs().values():
        sdf = app.dataframe(app.topic(spec.name, value_deserializer="json"))
        sdf = sdf.update(mark).apply(lambda _v: 1)
        sdf = sdf.tumbling_window(60_000, grace_ms=config.grace_ms, on_late=quiet).sum().final()
        sdf.to_topic(output)
    run_until_seen(app, "naive", lambda: int(marks["n"]), total, linger_s=1.0)
    return Result(
        "naive tumbling_window(60s).sum().final()",
        settings.processing_guarantee,
        int(marks["n"]),
        marks["last"] - marks["first"],
        0,
    )


def run_analytics(
    settings: Settings, topics: AnalyticsTopics, config: AnalyticsConfig, total: int, tag: str
) -> Result:
    board = CountingBoard()
    app = build_app(
        settings,
        Namespace(tag),
        topics=topics,
        config=config,
        consumer_group=f"bench-an-{tag}",
        category_of=load_category_of(),
        curve=load_traffic_curve(),
        board=board,
    ).app
    # Two commit intervals after the last input: the last digests are committed by
    # the first, the windows they close by the second.
    run_until_seen(app, "analytics", lambda: board.events, total, 2 * COMMIT_INTERVAL_S + 1)
    counts = count_outputs(settings, list(topics.outputs().values()))
    print("analytics outputs:", dict(counts), file=sys.stderr)
    outputs = sum(counts.values())
    return Result(
        "analytics (all aggregates)",
        settings.processing_guarantee,
        board.events,
        board.last - board.first,
        outputs,
    )


def child(args: argparse.Namespace) -> int:
    """Run one app in this process and print its :class:`Result` as JSON."""
    settings = load_settings(
        broker_address=args.broker,
        data_dir=Path(args.data_dir),
        processing_guarantee=args.guarantee,
    )
    topics = bench_topics(args.tag, run=args.run)
    config = AnalyticsConfig()
    name = f"{args.tag}{args.run}"
    if args.child == "naive":
        out = Namespace(f"bench-{args.tag}-naive-{args.run}").topic(SALES_BY_STORE)
        create_topics(settings, [out])
        result = run_naive(settings, topics, config, args.events, out, name)
    else:
        create_topics(settings, topics.all())
        result = run_analytics(settings, topics, config, args.events, name)
    print(json.dumps(asdict(result)))
    return 0


def bench_topics(tag: str, run: int | None = None) -> AnalyticsTopics:
    """The benchmark's input topics; output topics are per run (their records are counted)."""
    inputs = Namespace(f"bench-{tag}")
    outputs = inputs if run is None else Namespace(f"bench-{tag}-{run}")
    return AnalyticsTopics.of(outputs, inputs=inputs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--guarantee", choices=["exactly-once", "at-least-once", "both"], default="both"
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--broker", help="use a running broker at HOST:PORT")
    where.add_argument("--broker-kind", choices=["embedded", "kafka"], default="embedded")
    # Internal: each app runs in a child process of its own, as in production, so one
    # app's threads, memory and librdkafka instances cannot weigh on the other's figures.
    parser.add_argument("--child", choices=["naive", "analytics"], help=argparse.SUPPRESS)
    parser.add_argument("--tag", help=argparse.SUPPRESS)
    parser.add_argument("--run", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        return child(args)

    broker: BrokerProcess | None = None
    with TemporaryDirectory(prefix="analytics-bench-") as tmp:
        if args.broker:
            address = args.broker
        else:
            broker = make_broker(args.broker_kind, log_path=Path(tmp) / "broker.log").start()
            address = broker.address
        try:
            base = load_settings(broker_address=address, data_dir=Path(tmp) / "data")
            tag = uuid.uuid4().hex[:6]
            topics = bench_topics(tag)
            create_topics(base, topics.all())
            events = produce_input(base, topics, args.events, args.seed)
            guarantees = (
                ["exactly-once", "at-least-once"] if args.guarantee == "both" else [args.guarantee]
            )
            results: list[Result] = []
            for run, guarantee in enumerate(guarantees):
                for app in ("naive", "analytics"):
                    command = [
                        sys.executable,
                        __file__,
                        "--child",
                        app,
                        "--broker",
                        address,
                        "--tag",
                        tag,
                        "--run",
                        str(run),
                        "--events",
                        str(events),
                        "--guarantee",
                        guarantee,
                        "--data-dir",
                        str(Path(tmp) / f"{app}-{run}"),
                    ]
                    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
                    results.append(Result(**json.loads(done.stdout.strip().splitlines()[-1])))
        finally:
            if broker is not None:
                broker.stop()

    print(
        f"\ninput: {events:,} events (orders, stock log, returns, stock questions); "
        f"broker: {args.broker or args.broker_kind}\n"
    )
    header = (
        f"{'app':<42} {'guarantee':<14} {'events':>9} {'seconds':>8} {'events/s':>9} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for i in range(0, len(results), 2):
        naive, analytics = results[i], results[i + 1]
        for r in (naive, analytics):
            ratio = r.rate / naive.rate if naive.rate else 0.0
            print(
                f"{r.app:<42} {r.guarantee:<14} {r.events:>9,} {r.seconds:>8.2f} "
                f"{r.rate:>9,.0f} {ratio:>5.2f}x"
            )
    print(
        "\nanalytics outputs (windows, late events, alerts) per run:",
        ", ".join(f"{r.outputs:,}" for r in results[1::2]),
    )
    missing = [r for r in results if r.events != events]
    if missing:
        print(
            f"WARNING: some runs saw fewer than {events:,} events: "
            + ", ".join(f"{r.app} {r.guarantee}: {r.events:,}" for r in missing)
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
