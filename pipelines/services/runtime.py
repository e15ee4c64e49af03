"""The thin Quix Streams wiring shared by the router and the services.

Business rules never see Kafka. This module turns them into apps:

* :class:`Namespace` - catalog topic and group names, optionally suffixed so tests (and
  side-by-side demos) run isolated copies of the whole topology on one broker.
* :class:`Emit` - one record an app wants produced: topic, key, value bytes, headers.
  Apps return emits from one processing function; :func:`apply_and_produce` sends them
  through the app's own producer, inside the app's Kafka transaction under
  exactly-once: outputs, dead letters, state changelogs and input offsets commit
  together or not at all.
* :func:`build_service_app` - the generic service app: read N topics (concatenated, so
  one state store per store key sees all of them), decode, run the rule on a staged
  state, emit events or a dead letter.

Every error log carries coordinates: ``topic[partition]@offset``, event id, correlation id.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from pipelines.deadletter import Failure, Source, dead_letter_headers
from pipelines.services.state import KeyValueState, StagedState
from shopstream.admin import create_topics
from shopstream.events import DecodeError, Envelope, decode, encode, headers_for
from shopstream.kafka import quix_app
from shopstream.settings import Settings
from shopstream.topics import DEAD_LETTERS, ConsumerGroup, TopicSpec

if TYPE_CHECKING:
    from quixstreams import Application
    from quixstreams.dataframe import StreamingDataFrame
    from quixstreams.models import Topic

log = logging.getLogger("pipelines")

Headers = list[tuple[str, bytes]]

COMMIT_INTERVAL_S = 1.0
"""Checkpoint (Kafka transaction) interval of every app, unless overridden.

Why not Quix's 5 s: under exactly-once an output is visible downstream only once its
transaction commits, so each hop of the choreography adds up to one interval of latency
(order -> reservation -> invoice -> notification is three hops after the router). One
second keeps a flow's end-to-end latency to a few seconds for a small cost per commit.
"""

Rule = Callable[[Envelope, KeyValueState], list[Envelope]]
"""A service's business rule: one input event and its store's state -> events to emit."""


@dataclass(frozen=True, slots=True)
class Namespace:
    """Names of topics, groups and app instances; the empty suffix is the real catalog."""

    suffix: str = ""

    def topic(self, spec: TopicSpec) -> TopicSpec:
        return spec.renamed(f"{spec.name}-{self.suffix}") if self.suffix else spec

    def topics(self, specs: Iterable[TopicSpec]) -> list[TopicSpec]:
        """Each spec renamed, once (the embedded broker fails a CreateTopics that names a
        topic twice)."""
        return list({s.name: self.topic(s) for s in specs}.values())

    def group(self, group: ConsumerGroup) -> str:
        return f"{group.name}-{self.suffix}" if self.suffix else group.name

    def app(self, name: str) -> str:
        """App instance name: state directory and stable ``transactional.id`` derive from it."""
        return f"{name}-{self.suffix}" if self.suffix else name


CATALOG = Namespace()
"""The real topology: catalog names as they are."""


class Emit(NamedTuple):
    """A record to produce. ``value`` is final bytes; ``key`` ``None`` means a null key.

    A named tuple: apps build one or more per input record.
    """

    topic: Topic
    key: bytes | None
    value: bytes | None
    headers: Headers


def apply_and_produce(
    sdf: StreamingDataFrame, processor: Callable[..., Iterable[Emit]], *, stateful: bool
) -> StreamingDataFrame:
    """Run ``processor`` on every record of ``sdf`` and produce the emits it returns.

    ``processor(value, key, timestamp, headers[, state])`` - ``state`` when ``stateful``.
    Each :class:`Emit` goes out with its own topic, key and headers and the input's
    timestamp (a derived event keeps its cause's time), through the app's own producer:
    under exactly-once that is the transactional producer of the current checkpoint, so
    the emits commit with the input offsets and state changelogs, or not at all.

    Why not ``apply(expand=True)`` then ``set_headers`` and ``to_topic``: those are three
    more Quix steps per record, each a Python call chain, for what one ``produce`` does;
    measured on the router, one step is 1.22x faster (benchmarks/router_throughput.py).
    """
    produce = sdf.processing_context.producer.produce

    def step(value: Any, key: Any, timestamp: int, headers: Any, *state: Any) -> None:
        for emit in processor(value, key, timestamp, headers, *state):
            produce(
                topic=emit.topic.name,
                key=emit.key,
                value=emit.value,
                headers=emit.headers,
                timestamp=timestamp,
            )

    return sdf.update(step, metadata=True, stateful=stateful)


def output_topic(app: Application, spec: TopicSpec) -> Topic:
    """A topic an app produces :class:`Emit` records to, declared to Quix (which looks it
    up on the broker as the app is built, like its inputs)."""
    return app.topic(spec.name, key_serializer="bytes", value_serializer="bytes")


def input_topic(app: Application, spec: TopicSpec) -> Topic:
    """A Quix topic read as raw bytes: decoding is the app's job, so failures are data."""
    return app.topic(spec.name, key_deserializer="bytes", value_deserializer="bytes")


def event_emit(topic: Topic, event: Envelope) -> Emit:
    """An event as a record: keyed by its store, canonical JSON, standard headers."""
    return Emit(topic, event.store_id.encode(), encode(event), headers_for(event))


def current_source() -> Source:
    """Coordinates of the record being processed (valid inside a dataframe function)."""
    from quixstreams import message_context

    ctx = message_context()
    return Source(ctx.topic, ctx.partition, ctx.offset)


def header(headers: Sequence[tuple[str, bytes | None]] | None, name: str) -> str:
    """A header as text, ``-`` when absent."""
    for key, value in headers or ():
        if key == name and value is not None:
            return value.decode("utf-8", "replace")
    return "-"


def ids_for_log(
    value: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None
) -> tuple[str, str]:
    """``(event_id, correlation_id)`` of a record that failed validation, as far as known.

    Best effort for the error log: from the JSON if it parses to an object (a schema
    violation usually still carries its ids), else the ``correlation_id`` header, else ``-``.
    """
    event_id, correlation_id = "-", header(headers, "correlation_id")
    try:
        doc = orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict):
        event_id = str(doc.get("event_id") or "-")[:64]
        correlation_id = str(doc.get("correlation_id") or correlation_id)[:64]
    return event_id, correlation_id


class ThrottledLog:
    """Logs at most ``burst`` warnings per ``window`` seconds, then says how many it held back.

    Why: a channel sending garbage at a high rate must not turn the log into the data.
    """

    def __init__(self, logger: logging.Logger, burst: int = 20, window: float = 10.0) -> None:
        self._log = logger
        self._burst = burst
        self._window = window
        self._start = time.monotonic()
        self._logged = 0
        self._held = 0

    def warning(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._start >= self._window:
            if self._held:
                self._log.warning(
                    "... and %d more like these in the last %.0fs", self._held, now - self._start
                )
            self._start, self._logged, self._held = now, 0, 0
        if self._logged < self._burst:
            self._logged += 1
            self._log.warning(msg, *args)
        else:
            self._held += 1


def ensure_topics(settings: Settings, specs: Iterable[TopicSpec]) -> None:
    """Create the catalog topics an app needs, with their catalog config (idempotent).

    Why not leave it to Quix: topics it auto-creates lack explicit ``retention.ms``,
    which the embedded broker then omits and Quix's stateful operations trip over.
    """
    create_topics(settings, list(specs))


def configure_logging() -> None:
    """INFO logs to stderr for a process started by ``shopstream run`` (unless configured)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )


# --- generic service app ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceDefinition:
    """What makes a service: its name, group, inputs, outputs by event type, and its rule.

    ``extra`` may add records derived from an emitted event (stock adds its compacted
    level records); it returns ``(topic spec, key, value)`` triples, each spec one of
    ``extra_outputs``.
    """

    name: str
    group: ConsumerGroup
    inputs: tuple[TopicSpec, ...]
    accepts: frozenset[str]
    outputs: dict[str, TopicSpec]
    rule: Rule
    extra: Callable[[Envelope], Iterable[tuple[TopicSpec, bytes, bytes]]] | None = None
    extra_outputs: tuple[TopicSpec, ...] = ()

    def output_specs(self) -> list[TopicSpec]:
        """Every topic the service produces to, except dead letters."""
        seen: dict[str, TopicSpec] = {}
        for spec in (*self.outputs.values(), *self.extra_outputs):
            seen.setdefault(spec.name, spec)
        return list(seen.values())

    def topics(self) -> list[TopicSpec]:
        """Every topic the service touches: inputs, outputs, dead letters."""
        seen: dict[str, TopicSpec] = {}
        for spec in (*self.inputs, *self.output_specs(), DEAD_LETTERS):
            seen.setdefault(spec.name, spec)
        return list(seen.values())


@dataclass(slots=True)
class ServiceStats:
    """What one process of a service did (restarts start again at zero)."""

    consumed: int = 0
    ignored: int = 0
    emitted: int = 0
    dead_lettered: int = 0
    by_type: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        types = " ".join(f"{k}={v}" for k, v in sorted(self.by_type.items()))
        return (
            f"consumed={self.consumed} ignored={self.ignored} emitted={self.emitted} "
            f"dead-lettered={self.dead_lettered} {types}"
        ).strip()


class ServiceProcessor:
    """The stateful function of a service app: bytes in, :class:`Emit` list out.

    Undecodable input and a rule that raises both end as one dead letter (and a logged
    error with coordinates); the stream goes on and the state is as if the record had
    not been seen (the rule runs on a :class:`StagedState`).
    """

    def __init__(
        self,
        definition: ServiceDefinition,
        app_name: str,
        topics: dict[str, Topic],
        dead_letters: Topic,
    ) -> None:
        self.definition = definition
        self.app_name = app_name
        self._topics = topics
        self._dead_letters = dead_letters
        self._warn = ThrottledLog(log)
        self.stats = ServiceStats()

    def __call__(
        self, value: bytes | None, key: bytes | None, timestamp: int, headers: Any, state: Any
    ) -> list[Emit]:
        self.stats.consumed += 1
        event = decode(value)
        if isinstance(event, DecodeError):
            source = current_source()
            event_id, correlation_id = ids_for_log(value, headers)
            self._warn.warning(
                "%s: undecodable record at %s event_id=%s correlation_id=%s (%s: %s) "
                "- dead-lettered",
                self.app_name, source, event_id, correlation_id, event.kind, event.message,
            )  # fmt: skip
            return [
                self._dead_letter(
                    key, value, headers, Failure(event.kind, event.message, event.field), source
                )
            ]
        if event.event_type not in self.definition.accepts:
            self.stats.ignored += 1
            return []
        staged = StagedState(state)
        try:
            events = self.definition.rule(event, staged)
        except Exception as exc:
            source = current_source()
            log.exception(
                "%s: rule failed on %s at %s event_id=%s correlation_id=%s - dead-lettered",
                self.app_name, event.event_type, source, event.event_id, event.correlation_id,
            )  # fmt: skip
            failure = Failure("processing_error", f"{type(exc).__name__}: {exc}")
            return [self._dead_letter(key, value, headers, failure, source)]
        staged.commit()
        return self._emits(events)

    def _emits(self, events: list[Envelope]) -> list[Emit]:
        emits: list[Emit] = []
        by_type = self.stats.by_type
        for event in events:
            spec = self.definition.outputs[event.event_type]
            emits.append(event_emit(self._topics[spec.name], event))
            by_type[event.event_type] = by_type.get(event.event_type, 0) + 1
            if self.definition.extra is not None:
                for extra_spec, extra_key, extra_value in self.definition.extra(event):
                    emits.append(Emit(self._topics[extra_spec.name], extra_key, extra_value, []))
        self.stats.emitted += len(emits)
        return emits

    def _dead_letter(
        self, key: bytes | None, value: bytes | None, headers: Any, failure: Failure, source: Source
    ) -> Emit:
        self.stats.dead_lettered += 1
        return Emit(
            self._dead_letters,
            key,
            value,
            dead_letter_headers(headers, failure, source, self.app_name),
        )


@dataclass(frozen=True, slots=True)
class BuiltApp:
    """A ready-to-run Quix app and the object whose counters describe what it did."""

    app: Application
    processor: Any


def build_service_app(
    settings: Settings,
    definition: ServiceDefinition,
    namespace: Namespace = CATALOG,
    **app_options: Any,
) -> BuiltApp:
    """Wire ``definition`` into a Quix app (exactly-once unless settings say otherwise).

    ``app_options`` go to :func:`shopstream.kafka.quix_app` (e.g. ``commit_interval``,
    or ``consumer_group`` to replace the namespace's group name).

    Topics must exist (see :func:`ensure_topics`). The inputs are concatenated into one
    dataframe - Quix then keeps one state store for all of them and consumes them in
    timestamp order per partition - which works because every topic is keyed by store
    and has the same partition count (co-partitioned).
    """
    app_name = namespace.app(definition.name)
    group = app_options.pop("consumer_group", namespace.group(definition.group))
    app_options.setdefault("commit_interval", COMMIT_INTERVAL_S)
    app = quix_app(settings, app_name, group, **app_options)
    # Rules name catalog specs; the processor finds their (namespaced) topics by catalog name.
    by_catalog_name = {
        spec.name: output_topic(app, namespace.topic(spec)) for spec in definition.output_specs()
    }
    dead_letters = output_topic(app, namespace.topic(DEAD_LETTERS))
    processor = ServiceProcessor(definition, app_name, by_catalog_name, dead_letters)
    frames = [app.dataframe(input_topic(app, namespace.topic(spec))) for spec in definition.inputs]
    sdf = functools.reduce(lambda a, b: a.concat(b), frames)
    apply_and_produce(sdf, processor, stateful=True)
    return BuiltApp(app, processor)


def run_service(
    settings: Settings, definition: ServiceDefinition, namespace: Namespace = CATALOG
) -> None:
    """Create the topics, build the app, run it until SIGINT/SIGTERM, log what it did."""
    configure_logging()
    ensure_topics(settings, namespace.topics(definition.topics()))
    built = build_service_app(settings, definition, namespace)
    log.info(
        "%s: reading %s as group %s (%s)",
        namespace.app(definition.name),
        ", ".join(namespace.topic(s).name for s in definition.inputs),
        namespace.group(definition.group),
        settings.processing_guarantee,
    )
    built.app.run()
    log.info("%s: stopped; %s", namespace.app(definition.name), built.processor.stats.summary())
