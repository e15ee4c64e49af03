"""The analytics app over a real broker (every lane): exact windows, restart, idle streams.

The app runs in the test's main thread (Quix installs signal handlers there); a helper
thread watches the broker - the app's committed offsets, the output topics - and stops
the app once what the test waits for has happened, or at a deadline, after which the
assertions report what was missing. No assertion depends on timing: ticks are sent
only after the app has committed every input record, so which events are late is
decided by the input order alone, as the polars reference assumes.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import polars as pl
import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition
from polars.testing import assert_frame_equal

from pipelines.analytics.app import AnalyticsTopics, build_app
from pipelines.analytics.catalog import category_lookup
from pipelines.analytics.config import AnalyticsConfig
from pipelines.analytics.records import format_time_ms
from shopstream.admin import create_topics
from shopstream.kafka import fetch_metadata, make_consumer, make_producer
from shopstream.settings import Settings
from shopstream.topics import Namespace
from support.analytics_oracle import BatchAnalytics, InputRecord
from support.analytics_samples import Sample, SampleSpec, generate

DEADLINE_S = 90.0
MIN = 60_000
HOUR = 60 * MIN


def recent_start_ms() -> int:
    """A sample start six hours ago, on the hour.

    Why not the samples' fixed 2024 date: record timestamps are event time, and Apache
    Kafka deletes a segment whose records are older than the topics' 7-day retention at
    its next retention check (every 5 min), so outputs could vanish mid-test. Six hours
    back keeps the ticks (two hours past the data) out of the future, which Kafka 4
    refuses beyond an hour.
    """
    return (int(time.time() * 1000) - 6 * HOUR) // HOUR * HOUR


CATEGORY_OF = category_lookup({f"SKU-{10001 + i:05d}": f"cat-{i % 4}" for i in range(40)})
QUIX_OPTIONS = {"commit_interval": 0.5}


@pytest.fixture
def topics(settings: Settings, namespace: Namespace) -> AnalyticsTopics:
    topics = AnalyticsTopics.of(namespace)
    create_topics(settings, topics.all())
    return topics


class Outputs:
    """Reads every output topic from the start (read_committed), by role."""

    def __init__(self, settings: Settings, topics: AnalyticsTopics) -> None:
        self.roles = {spec.name: role for role, spec in topics.outputs().items()}
        self.records: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._consumer = make_consumer(settings, "unused-group-id")
        partitions = fetch_metadata(settings).topics
        self._consumer.assign(
            [
                TopicPartition(name, p, OFFSET_BEGINNING)
                for name in self.roles
                for p in partitions[name].partitions
            ]
        )
        self._lock = threading.Lock()

    def poll(self) -> None:
        with self._lock:
            while True:
                batch = self._consumer.consume(1000, timeout=0.2)
                if not batch:
                    return
                for msg in batch:
                    if msg.error() is None:
                        self.records[self.roles[msg.topic()]].append(orjson.loads(msg.value()))

    def count(self, role: str) -> int:
        return len(self.records[role])

    def close(self) -> None:
        self._consumer.close()


def produce(
    settings: Settings, items: Iterable[tuple[str, str, dict[str, Any], int | None]]
) -> list[tuple[str, int, int, dict[str, Any]]]:
    """Produce (topic, key, value, partition) in order; return (topic, partition, offset, value)."""
    delivered: list[tuple[str, int, int, dict[str, Any]]] = []
    producer = make_producer(settings)
    for topic, key, value, partition in items:

        def report(err: Any, msg: Any, value: dict[str, Any] = value) -> None:
            assert err is None, err
            delivered.append((msg.topic(), msg.partition(), msg.offset(), value))

        extra = {} if partition is None else {"partition": partition}
        producer.produce(
            topic, key=key.encode(), value=orjson.dumps(value), on_delivery=report, **extra
        )
        producer.poll(0)
    assert producer.flush(30) == 0
    return delivered


def produce_ticks(settings: Settings, topics: AnalyticsTopics, watermark: int) -> None:
    partitions = len(fetch_metadata(settings).topics[topics.ticks.name].partitions)
    produce(
        settings,
        [(topics.ticks.name, str(p), {"watermark": watermark}, p) for p in range(partitions)],
    )


def committed_all(settings: Settings, group: str, ends: dict[tuple[str, int], int]) -> bool:
    """Has ``group`` committed past every (topic, partition) -> last offset in ``ends``?"""
    probe = make_consumer(settings, group)
    try:
        offsets = probe.committed([TopicPartition(t, p) for t, p in ends], timeout=10)
    finally:
        probe.close()
    return all(tp.offset > ends[tp.topic, tp.partition] for tp in offsets)


def last_offsets(
    delivered: list[tuple[str, int, int, dict[str, Any]]],
) -> dict[tuple[str, int], int]:
    ends: dict[tuple[str, int], int] = {}
    for topic, partition, offset, _ in delivered:
        ends[topic, partition] = max(offset, ends.get((topic, partition), -1))
    return ends


def run_app_until(app: Any, steps: list[Callable[[], bool]]) -> list[bool]:
    """Run ``app`` in this thread until each step (polled in order) has returned True."""
    done: list[bool] = []
    errors: list[Exception] = []

    def watch() -> None:
        deadline = time.monotonic() + DEADLINE_S
        try:
            for step in steps:
                while time.monotonic() < deadline:
                    try:
                        if step():
                            done.append(True)
                            break
                    except KafkaException as exc:  # e.g. a probe timing out: ask again
                        errors.append(exc)
                    time.sleep(0.3)
                else:
                    break
        finally:
            app.stop()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    app.run()
    watcher.join()
    if len(done) < len(steps):  # shown with the failing assertion that follows
        print(f"only {len(done)} of {len(steps)} steps happened; probe errors: {errors}")
    return done


def frame(records: list[dict[str, Any]], columns: list[str]) -> pl.DataFrame:
    return pl.DataFrame(records).select(columns) if records else pl.DataFrame()


def test_every_window_equals_polars_across_a_restart_from_the_changelog(
    settings: Settings, topics: AnalyticsTopics, unique: Callable[[str], str]
) -> None:
    config = AnalyticsConfig(grace_ms=MIN, top_n=5)
    samples = generate(SampleSpec(start_ms=recent_start_ms(), minutes=30, late_ratio=0.03), seed=42)
    by_kind = topics.inputs()
    group = unique("analytics")

    def send(part: list[Sample]) -> list[tuple[str, int, int, dict[str, Any]]]:
        return produce(settings, [(by_kind[s.kind].name, s.key, s.value, None) for s in part])

    kind_of = {spec.name: kind for kind, spec in by_kind.items()}
    half = len(samples) // 2
    delivered = send(samples[:half])
    first = build_app(
        settings,
        topics=topics,
        config=config,
        consumer_group=group,
        category_of=CATEGORY_OF,
        **QUIX_OPTIONS,
    ).app
    ends = last_offsets(delivered)
    assert run_app_until(first, [lambda: committed_all(settings, group, ends)]) == [True]

    # A new instance on an empty state directory: it must rebuild from the changelog.
    shutil.rmtree(settings.data_dir / "state")
    delivered += send(samples[half:])
    records = [InputRecord(kind_of[t], p, o, o, v) for t, p, o, v in delivered]
    end = max(s.time_ms for s in samples) + 2 * 60 * MIN
    records += [InputRecord("tick", p, 0, 1 << 40, watermark=end) for p in range(3)]
    ref = BatchAnalytics(records, config, CATEGORY_OF)
    expected = {
        "late": ref.late_records(),
        "sales_by_channel": ref.sales_by("channel"),
        "sales_by_store": ref.sales_by("store_id"),
        "top_skus": ref.top_skus(),
        "returns": ref.returns_stats(),
        "demand": ref.demand(),
    }
    outputs = Outputs(settings, topics)
    second = build_app(
        settings,
        topics=topics,
        config=config,
        consumer_group=group,
        category_of=CATEGORY_OF,
        **QUIX_OPTIONS,
    ).app
    ends = last_offsets(delivered)

    def ticked() -> bool:
        if not committed_all(settings, group, ends):
            return False
        produce_ticks(settings, topics, end)
        return True

    def complete() -> bool:
        outputs.poll()
        return all(outputs.count(role) >= want.height for role, want in expected.items())

    run_app_until(second, [ticked, complete])
    outputs.poll()
    outputs.close()

    late = pl.DataFrame(
        [
            {"kind": kind_of[r["topic"]], "partition": r["partition"], "offset": r["offset"]}
            for r in outputs.records["late"]
        ],
        schema={"kind": pl.String, "partition": pl.Int64, "offset": pl.Int64},
    ).sort(pl.all())
    assert all(r["reason"] == "beyond_grace" for r in outputs.records["late"])
    assert_frame_equal(late, expected.pop("late"))
    assert late.height >= 5
    order = {
        "sales_by_channel": ["window_start", "channel"],
        "sales_by_store": ["window_start", "store_id"],
        "top_skus": ["window_end", "rank"],
        "returns": ["window_start", "dimension", "key"],
        "demand": ["window_start", "sku"],
    }
    for role, want in expected.items():
        got = frame(outputs.records[role], want.columns).sort(order[role])
        assert got.height == want.height, f"{role}: {got.height} windows, expected {want.height}"
        assert_frame_equal(got, want, check_dtypes=False, rel_tol=1e-12, abs_tol=0.0)


def test_idle_streams_close_their_windows_and_raise_silence_alerts_on_ticks(
    settings: Settings, topics: AnalyticsTopics, unique: Callable[[str], str]
) -> None:
    t0 = recent_start_ms()  # the app's default traffic curve is flat: any hour will do
    config = AnalyticsConfig(
        grace_ms=MIN,
        silence_ms=10 * MIN,
        silence_baseline_ms=30 * MIN,
        silence_min_expected=5.0,
    )
    group = unique("analytics")

    def order(t: int, channel: str, partition: int) -> tuple[str, str, dict[str, Any], int]:
        store = f"ST-{partition + 1:03d}"
        value = {
            "event_id": f"00000000-0000-4000-8000-{t % 10**12:012d}",
            "event_type": "OrderPlaced",
            "schema_version": 1,
            "occurred_at": format_time_ms(t),
            "channel": channel,
            "store_id": store,
            "correlation_id": f"O-{t}",
            "causation_id": "",
            "payload": {
                "order_id": f"O-{t}",
                "customer_id": "C-1",
                "currency": "EUR",
                "payment_method": "card",
                "lines": [{"sku": "SKU-10001", "qty": 1, "unit_price": 5.0}],
            },
        }
        return topics.orders.name, store, value, partition

    # Every partition sees web and mobile orders for 45 minutes; pos stops after 30.
    items = [
        order(t0 + minute * MIN + 1_000 * i + 100 * partition, channel, partition)
        for minute in range(45)
        for partition in range(3)
        for i, channel in enumerate(("web", "mobile", "pos"))
        if channel != "pos" or minute < 30
    ]
    delivered = produce(settings, items)
    ends = last_offsets(delivered)
    outputs = Outputs(settings, topics)
    app = build_app(
        settings, topics=topics, config=config, consumer_group=group, **QUIX_OPTIONS
    ).app

    def alerted(channel: str) -> bool:
        return any(a["payload"]["subject"] == channel for a in outputs.records["alert"])

    def windows(minute: int) -> set[str]:
        start = t0 + minute * MIN
        return {
            r["channel"] for r in outputs.records["sales_by_channel"] if r["window_start"] == start
        }

    before: dict[str, Any] = {}

    def data_driven_outputs_seen() -> bool:
        if not committed_all(settings, group, ends):
            return False
        outputs.poll()
        if not (alerted("pos") and windows(42)):
            return False
        before["last_windows"] = windows(43) | windows(44)
        before["alerts"] = [a["payload"]["subject"] for a in outputs.records["alert"]]
        produce_ticks(settings, topics, t0 + 90 * MIN)  # the heartbeat of an idle shop
        return True

    def closed_by_ticks() -> bool:
        outputs.poll()
        return bool(windows(43) and windows(44)) and alerted("web") and alerted("mobile")

    run_app_until(app, [data_driven_outputs_seen, closed_by_ticks])
    outputs.poll()
    outputs.close()

    # Events alone closed every window that ended a grace period before the last event
    # (minute 42), and pos fell silent while web and mobile kept event time moving.
    assert before, "the app never emitted the windows and alert the orders alone close"
    assert before["last_windows"] == set()
    assert before["alerts"] == ["pos"]
    # The ticks closed the last two minutes and noticed that everything went quiet.
    assert windows(43) == windows(44) == {"web", "mobile"}
    last = {
        r["channel"]: r["orders"]
        for r in outputs.records["sales_by_channel"]
        if r["window_start"] == t0 + 44 * MIN
    }
    assert last == {"web": 3, "mobile": 3}
    silent = {
        a["payload"]["subject"]: a["occurred_at"]
        for a in outputs.records["alert"]
        if a["payload"]["kind"] == "channel_silent"
    }
    assert silent == {
        "pos": format_time_ms(t0 + 40 * MIN),
        "web": format_time_ms(t0 + 55 * MIN),
        "mobile": format_time_ms(t0 + 55 * MIN),
    }
    assert len(outputs.records["alert"]) == 3
