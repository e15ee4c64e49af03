"""The generic service app: N input topics, one business rule, events or a dead letter.

Business rules never see Kafka. :func:`build_service_app` turns a
:class:`ServiceDefinition` into a Quix app on the pipeline runtime
(:mod:`pipelines.runtime`): read the inputs (concatenated, so one state store per store
key sees all of them), decode, run the rule on a staged state, emit events or a dead
letter - all through the app's :class:`~pipelines.runtime.outputs.Outputs`, inside its
Kafka transaction under exactly-once.

Every error log carries coordinates: ``topic[partition]@offset``, event id, correlation id.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pipelines.deadletter import Failure, Source, ids_for_log
from pipelines.runtime.outputs import Emit, Outputs, apply_and_produce, dead_letter
from pipelines.runtime.quix import current_source, input_topic, output_topic, quix_app
from pipelines.runtime.running import BuiltApp, run_app
from pipelines.services.state import KeyValueState, StagedState
from shopstream.admin import create_topics
from shopstream.apps import AppSpec
from shopstream.events import DecodeError, Envelope, decode, encode, headers_for
from shopstream.kafka import record_size_limits
from shopstream.logs import ThrottledLog
from shopstream.settings import Settings
from shopstream.topics import CATALOG, DEAD_LETTERS, Namespace, TopicSpec

log = logging.getLogger("pipelines")

Rule = Callable[[Envelope, KeyValueState], list[Envelope]]
"""A service's business rule: one input event and its store's state -> events to emit."""


def event_emit(topic: str, event: Envelope) -> Emit:
    """An event as a record: keyed by its store, canonical JSON, standard headers."""
    return Emit(topic, event.store_id.encode(), encode(event), headers_for(event))


# --- generic service app ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceDefinition:
    """What makes a service: its name, group, inputs, outputs by event type, and its rule.

    ``extra`` may add records derived from an emitted event (stock adds its compacted
    level records); it returns ``(topic spec, key, value)`` triples, each spec one of
    ``extra_outputs``.
    """

    name: str
    group: str
    description: str
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
        topics: dict[str, str],
        dead_letters: str,
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
        return dead_letter(self._dead_letters, key, value, headers, failure, source, self.app_name)


def service_outputs(
    settings: Settings, definition: ServiceDefinition, namespace: Namespace
) -> Outputs:
    """The service's :class:`Outputs`, with the broker's size limit of each output topic."""
    names = [namespace.topic(s).name for s in (*definition.output_specs(), DEAD_LETTERS)]
    return Outputs(
        namespace.app(definition.name),
        namespace.topic(DEAD_LETTERS).name,
        record_size_limits(settings, names),
    )


def build_service_app(
    settings: Settings,
    definition: ServiceDefinition,
    namespace: Namespace = CATALOG,
    *,
    outputs: Outputs | None = None,
    **app_options: Any,
) -> BuiltApp:
    """Wire ``definition`` into a Quix app (exactly-once unless settings say otherwise).

    ``app_options`` go to :func:`pipelines.runtime.quix.quix_app` (e.g.
    ``commit_interval``, or ``consumer_group`` to replace the namespace's group name).

    Topics must exist (``create_topics``; :func:`run_service` does it). The inputs are
    concatenated into one dataframe - Quix then keeps one state store for all of them
    and consumes them in timestamp order per partition - which works because every topic
    is keyed by store and has the same partition count (co-partitioned).
    """
    app_name = namespace.app(definition.name)
    group = app_options.pop("consumer_group", namespace.group(definition.group))
    app = quix_app(settings, app_name, group, **app_options)
    for spec in (*definition.output_specs(), DEAD_LETTERS):
        output_topic(app, namespace.topic(spec))
    outputs = outputs or service_outputs(settings, definition, namespace)
    # Rules name catalog specs; the processor finds their (namespaced) topics by catalog name.
    by_catalog_name = {spec.name: namespace.topic(spec).name for spec in definition.output_specs()}
    dead_letters = namespace.topic(DEAD_LETTERS).name
    processor = ServiceProcessor(definition, app_name, by_catalog_name, dead_letters)
    frames = [app.dataframe(input_topic(app, namespace.topic(spec))) for spec in definition.inputs]
    sdf = functools.reduce(lambda a, b: a.concat(b), frames)
    apply_and_produce(sdf, processor, outputs, stateful=True)
    return BuiltApp(app, processor)


def run_service(
    settings: Settings, definition: ServiceDefinition, namespace: Namespace = CATALOG
) -> None:
    """Create the topics, then build and run the app until SIGINT/SIGTERM (see
    :func:`pipelines.runtime.running.run_app`); log what it did."""
    create_topics(settings, namespace.topics(definition.topics()))
    outputs = service_outputs(settings, definition, namespace)
    inputs = ", ".join(namespace.topic(s).name for s in definition.inputs)
    run_app(
        settings,
        namespace.app(definition.name),
        lambda: build_service_app(settings, definition, namespace, outputs=outputs),
        outputs,
        describe=f"reading {inputs} as group {namespace.group(definition.group)} "
        f"({settings.processing_guarantee})",
        on_stop=lambda built: built.processor.stats.summary(),
    )


def service_app(definition: ServiceDefinition, order: int) -> AppSpec:
    """The registry entry of a service: what ``shopstream run NAME`` and ``up`` need."""
    return AppSpec(
        name=definition.name,
        kind="processor",
        description=definition.description,
        run=lambda settings, namespace: run_service(settings, definition, namespace),
        build=lambda settings, namespace: build_service_app(settings, definition, namespace),
        group=definition.group,
        reads=tuple(s.name for s in definition.inputs),
        writes=tuple(s.name for s in (*definition.output_specs(), DEAD_LETTERS)),
        order=order,
    )
