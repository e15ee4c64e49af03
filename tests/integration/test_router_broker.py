"""The router against a real broker (every lane): every ingress record is accounted for.

One run over a mix of valid events on all four ingress topics, every malformed kind the
simulator's fault flags make (``producers.faults``), and resends of valid events. Then:
``in = routed + dead-lettered + duplicates`` by the router's counters, each valid event on
its typed topic exactly once and byte for byte, each malformed record in dead letters
whole (key, value, headers, timestamp) with the right error kind and coordinates that
point back at it. Runs under both processing guarantees.
"""

from __future__ import annotations

import functools
import random
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import KafkaError

from pipelines import deadletter
from pipelines.router import build_router, router_topics
from producers.faults import EXPECTED_ERROR, applicable_kinds, malform
from shopstream.admin import create_topics
from shopstream.events import APP_HEADER, EMITTED_AT_HEADER, Envelope, encode, headers_for, utc_ms
from shopstream.kafka import make_producer
from shopstream.settings import Settings, load_settings
from shopstream.topics import DEAD_LETTERS, INGRESS_BY_CHANNEL, ROUTES, Namespace
from support import service_samples as s
from support.processes import TopicReader

Sent = tuple[str, bytes, bytes, list[tuple[str, bytes]], int]  # topic, key, value, headers, ts


def channel_events() -> list[tuple[str, Envelope]]:
    """A few valid events per ingress topic, over three stores, timed from now."""
    now = utc_ms(datetime.now(UTC))
    out: list[tuple[str, Envelope]] = []
    for i in range(12):
        where = {"store_id": f"store-{i % 3:02d}", "t": i, "origin": now}
        ch = ("mobile", "pos", "web")[i % 3]
        out += [
            (ch, s.order(f"o{i}", [("SKU-00001", 1, "2.00")], channel=ch, **where)),  # type: ignore[arg-type]
            (ch, s.returned(f"ret{i}", f"o{i}", "SKU-00001", 1, "2.00", channel=ch, **where)),  # type: ignore[arg-type]
            (ch, s.question(f"q{i}", "SKU-00002", channel=ch, **where)),  # type: ignore[arg-type]
            ("warehouse", s.restock(f"r{i}", "SKU-00003", 5, **where)),  # type: ignore[arg-type]
        ]
    return out


@pytest.mark.parametrize("guarantee", ["exactly-once", "at-least-once"])
def test_every_ingress_record_is_routed_dead_lettered_or_a_counted_duplicate(
    settings: Settings, guarantee: str
) -> None:
    settings = load_settings(base=settings, processing_guarantee=guarantee)
    ns = Namespace(uuid.uuid4().hex[:8])
    create_topics(settings, ns.topics(router_topics()))
    rng = random.Random(5)

    valid = channel_events()
    malformed: list[tuple[str, Envelope, str, bytes]] = [
        (channel, event, kind, malform(event, kind, rng))
        for channel, event in valid[:8]
        for kind in applicable_kinds(event.event_type)
    ]
    resent = rng.sample(valid, 6)
    plan: list[tuple[str, Envelope, bytes]] = [(c, e, encode(e)) for c, e in valid]
    plan += [(c, e, raw) for c, e, _, raw in malformed]
    plan += [(c, e, encode(e)) for c, e in resent]
    # A resend is byte-identical to its original, so which copy comes first does not matter.
    rng.shuffle(plan)
    ordered = plan
    coordinates: dict[tuple[str, int, int], Sent] = {}
    producer = make_producer(settings)

    def delivered(headers: list[tuple[str, bytes]], err: KafkaError | None, msg: Any) -> None:
        assert err is None, err
        # Delivery reports carry no headers: the ones sent come in through the partial.
        coordinates[(msg.topic(), msg.partition(), msg.offset())] = (
            msg.topic(),
            msg.key(),
            msg.value(),
            headers,
            msg.timestamp()[1],
        )

    for channel, event, raw in ordered:
        topic = ns.topic(INGRESS_BY_CHANNEL[channel]).name
        ts = int(event.occurred_at.timestamp() * 1000)
        headers = headers_for(event)
        producer.produce(
            topic,
            raw,
            event.store_id.encode(),
            headers=headers,
            timestamp=ts,
            on_delivery=functools.partial(delivered, headers),
        )
    producer.flush(30)
    assert len(coordinates) == len(ordered)

    built = build_router(settings, ns)
    built.app.run(timeout=3)
    stats = built.processor.stats

    assert stats.consumed == len(ordered)
    assert stats.balanced, stats.summary()
    assert (stats.routed, stats.dead_lettered, stats.duplicates) == (
        len(valid),
        len(malformed),
        len(resent),
    ), stats.summary()
    assert dict(stats.by_error) == dict(Counter(EXPECTED_ERROR[k] for _, _, k, _ in malformed))  # type: ignore[index]

    routes = {ns.topic(spec).name: spec for spec in ROUTES.values()}
    dlq = ns.topic(DEAD_LETTERS).name
    reader = TopicReader(settings, [*routes, dlq])
    try:
        expected = len(valid) + len(malformed)
        reader.wait_for(lambda r: sum(map(len, r.records.values())) >= expected, 30, settle=1.0)
    finally:
        reader.close()

    # Each valid event exactly once, on its route, verbatim, keyed by its store.
    routed = [r for topic in routes for r in reader.records.get(topic, [])]
    assert sorted(r.value for r in routed) == sorted(encode(e) for _, e in valid)  # type: ignore[type-var]
    for r in routed:
        assert r.event is not None
        assert routes[r.topic] == ROUTES[r.event.event_type]
        assert r.key == r.event.store_id.encode()
        # The event's own headers first, then the router's lineage stamp (app, when).
        assert r.headers[:-2] == headers_for(r.event)
        assert [name for name, _ in r.headers[-2:]] == [APP_HEADER, EMITTED_AT_HEADER]
        assert dict(r.headers)[APP_HEADER] == f"router-{ns.suffix}".encode()

    # Each malformed record whole in dead letters, with the kind the fault promises.
    letters = [deadletter.DeadLetter.from_message(_AsMessage(r)) for r in reader.records[dlq]]
    assert len(letters) == len(malformed)
    kinds_by_value = {raw: EXPECTED_ERROR[kind] for _, _, kind, raw in malformed}  # type: ignore[index]
    for letter in letters:
        src = letter.source
        topic, key, value, headers, ts = coordinates[(src.topic, src.partition, src.offset)]
        assert (letter.key, letter.value, letter.headers, letter.timestamp) == (
            key,
            value,
            headers,
            ts,
        )
        assert letter.failure.kind == kinds_by_value[value]  # type: ignore[index]
        assert letter.app == f"router-{ns.suffix}"
        assert letter.failure.message


class _AsMessage:
    """A :class:`~pipelines.services.testing.ReadRecord` seen as a Kafka message."""

    def __init__(self, record: Any) -> None:
        self._r = record

    def key(self) -> bytes | None:
        return self._r.key  # type: ignore[no-any-return]

    def value(self) -> bytes | None:
        return self._r.value  # type: ignore[no-any-return]

    def headers(self) -> list[tuple[str, bytes]]:
        return self._r.headers  # type: ignore[no-any-return]

    def timestamp(self) -> tuple[int, int]:
        return (1, self._r.timestamp)


def test_dedupe_window_survives_a_restart_on_a_fresh_state_dir(
    settings: Settings, tmp_path: Any
) -> None:
    """The window lives in memory; what makes it durable is its changelog.

    A second router, on an empty state directory, must rebuild the window from the
    changelog and drop the resends of what the first one routed, while routing new events.
    """
    ns = Namespace(uuid.uuid4().hex[:8])
    create_topics(settings, ns.topics(router_topics()))
    events = channel_events()
    first, later = events[:24], events[24:]
    producer = make_producer(settings)

    def send(events: list[tuple[str, Envelope]]) -> None:
        for channel, event in events:
            producer.produce(
                ns.topic(INGRESS_BY_CHANNEL[channel]).name,
                encode(event),
                event.store_id.encode(),
                headers=headers_for(event),
                timestamp=int(event.occurred_at.timestamp() * 1000),
            )
        producer.flush(30)

    send(first)
    before = build_router(settings, ns)
    before.app.run(timeout=3)
    assert before.processor.stats.routed == len(first)

    send(first + later)  # every earlier event again, then new ones
    fresh = load_settings(base=settings, data_dir=tmp_path / "fresh-state")
    after = build_router(fresh, ns)
    after.app.run(timeout=3)
    stats = after.processor.stats
    assert (stats.consumed, stats.duplicates, stats.routed) == (
        len(first) + len(later),
        len(first),
        len(later),
    ), stats.summary()
    # What the operator reads in the router's log: the restored ids plus the new ones.
    assert f"dedupe windows: {len(events)} ids in " in after.processor.dedupe_summary()
