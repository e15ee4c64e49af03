"""The analytics Quix Streams app: wiring only (``shopstream run analytics``).

::

    orders ─┐
    returns ─┤                         ┌─ late ──────────────▶ analytics.late-events
    stock-questions ─┼─▶ stage 1 ─────┤
    stock.events ─┤   (per partition:  └─ digests ─▶ repartition (one key) ─▶ stage 2
    analytics.ticks ─┘  PartitionAggregator)                   (GlobalCombiner)
                                                                   │
       analytics.sales-by-channel / sales-by-store / top-skus / returns / demand, alerts ◀┘

Stage 1 runs per input partition (the inputs are co-partitioned by ``store_id``)
and sends each closed pane's partial sums as a digest; stage 2 sees every digest
and emits a window once every partition has closed it.

Consumption order: merging several topics with ``concat`` makes Quix Streams 3.28
consume them time-aligned (a buffer that releases the record with the lowest
timestamp across the topics of a partition). The rules here do not need it -
lateness is judged per input topic, ticks handle idle inputs - and it cost this
app most of its throughput (about 6k instead of 35k events/s on Apache Kafka,
``benchmarks/analytics_throughput.py``) and can stall (quix-streams#1116), so the
app switches it off (:func:`_consume_unaligned`; a test fails if the private flag
it flips moves). The rules live in
:mod:`~pipelines.analytics.local` and :mod:`~pipelines.analytics.combine`; their
state is persisted per checkpoint by :mod:`~pipelines.checkpointed`,
in the app's exactly-once transaction unless settings choose at-least-once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import orjson
from quixstreams.context import message_context

from pipelines.analytics.catalog import (
    CategoryOf,
    TrafficCurve,
    flat_curve,
    load_category_of,
    load_traffic_curve,
)
from pipelines.analytics.combine import GlobalCombiner
from pipelines.analytics.config import AnalyticsConfig
from pipelines.analytics.local import DIGEST_KEY, PartitionAggregator
from pipelines.analytics.records import INPUT_KINDS, Coordinates, InputKind, Output, OutputRole
from pipelines.analytics.ticker import ClockBoard, Ticker
from pipelines.checkpointed import CheckpointHook, PartitionEngines
from pipelines.runtime.outputs import Emit, Outputs, apply_and_produce
from pipelines.runtime.quix import input_topic, output_topic, quix_app
from pipelines.runtime.running import BuiltApp, run_app
from shopstream import topics as catalog
from shopstream.admin import create_topics
from shopstream.apps import AppSpec
from shopstream.kafka import fetch_metadata, record_size_limits
from shopstream.settings import Settings
from shopstream.topics import CATALOG, Namespace, TopicSpec

if TYPE_CHECKING:
    from quixstreams.dataframe import StreamingDataFrame

log = logging.getLogger("pipelines.analytics")

APP_NAME = "analytics"
GROUP = "shopstream-analytics"
STATS_EVERY_S = 30.0


@dataclass(frozen=True, slots=True)
class AnalyticsTopics:
    """The topics the app reads and writes, by role (see :meth:`of`)."""

    orders: TopicSpec = catalog.ORDERS
    returns: TopicSpec = catalog.RETURNS
    questions: TopicSpec = catalog.QUESTIONS
    stock: TopicSpec = catalog.STOCK_EVENTS
    ticks: TopicSpec = catalog.TICKS
    sales_by_channel: TopicSpec = catalog.SALES_BY_CHANNEL
    sales_by_store: TopicSpec = catalog.SALES_BY_STORE
    top_skus: TopicSpec = catalog.TOP_SKUS
    returns_stats: TopicSpec = catalog.RETURNS_STATS
    demand: TopicSpec = catalog.DEMAND
    late: TopicSpec = catalog.LATE_EVENTS
    alerts: TopicSpec = catalog.ALERTS
    dead_letters: TopicSpec = catalog.DEAD_LETTERS

    @classmethod
    def of(cls, namespace: Namespace, inputs: Namespace | None = None) -> AnalyticsTopics:
        """The catalog's topics in ``namespace``; the four inputs in ``inputs`` if given
        (benchmarks read one input several times into fresh outputs)."""
        base = cls()
        named = {f.name: namespace.topic(getattr(base, f.name)) for f in fields(cls)}
        if inputs is not None:
            for role in ("orders", "returns", "questions", "stock"):
                named[role] = inputs.topic(getattr(base, role))
        return cls(**named)

    def inputs(self) -> dict[InputKind, TopicSpec]:
        return {
            "orders": self.orders,
            "returns": self.returns,
            "questions": self.questions,
            "stock": self.stock,
        }

    def outputs(self) -> dict[OutputRole, TopicSpec]:
        return {
            "late": self.late,
            "sales_by_channel": self.sales_by_channel,
            "sales_by_store": self.sales_by_store,
            "top_skus": self.top_skus,
            "returns": self.returns_stats,
            "demand": self.demand,
            "alert": self.alerts,
        }

    def all(self) -> list[TopicSpec]:
        return [getattr(self, f.name) for f in fields(self)]


def _parse(value: bytes | None) -> Any:
    try:
        return orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return value  # the engine keeps it as "unreadable"


def _tick_of(value: Any) -> tuple[int | None, list[InputKind] | None]:
    """(watermark, inputs) of a tick record; anything malformed reads as a probe."""
    if not isinstance(value, dict) or not isinstance(value.get("watermark"), int):
        return None, None
    inputs = value.get("inputs")
    if isinstance(inputs, list):
        return value["watermark"], [k for k in INPUT_KINDS if k in inputs]
    return value["watermark"], None


def _consume_unaligned(sdf: StreamingDataFrame) -> None:
    """Undo the time-aligned consumption ``concat`` switched on (see the module docstring).

    quixstreams has no public option for it; ``tests/unit/test_quix_internals.py``
    fails if the private flag moves, and here a warning says so at run time.
    """
    registry = getattr(sdf, "_registry", None)
    if registry is not None and isinstance(
        getattr(registry, "_requires_time_alignment", None), bool
    ):
        registry._requires_time_alignment = False
    else:  # pragma: no cover - depends on the installed quixstreams
        log.warning("analytics: cannot switch off Quix time-aligned consumption; expect it slower")


def build_app(
    settings: Settings,
    namespace: Namespace = CATALOG,
    *,
    topics: AnalyticsTopics | None = None,
    config: AnalyticsConfig | None = None,
    outputs: Outputs | None = None,
    category_of: CategoryOf | None = None,
    curve: TrafficCurve = flat_curve,
    board: ClockBoard | None = None,
    **quix_options: Any,
) -> BuiltApp:
    """The analytics app over existing topics (see the module docstring).

    ``topics`` default to the catalog's in ``namespace``. ``board`` receives each
    partition's clock for a :class:`Ticker`; without one the app still honours ticks
    that others produce (tests produce their own). ``quix_options`` go to
    :func:`pipelines.runtime.quix.quix_app` (``consumer_group`` replaces the group).
    """
    topics = topics or AnalyticsTopics.of(namespace)
    config = config or AnalyticsConfig()
    board = board or ClockBoard()
    metadata = fetch_metadata(settings)
    missing = [t.name for t in topics.all() if t.name not in metadata.topics]
    if missing:
        raise RuntimeError(f"analytics topics missing on the broker: {missing}")
    sources = len(metadata.topics[topics.orders.name].partitions)
    outputs = outputs or analytics_outputs(settings, topics, namespace)

    group = quix_options.pop("consumer_group", namespace.group(GROUP))
    app = quix_app(settings, namespace.app(APP_NAME), group, **quix_options)
    kind_of: dict[str, InputKind] = {spec.name: kind for kind, spec in topics.inputs().items()}
    ticks_name = topics.ticks.name
    frames = [
        app.dataframe(input_topic(app, spec)) for spec in (*topics.inputs().values(), topics.ticks)
    ]
    stage1 = frames[0]
    for frame in frames[1:]:
        stage1 = stage1.concat(frame)
    _consume_unaligned(stage1)
    # The ticker (a thread beside the app) produces the ticks; declared as an output too.
    for spec in (*topics.outputs().values(), topics.dead_letters, topics.ticks):
        output_topic(app, spec)
    topic_of = {role: spec.name for role, spec in topics.outputs().items()}
    outputs.attach(stage1)
    send, counters = outputs.send, outputs.counters

    local = PartitionEngines(
        "analytics-local",
        stage1,
        lambda p, chunks: PartitionAggregator.restore(p, config, chunks),
    )
    next_stats = [time.monotonic() + STATS_EVERY_S]

    def run_stage1(value: bytes | None, key: Any, timestamp: int, headers: Any) -> list[Any]:
        counters.consumed += 1
        ctx = message_context()
        partition = ctx.partition
        engine = local.engine(partition)
        parsed = _parse(value)
        if ctx.topic == ticks_name:
            out = engine.on_tick(*_tick_of(parsed))
            board.report(partition, None, engine.event_time_ms)
        else:
            kind = kind_of[ctx.topic]
            where = Coordinates(ctx.topic, partition, ctx.offset)
            out = engine.on_event(kind, parsed, where)
            board.report(partition, kind, engine.event_time_ms)
            if out and out[0].role == "late" and out[0].value["reason"] == "unreadable":
                log.warning("analytics: unreadable input at %s kept as late event", where)
        if time.monotonic() >= next_stats[0]:
            next_stats[0] = time.monotonic() + STATS_EVERY_S
            log.info("analytics partition %d: %s", partition, dict(engine.stats))
        digests = []
        for result in out:
            if result.role == "digest":
                digests.append(result.value)
            else:
                send(_record(result, topic_of), key, value, headers, timestamp)
        return digests

    digests = stage1.apply(run_stage1, expand=True, metadata=True)
    stage2 = digests.group_by(lambda _: DIGEST_KEY, name="analytics-digests")
    combined = PartitionEngines(
        "analytics-combiner",
        stage2,
        lambda _p, chunks: GlobalCombiner.restore(config, sources, chunks, category_of, curve),
    )

    def run_stage2(value: dict[str, Any], key: Any, timestamp: int, headers: Any) -> Iterator[Emit]:
        for result in combined.engine(message_context().partition).on_digest(value):
            yield _record(result, topic_of)

    apply_and_produce(stage2, run_stage2, outputs, stateful=False, count_input=False)
    CheckpointHook(local, combined).attach(stage1)
    return BuiltApp(app, outputs.counters)


def _record(result: Output, topic_of: dict[OutputRole, str]) -> Emit:
    """An engine result as a record of its role's topic, stamped with its event time."""
    return Emit(
        topic_of[result.role],
        result.key.encode(),
        orjson.dumps(result.value),
        [],
        result.timestamp_ms,
    )


def analytics_outputs(settings: Settings, topics: AnalyticsTopics, namespace: Namespace) -> Outputs:
    names = [spec.name for spec in (*topics.outputs().values(), topics.dead_letters)]
    return Outputs(
        namespace.app(APP_NAME), topics.dead_letters.name, record_size_limits(settings, names)
    )


def run(settings: Settings, namespace: Namespace = CATALOG) -> None:
    """``shopstream run analytics``: create topics, start the ticker, run until stopped."""
    topics = AnalyticsTopics.of(namespace)
    config = AnalyticsConfig()
    create_topics(settings, namespace.topics(topics.all()))
    board = ClockBoard()
    outputs = analytics_outputs(settings, topics, namespace)
    category_of, curve = load_category_of(), load_traffic_curve()
    partitions = len(fetch_metadata(settings).topics[topics.ticks.name].partitions)
    ticker = Ticker(settings, topics.ticks.name, partitions, INPUT_KINDS, board, config)
    ticker.start()
    try:
        run_app(
            settings,
            namespace.app(APP_NAME),
            lambda: build_app(
                settings,
                namespace,
                topics=topics,
                config=config,
                outputs=outputs,
                category_of=category_of,
                curve=curve,
                board=board,
            ),
            outputs,
            describe=f"running (group {namespace.group(GROUP)}, {partitions} tick partitions)",
        )
    finally:
        ticker.stop()


_CATALOG_TOPICS = AnalyticsTopics()

APP = AppSpec(
    name=APP_NAME,
    kind="processor",
    description="Windowed sales, returns and demand; alerts on spikes and silence",
    run=run,
    build=lambda settings, namespace: build_app(settings, namespace),
    group=GROUP,
    reads=tuple(s.name for s in (*_CATALOG_TOPICS.inputs().values(), _CATALOG_TOPICS.ticks)),
    writes=tuple(
        s.name
        for s in (
            *_CATALOG_TOPICS.outputs().values(), _CATALOG_TOPICS.ticks, _CATALOG_TOPICS.dead_letters
        )
    ),
    order=20,
)
