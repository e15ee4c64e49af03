"""The event router: validates channel events, drops duplicates, routes by type.

Reads the four ingress topics (mobile, pos, web, warehouse) as raw bytes. Every record
ends in exactly one of three ways, counted in :class:`RouterStats`:

* **routed** - a valid channel event, first time seen: its original bytes go to the typed
  topic for its type (:data:`shopstream.topics.ROUTES`), keyed by its ``store_id``, with
  the standard headers;
* **dead-lettered** - bad bytes, bad JSON, a schema violation, an unknown or unroutable
  type: the record goes whole to ``deadletters`` with ``error.*`` headers
  (:mod:`pipelines.deadletter`);
* **duplicate** - an ``event_id`` already routed from the same ingress partition within
  :data:`DEDUPE_TTL` of event time (:class:`pipelines.dedupe.DedupeWindow`): dropped and
  counted.

So ``in = routed + dead-lettered + duplicates``; the router never stops on bad input.

Guarantees: under exactly-once (the default) the typed record, the dead letter, the
dedupe window's changes and the input offset commit in one Kafka transaction, so a crash
never loses or doubles a routed event - on a broker that hides aborted transactions
(Apache Kafka, Redpanda; the embedded broker does not, see docs/testing.md). Under
at-least-once a crash may re-route the
records since the last commit (the dedupe state rolls back with them), which the services
absorb: each is idempotent on the causing event.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from quixstreams.context import message_context

from pipelines.checkpointed import CheckpointHook, PartitionEngines
from pipelines.deadletter import Failure, ids_for_log
from pipelines.dedupe import DedupeWindow
from pipelines.runtime.outputs import Emit, Outputs, apply_and_produce, dead_letter
from pipelines.runtime.quix import current_source, input_topic, output_topic, quix_app
from pipelines.runtime.running import BuiltApp, run_app
from shopstream.admin import create_topics
from shopstream.apps import AppSpec
from shopstream.events import CHANNEL_EVENT_TYPES, DecodeError, Envelope, decode, headers_for
from shopstream.kafka import record_size_limits
from shopstream.logs import ThrottledLog
from shopstream.settings import Settings
from shopstream.topics import (
    CATALOG,
    DEAD_LETTERS,
    INGRESS_BY_CHANNEL,
    ROUTES,
    Namespace,
    TopicSpec,
)

if TYPE_CHECKING:
    from quixstreams.dataframe import StreamingDataFrame

log = logging.getLogger("pipelines.router")

APP_NAME = "router"
GROUP = "shopstream-router"
DEDUPE_TTL = timedelta(hours=1)
"""How long (event time, i.e. record timestamps) an event id is remembered for dedupe.

Long enough for channel retries and resends (the simulator's duplicates follow their
original within seconds); a later resend is absorbed by the services, each idempotent on
its causing event for 7 days. Memory is about 100 bytes per id within the window: at
``shopstream up``'s 100 events/s, 1 h is 360,000 ids, about 36 MB."""
DEDUPE_MAX_IDS = 500_000
"""Per ingress partition: a burst beyond this shortens the window rather than the memory."""
STATS_EVERY_S = 30.0

Outcome = Literal["routed", "dead_lettered", "duplicate"]
CHANNEL_ROUTES: dict[str, TopicSpec] = {
    event_type: spec for event_type, spec in ROUTES.items() if event_type in CHANNEL_EVENT_TYPES
}
"""The routes the router takes: a type without one here is dead-lettered ``unroutable``."""


class Decision(NamedTuple):
    """What to do with one ingress record; ``event`` is set unless it failed to decode.

    A named tuple rather than a frozen dataclass: one is built per record, and a tuple
    builds in a third of the time.
    """

    outcome: Outcome
    route: TopicSpec | None = None
    event: Envelope | None = None
    failure: Failure | None = None


def decide(raw: bytes | None, window: DedupeWindow | None, timestamp_ms: int = 0) -> Decision:
    """Validate, then dedupe, then route one ingress record. Pure apart from ``window``.

    Only a routed event is remembered in ``window`` (by ``event_id``, at the record's
    ``timestamp_ms``); a dead letter leaves no trace, so a corrected resend goes through.
    ``window=None`` skips dedupe (every valid event is routed).
    """
    result = decode(raw)
    # ``type() is``: isinstance against a pydantic class goes through ABCMeta, several
    # times slower, and this runs per record. DecodeError has no subclasses.
    if type(result) is DecodeError:
        return Decision("dead_lettered", failure=Failure(result.kind, result.message, result.field))
    route = CHANNEL_ROUTES.get(result.event_type)
    if route is None:
        failure = Failure(
            "unroutable", f"{result.event_type} is not a channel event; no route", "event_type"
        )
        return Decision("dead_lettered", event=result, failure=failure)
    if window is not None and not window.first_seen(result.event_id.int, timestamp_ms):
        return Decision("duplicate", route=route, event=result)
    return Decision("routed", route=route, event=result)


@dataclass(slots=True)
class RouterStats:
    """What this router process decided; ``consumed == routed + dead_lettered + duplicates``.

    Per process: a restart starts again at zero, and under exactly-once an aborted
    checkpoint's records are counted again when re-processed.
    """

    consumed: int = 0
    routed: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    by_route: Counter[str] = field(default_factory=Counter)
    by_error: Counter[str] = field(default_factory=Counter)

    @property
    def balanced(self) -> bool:
        return self.consumed == self.routed + self.dead_lettered + self.duplicates

    def summary(self) -> str:
        return (
            f"in={self.consumed} routed={self.routed} dead-lettered={self.dead_lettered} "
            f"duplicates={self.duplicates} errors={dict(self.by_error)}"
        )


class RouterProcessor:
    """The router's dataframe function: one ingress record -> 0 or 1 :class:`Emit`.

    Called with the record partition's dedupe window when dedupe is on, without when off.
    """

    def __init__(self, routes: dict[str, str], dead_letters: str, app_name: str) -> None:
        self._routes = routes
        self._dead_letters = dead_letters
        self.app_name = app_name
        self.stats = RouterStats()
        self.windows: list[PartitionEngines[DedupeWindow]] = []
        """The dedupe windows, by ingress topic, for the stats line (set by build_router)."""
        self._warn = ThrottledLog(log)
        self._next_report = time.monotonic() + STATS_EVERY_S

    def __call__(
        self,
        value: bytes | None,
        key: bytes | None,
        timestamp: int,
        headers: Any,
        window: DedupeWindow | None = None,
    ) -> tuple[Emit, ...]:
        stats = self.stats
        stats.consumed += 1
        decision = decide(value, window, timestamp)
        if decision.outcome == "routed":
            event = decision.event
            assert event is not None and decision.route is not None
            stats.routed += 1
            stats.by_route[decision.route.name] += 1
            emit = Emit(
                self._routes[decision.route.name],
                event.store_id.encode(),
                value,  # the validated original bytes, verbatim
                headers_for(event),
            )
        elif decision.outcome == "duplicate":
            stats.duplicates += 1
            return ()
        else:
            emit = self._dead_letter(decision, key, value, headers)
        if stats.consumed % 1024 == 0 and time.monotonic() >= self._next_report:
            self._next_report = time.monotonic() + STATS_EVERY_S
            log.info("%s: %s; %s", self.app_name, stats.summary(), self.dedupe_summary())
        return (emit,)

    def dedupe_summary(self) -> str:
        """How many ids the dedupe windows hold now, and any forgotten before their TTL."""
        windows = [w for engines in self.windows for w in engines.engines().values()]
        if not windows:
            return "dedupe off"
        held = sum(len(w) for w in windows)
        early = sum(w.evicted_early for w in windows)
        return f"dedupe windows: {held} ids in {len(windows)} partitions, {early} forgotten early"

    def _dead_letter(
        self, decision: Decision, key: bytes | None, value: bytes | None, headers: Any
    ) -> Emit:
        failure = decision.failure
        assert failure is not None
        source = current_source()
        self.stats.dead_lettered += 1
        self.stats.by_error[failure.kind] += 1
        event = decision.event
        event_id, correlation_id = (
            (str(event.event_id), event.correlation_id) if event else ids_for_log(value, headers)
        )
        self._warn.warning(
            "%s: dead letter %s at %s event_id=%s correlation_id=%s: %s",
            self.app_name,
            failure.kind,
            source,
            event_id,
            correlation_id,
            failure.message,
        )
        return dead_letter(self._dead_letters, key, value, headers, failure, source, self.app_name)


def router_outputs() -> list[TopicSpec]:
    """Every topic the router writes: the typed topics and dead letters."""
    return [*dict.fromkeys(ROUTES.values()), DEAD_LETTERS]


def router_topics() -> list[TopicSpec]:
    """Every topic the router touches, from the catalog."""
    return [*INGRESS_BY_CHANNEL.values(), *router_outputs()]


def build_router(
    settings: Settings,
    namespace: Namespace = CATALOG,
    *,
    outputs: Outputs | None = None,
    dedupe_ttl: timedelta | None = DEDUPE_TTL,
    dedupe_max_ids: int = DEDUPE_MAX_IDS,
    **app_options: Any,
) -> BuiltApp:
    """The router as a Quix app (topics must exist; see :func:`run`).

    ``outputs`` is the app's :class:`Outputs` (kept across rebuilds by :func:`run`);
    without one, a fresh one with the broker's size limits is made.

    ``dedupe_ttl=None`` builds a router without dedupe that routes every valid event (for
    channels that cannot duplicate, and to measure what dedupe costs). ``app_options``
    go to :func:`shopstream.kafka.quix_app` (e.g. ``commit_interval``, or
    ``consumer_group`` to replace the namespace's group name).

    One dataframe per ingress topic rather than one concatenated: the router needs no
    cross-topic ordering, and unaligned consumption is the faster path in Quix. Each
    has its dedupe windows, one per partition, kept in its state store.
    """
    app_name = namespace.app(APP_NAME)
    group = app_options.pop("consumer_group", namespace.group(GROUP))
    app = quix_app(settings, app_name, group, **app_options)
    for spec in router_outputs():
        output_topic(app, namespace.topic(spec))
    outputs = outputs or router_output_guard(settings, namespace)
    routes = {spec.name: namespace.topic(spec).name for spec in dict.fromkeys(ROUTES.values())}
    processor = RouterProcessor(routes, namespace.topic(DEAD_LETTERS).name, app_name)
    windows: list[PartitionEngines[DedupeWindow]] = []
    for spec in INGRESS_BY_CHANNEL.values():
        sdf = app.dataframe(input_topic(app, namespace.topic(spec)))
        if dedupe_ttl is None:
            apply_and_produce(sdf, processor, outputs, stateful=False)
            continue
        engines = _dedupe_windows(sdf, namespace.topic(spec).name, dedupe_ttl, dedupe_max_ids)
        windows.append(engines)
        apply_and_produce(sdf, _with_window(processor, engines), outputs, stateful=False)
    if windows:
        CheckpointHook(*windows).attach(sdf)
        processor.windows = windows
    return BuiltApp(app, processor)


def _dedupe_windows(
    sdf: StreamingDataFrame, topic: str, ttl: timedelta, max_ids: int
) -> PartitionEngines[DedupeWindow]:
    ttl_ms = int(ttl.total_seconds() * 1000)
    return PartitionEngines(
        f"dedupe {topic}",
        sdf,
        lambda partition, chunks: DedupeWindow.restore(
            chunks, ttl_ms, max_ids, name=f"router {topic}[{partition}]"
        ),
    )


def _with_window(
    processor: RouterProcessor, engines: PartitionEngines[DedupeWindow]
) -> Callable[[bytes | None, bytes | None, int, Any], tuple[Emit, ...]]:
    """The processor, given the dedupe window of the record's partition."""

    def route(
        value: bytes | None, key: bytes | None, timestamp: int, headers: Any
    ) -> tuple[Emit, ...]:
        window = engines.engine(message_context().partition)
        return processor(value, key, timestamp, headers, window)

    return route


def router_output_guard(settings: Settings, namespace: Namespace) -> Outputs:
    """The router's :class:`Outputs`, with the broker's size limit of each output topic."""
    names = [namespace.topic(spec).name for spec in router_outputs()]
    return Outputs(
        namespace.app(APP_NAME),
        namespace.topic(DEAD_LETTERS).name,
        record_size_limits(settings, names),
    )


def run(settings: Settings, namespace: Namespace = CATALOG) -> None:
    """``shopstream run router``: route until SIGINT/SIGTERM, then log the counts."""
    create_topics(settings, namespace.topics(router_topics()))
    outputs = router_output_guard(settings, namespace)
    inputs = ", ".join(namespace.topic(s).name for s in INGRESS_BY_CHANNEL.values())
    run_app(
        settings,
        namespace.app(APP_NAME),
        lambda: build_router(settings, namespace, outputs=outputs),
        outputs,
        describe=f"routing {inputs} as group {namespace.group(GROUP)} "
        f"({settings.processing_guarantee})",
        on_stop=lambda built: f"{built.processor.stats.summary()}; "
        f"{built.processor.dedupe_summary()}",
    )


APP = AppSpec(
    name=APP_NAME,
    kind="processor",
    description="Validates, de-duplicates and routes channel events; dead-letters the rest",
    run=run,
    build=lambda settings, namespace: build_router(settings, namespace),
    group=GROUP,
    reads=tuple(spec.name for spec in INGRESS_BY_CHANNEL.values()),
    writes=tuple(spec.name for spec in router_outputs()),
    # After the services: its first routed events then find their readers joined.
    order=13,
)
