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
app switches it off (:func:`_consume_unaligned`). The rules live in
:mod:`~pipelines.analytics.local` and :mod:`~pipelines.analytics.combine`; their
state is persisted per checkpoint by :mod:`~pipelines.checkpointed`,
in the app's exactly-once transaction unless settings choose at-least-once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import orjson
from quixstreams.context import message_context
from quixstreams.models.serializers import Serializer

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
from pipelines.analytics.records import INPUT_KINDS, Coordinates, Emit, InputKind, OutputRole
from pipelines.analytics.ticker import ClockBoard, Ticker
from pipelines.checkpointed import CheckpointHook, PartitionEngines
from shopstream import topics as catalog
from shopstream.admin import create_topics
from shopstream.kafka import fetch_metadata, quix_app
from shopstream.settings import Settings
from shopstream.topics import TopicSpec

if TYPE_CHECKING:
    from quixstreams import Application
    from quixstreams.dataframe import StreamingDataFrame
    from quixstreams.models import Topic

log = logging.getLogger("pipelines.analytics")

APP_NAME = "analytics"
STATS_EVERY_S = 30.0


@dataclass(frozen=True, slots=True)
class AnalyticsTopics:
    """The topics the app reads and writes (the catalog's, or renamed copies in tests)."""

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

    def renamed(self, rename: Callable[[TopicSpec], TopicSpec]) -> AnalyticsTopics:
        """A copy with every topic passed through ``rename`` (tests isolate topics)."""
        return replace(self, **{f.name: rename(getattr(self, f.name)) for f in fields(self)})


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


class EmitSerializer(Serializer):
    """JSON of an :class:`Emit`'s value: outputs travel as ``Emit`` up to the producer."""

    def __call__(self, value: Emit, ctx: Any) -> bytes:
        return orjson.dumps(value.value)


def _consume_unaligned(sdf: StreamingDataFrame) -> None:
    """Undo the time-aligned consumption ``concat`` switched on (see the module docstring).

    quixstreams 3.28 has no public option for it; the flag is checked here so that a
    library change makes itself known in the log instead of silently slowing the app.
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
    *,
    topics: AnalyticsTopics | None = None,
    config: AnalyticsConfig | None = None,
    consumer_group: str = catalog.ANALYTICS_GROUP.name,
    app_name: str = APP_NAME,
    category_of: CategoryOf | None = None,
    curve: TrafficCurve = flat_curve,
    board: ClockBoard | None = None,
    **quix_options: Any,
) -> Application:
    """The analytics ``Application`` over existing topics (see the module docstring).

    ``board`` receives each partition's clock for a :class:`Ticker`; without one the
    app still honours ticks that others produce (tests produce their own).
    """
    topics = topics or AnalyticsTopics()
    config = config or AnalyticsConfig()
    board = board or ClockBoard()
    metadata = fetch_metadata(settings)
    missing = [t.name for t in topics.all() if t.name not in metadata.topics]
    if missing:
        raise RuntimeError(f"analytics topics missing on the broker: {missing}")
    sources = len(metadata.topics[topics.orders.name].partitions)

    app = quix_app(settings, app_name, consumer_group, **quix_options)
    kind_of: dict[str, InputKind] = {spec.name: kind for kind, spec in topics.inputs().items()}
    ticks_name = topics.ticks.name
    frames = [
        app.dataframe(app.topic(spec.name, value_deserializer="bytes", key_deserializer="bytes"))
        for spec in (*topics.inputs().values(), topics.ticks)
    ]
    stage1 = frames[0]
    for frame in frames[1:]:
        stage1 = stage1.concat(frame)
    _consume_unaligned(stage1)

    local = PartitionEngines(
        "analytics-local",
        stage1,
        lambda p, chunks: PartitionAggregator.restore(p, config, chunks),
    )
    next_stats = [time.monotonic() + STATS_EVERY_S]

    def run_stage1(value: bytes | None, key: Any, timestamp: int, headers: Any) -> list[Emit]:
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
        return out

    by_role = {role: _output_topic(app, spec) for role, spec in topics.outputs().items()}
    emitted1 = stage1.apply(run_stage1, expand=True, metadata=True)
    _produce(emitted1.filter(lambda e: e.role == "late"), lambda _e: by_role["late"])
    digests = emitted1.filter(lambda e: e.role == "digest").apply(lambda e: e.value)
    stage2 = digests.group_by(lambda _: DIGEST_KEY, name="analytics-digests")

    combined = PartitionEngines(
        "analytics-combiner",
        stage2,
        lambda _p, chunks: GlobalCombiner.restore(config, sources, chunks, category_of, curve),
    )

    def run_stage2(value: dict[str, Any], key: Any, timestamp: int, headers: Any) -> list[Emit]:
        return combined.engine(message_context().partition).on_digest(value)

    emitted2 = stage2.apply(run_stage2, expand=True, metadata=True)
    # One producing step for every stage-2 output (branching would copy each record).
    _produce(emitted2, lambda e: by_role[e.role])

    CheckpointHook(local, combined).attach(stage1)
    return app


def _output_topic(app: Application, spec: TopicSpec) -> Topic:
    return app.topic(spec.name, key_serializer="str", value_serializer=EmitSerializer())


def _produce(emitted: StreamingDataFrame, topic_of: Callable[[Emit], Topic]) -> None:
    """Produce each :class:`Emit` to its topic, keyed, stamped with its event time."""
    emitted = emitted.set_timestamp(lambda e, _key, _ts, _headers: e.timestamp_ms)
    emitted.to_topic(lambda e, _key, _ts, _headers: topic_of(e), key=lambda e: e.key)


def run(settings: Settings) -> None:
    """``shopstream run analytics``: create topics, start the ticker, run until stopped."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    topics = AnalyticsTopics()
    config = AnalyticsConfig()
    create_topics(settings, topics.all())
    board = ClockBoard()
    app = build_app(
        settings,
        topics=topics,
        config=config,
        category_of=load_category_of(),
        curve=load_traffic_curve(),
        board=board,
    )
    partitions = len(fetch_metadata(settings).topics[topics.ticks.name].partitions)
    ticker = Ticker(settings, topics.ticks.name, partitions, INPUT_KINDS, board, config)
    ticker.start()
    log.info(
        "analytics: running (group %s, %d tick partitions)",
        catalog.ANALYTICS_GROUP.name,
        partitions,
    )
    try:
        app.run()
    finally:
        ticker.stop()
