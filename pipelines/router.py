"""The event router: validates channel events, drops duplicates, routes by type.

Reads the four ingress topics (mobile, pos, web, warehouse) as raw bytes. Every record
ends in exactly one of three ways, counted in :class:`RouterStats`:

* **routed** - a valid channel event, first time seen: its original bytes go to the typed
  topic for its type (:data:`shopstream.topics.ROUTES`), keyed by its ``store_id``, with
  the standard headers;
* **dead-lettered** - bad bytes, bad JSON, a schema violation, an unknown or unroutable
  type: the record goes whole to ``deadletters`` with ``error.*`` headers
  (:mod:`pipelines.deadletter`);
* **duplicate** - an ``event_id`` already routed within :data:`DEDUPE_TTL` (event time)
  in the same ingress topic and key: dropped and counted.

So ``in = routed + dead-lettered + duplicates``; the router never stops on bad input.

Guarantees: under exactly-once (the default) the typed record, the dead letter, the
dedupe-state changelog and the input offset commit in one Kafka transaction, so a crash
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
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from pipelines.deadletter import Failure, dead_letter_headers
from pipelines.services.runtime import (
    CATALOG,
    COMMIT_INTERVAL_S,
    BuiltApp,
    Emit,
    Namespace,
    ThrottledLog,
    configure_logging,
    current_source,
    ensure_topics,
    ids_for_log,
    input_topic,
    output_topic,
    produce_emits,
)
from pipelines.services.state import KeyValueState
from shopstream.events import CHANNEL_EVENT_TYPES, DecodeError, Envelope, decode, headers_for
from shopstream.kafka import quix_app
from shopstream.settings import Settings
from shopstream.topics import DEAD_LETTERS, INGRESS_BY_CHANNEL, ROUTER_GROUP, ROUTES, TopicSpec

if TYPE_CHECKING:
    from quixstreams.models import Topic

log = logging.getLogger("pipelines.router")

APP_NAME = "router"
DEDUPE_TTL = timedelta(hours=24)
"""How long (event time, i.e. record timestamps) an event id is remembered for dedupe."""
STATS_EVERY_S = 30.0

Outcome = Literal["routed", "dead_lettered", "duplicate"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one ingress record; ``event`` is set unless it failed to decode."""

    outcome: Outcome
    route: TopicSpec | None = None
    event: Envelope | None = None
    failure: Failure | None = None


def decide(raw: bytes | None, state: KeyValueState | None, ttl: timedelta = DEDUPE_TTL) -> Decision:
    """Validate, then dedupe, then route one ingress record. Pure apart from ``state``.

    Only a routed event is remembered in ``state`` (by ``event_id``, for ``ttl``); a dead
    letter leaves no trace, so a corrected resend goes through. ``state=None`` skips
    dedupe (every valid event is routed).
    """
    result = decode(raw)
    if isinstance(result, DecodeError):
        return Decision("dead_lettered", failure=Failure(result.kind, result.message, result.field))
    event_type = result.event_type
    route = ROUTES.get(event_type)
    if route is None or event_type not in CHANNEL_EVENT_TYPES:
        failure = Failure(
            "unroutable", f"{event_type} is not a channel event; no route", "event_type"
        )
        return Decision("dead_lettered", event=result, failure=failure)
    # The 16 raw bytes of the UUID as key: Quix stores bytes keys as they are (no JSON).
    if state is not None:
        event_key = result.event_id.bytes
        if state.exists(event_key):
            return Decision("duplicate", route=route, event=result)
        state.set(event_key, 1, ttl=ttl)
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

    Called with the record's Quix state when dedupe is on, without it when off.
    """

    def __init__(
        self,
        routes: dict[str, Topic],
        dead_letters: Topic,
        app_name: str,
        dedupe_ttl: timedelta = DEDUPE_TTL,
    ) -> None:
        self._routes = routes
        self._dead_letters = dead_letters
        self._ttl = dedupe_ttl
        self.app_name = app_name
        self.stats = RouterStats()
        self._warn = ThrottledLog(log)
        self._next_report = time.monotonic() + STATS_EVERY_S

    def __call__(
        self,
        value: bytes | None,
        key: bytes | None,
        timestamp: int,
        headers: Any,
        state: Any = None,
    ) -> tuple[Emit, ...]:
        stats = self.stats
        stats.consumed += 1
        decision = decide(value, state, self._ttl)
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
            log.info("%s: %s", self.app_name, stats.summary())
        return (emit,)

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
        return Emit(
            self._dead_letters,
            key,
            value,
            dead_letter_headers(headers, failure, source, self.app_name),
        )


def router_topics() -> list[TopicSpec]:
    """Every topic the router touches, from the catalog."""
    return [*INGRESS_BY_CHANNEL.values(), *dict.fromkeys(ROUTES.values()), DEAD_LETTERS]


def build_router(
    settings: Settings,
    namespace: Namespace = CATALOG,
    *,
    dedupe_ttl: timedelta | None = DEDUPE_TTL,
    **app_options: Any,
) -> BuiltApp:
    """The router as a Quix app (topics must exist; see :func:`run`).

    ``dedupe_ttl=None`` builds a stateless router that routes every valid event (for
    channels that cannot duplicate, and to measure what dedupe costs). ``app_options``
    go to :func:`shopstream.kafka.quix_app` (e.g. ``commit_interval``, or
    ``consumer_group`` to replace the namespace's group name).

    One dataframe per ingress topic rather than one concatenated: the router needs no
    cross-topic ordering, and unaligned consumption is the faster path in Quix.
    """
    app_name = namespace.app(APP_NAME)
    group = app_options.pop("consumer_group", namespace.group(ROUTER_GROUP))
    app_options.setdefault("commit_interval", COMMIT_INTERVAL_S)
    app = quix_app(settings, app_name, group, **app_options)
    routes = {
        spec.name: output_topic(app, namespace.topic(spec))
        for spec in dict.fromkeys(ROUTES.values())
    }
    processor = RouterProcessor(
        routes,
        output_topic(app, namespace.topic(DEAD_LETTERS)),
        app_name,
        dedupe_ttl or DEDUPE_TTL,
    )
    for spec in INGRESS_BY_CHANNEL.values():
        sdf = app.dataframe(input_topic(app, namespace.topic(spec)))
        sdf = sdf.apply(processor, stateful=dedupe_ttl is not None, metadata=True, expand=True)
        produce_emits(sdf)
    return BuiltApp(app, processor)


def run(settings: Settings, namespace: Namespace = CATALOG) -> None:
    """``shopstream run router``: route until SIGINT/SIGTERM, then log the counts."""
    configure_logging()
    ensure_topics(settings, namespace.topics(router_topics()))
    built = build_router(settings, namespace)
    log.info(
        "%s: routing %s as group %s (%s)",
        namespace.app(APP_NAME),
        ", ".join(namespace.topic(s).name for s in INGRESS_BY_CHANNEL.values()),
        namespace.group(ROUTER_GROUP),
        settings.processing_guarantee,
    )
    built.app.run()
    log.info("%s: stopped; %s", namespace.app(APP_NAME), built.processor.stats.summary())
