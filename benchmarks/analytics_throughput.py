"""Analytics throughput: the full analytics app vs a naive Quix window app, same input.

    python benchmarks/analytics_throughput.py [--events 200000] [--guarantee exactly-once]
                                              [--broker HOST:PORT | --broker-kind embedded|kafka]

One input - the simulated shop's traffic through the real router decision and services'
rules (:func:`benchmarks.inputs.shop_run`: orders, the stock log, returns, stock
questions; the opening stock load left out) - is produced once into the four typed input
topics. Then, each in a child process of its own and on its own consumer group over those
same topics:

* **naive** - per input topic ``tumbling_window(60 s, grace).sum().final()`` of 1 per
  event, keyed by store, to an output topic: the baseline the issue names;
* **analytics** - the real app with every aggregate on (sales per channel and store,
  15-minute top sellers hopping every minute, returns and return rates, demand with
  stock as of each question, late events, alerts), reading the same topics.

Throughput = input events / seconds from the first to the last input record
processed (start-up and group join excluded; both apps commit every
:data:`pipelines.runtime.quix.COMMIT_INTERVAL_S`). Each app is stopped once it has
processed every input record - the analytics app two commit intervals later, because its
second stage reads the digests only once the first stage's transaction commits. Figures
vary with the machine and the broker; the ratio is what to compare. ``shopstream bench``
runs it as its analytics stage (:func:`stage`).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the benchmarks package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from tempfile import TemporaryDirectory
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from benchmarks.common import Bench, Figure, StageResult, run_child
from benchmarks.inputs import ShopRun, produce_raw, shared_shop_run
from pipelines.analytics.app import AnalyticsTopics, build_app
from pipelines.analytics.catalog import load_category_of, load_traffic_curve
from pipelines.analytics.config import AnalyticsConfig
from pipelines.analytics.ticker import ClockBoard
from pipelines.runtime.quix import COMMIT_INTERVAL_S, quix_app
from shopstream.admin import create_topics
from shopstream.brokers import BrokerProcess, make_broker
from shopstream.kafka import fetch_metadata, make_consumer
from shopstream.settings import Settings, load_settings
from shopstream.topics import SALES_BY_STORE, Namespace, TopicSpec

DEADLINE_S = 300.0


def run_until_seen(
    app: Any, label: str, seen: Callable[[], int], total: int, linger_s: float
) -> None:
    """Run ``app`` until it has processed ``total`` input records, then ``linger_s`` more."""

    def watch() -> None:
        start = time.monotonic()
        last = -1
        while time.monotonic() - start < DEADLINE_S:
            time.sleep(0.25)
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


def produce_input(settings: Settings, topics: AnalyticsTopics, run: ShopRun) -> int:
    """The shop run's records of the four analytics inputs (its traffic: the opening stock
    load is left out), into ``topics``; their count."""
    catalog = AnalyticsTopics()
    names = {getattr(catalog, role).name: getattr(topics, role).name
             for role in ("orders", "returns", "questions", "stock")}  # fmt: skip
    records = [r for r in run.traffic() if r[0] in names]
    produce_raw(settings, records, rename=names, keep_partition=False)
    return len(records)


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
    while idle < 4:
        batch = consumer.consume(10_000, timeout=0.5)
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


def run_pair(
    address: str, work: Path, tag: str, events: int, guarantees: list[str], env: Settings,
    log: Path, on_progress: Callable[[str], None],
) -> list[Result]:  # fmt: skip
    """Each app in a child process of its own, per guarantee: naive first, then analytics."""
    results: list[Result] = []
    for run, guarantee in enumerate(guarantees):
        for app in ("naive", "analytics"):
            on_progress(f"analytics: {app} ({guarantee}) over {events:,} input events")
            args = ["--child", app, "--broker", address, "--tag", tag, "--run", str(run),
                    "--events", str(events), "--guarantee", guarantee,
                    "--data-dir", str(work / f"{app}-{run}")]  # fmt: skip
            doc = run_child("benchmarks.analytics_throughput", args, env, log)
            results.append(Result(**doc))
    return results


def stage(bench: Bench) -> StageResult:
    """``shopstream bench``: the analytics app against a naive tumbling window."""
    result = StageResult("analytics", "Analytics vs a naive Quix tumbling window")
    sizes = bench.sizes
    bench.reporter.step("analytics: simulating the shop (router + services rules)")
    shop = shared_shop_run(bench.cache, sizes.sink_events)
    settings = bench.settings("analytics")
    tag = uuid.uuid4().hex[:6]
    topics = bench_topics(tag)
    create_topics(settings, topics.all())
    events = produce_input(settings, topics, shop)
    results = run_pair(
        bench.broker_address, bench.work / "analytics", tag, events,
        list(sizes.analytics_guarantees), settings, bench.log_path("analytics"),
        bench.reporter.step,
    )  # fmt: skip
    for i in range(0, len(results), 2):
        naive, analytics = results[i], results[i + 1]
        g = naive.guarantee
        result.add(Figure(f"analytics.{g}.naive", f"naive tumbling_window(60s).sum() ({g})",
                          naive.rate, "events/s"))  # fmt: skip
        result.add(Figure(
            f"analytics.{g}.analytics", f"analytics, every aggregate ({g})", analytics.rate,
            "events/s", f"naive tumbling window ({g})", naive.rate,
            note=f"{analytics.events:,} of {events:,} input events seen, "
            f"{analytics.outputs:,} outputs",
        ))  # fmt: skip
    result.details = {"input_events": events, "results": [asdict(r) for r in results]}
    missing = [r for r in results if r.events != events]
    if missing:
        result.notes.append("some runs saw fewer input events than produced: " + ", ".join(
            f"{r.app} {r.guarantee}: {r.events:,}" for r in missing))  # fmt: skip
    result.notes.append(
        "input: the simulated shop's traffic through the real router and services' rules "
        "(orders, the stock log, returns, stock questions; the opening stock load left out)"
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--events",
        type=int,
        default=200_000,
        help="about this many input events (channel events / 2)",
    )
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
            events = produce_input(base, topics, shared_shop_run({}, args.events // 2))
            guarantees = (
                ["exactly-once", "at-least-once"] if args.guarantee == "both" else [args.guarantee]
            )
            results = run_pair(address, Path(tmp), tag, events, guarantees, base,
                               Path(tmp) / "children.log",
                               lambda s: print(s, file=sys.stderr))  # fmt: skip
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
