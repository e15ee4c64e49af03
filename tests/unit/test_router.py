"""Router decisions and counters, broker-free: validate, dedupe, route, dead-letter."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from quixstreams.context import set_message_context
from quixstreams.models import MessageContext

from pipelines import deadletter
from pipelines.dedupe import DedupeWindow
from pipelines.router import DEDUPE_MAX_IDS, DEDUPE_TTL, RouterProcessor, decide
from producers.faults import EXPECTED_ERROR, applicable_kinds, malform
from shopstream.events import Alert, AlertPayload, derive, encode, headers_for, to_json_dict
from shopstream.topics import ROUTES
from support import service_samples as s

TTL_MS = int(DEDUPE_TTL.total_seconds() * 1000)


def window(segment_size: int = 4096) -> DedupeWindow:
    return DedupeWindow(TTL_MS, DEDUPE_MAX_IDS, segment_size)


CHANNEL_EVENTS = [
    s.order("o1", [("SKU-00001", 1, "2.00")]),
    s.returned("ret1", "o1", "SKU-00001", 1, "2.00"),
    s.question("q1", "SKU-00001"),
    s.restock("r1", "SKU-00001", 5),
]


@pytest.mark.parametrize("event", CHANNEL_EVENTS, ids=lambda e: e.event_type)
def test_valid_channel_event_is_routed_by_type(event: Any) -> None:
    decision = decide(encode(event), window())
    assert decision.outcome == "routed"
    assert decision.route == ROUTES[event.event_type]
    assert decision.event == event


def test_duplicate_event_id_is_dropped_within_the_ttl_only() -> None:
    # One id per segment, so the id's segment is closed and can expire.
    dedupe, t0 = window(segment_size=1), 1_000
    raw = encode(CHANNEL_EVENTS[0])
    assert decide(raw, dedupe, t0).outcome == "routed"
    assert decide(raw, dedupe, t0).outcome == "duplicate"
    assert decide(raw, dedupe, t0 + TTL_MS - 1).outcome == "duplicate"
    assert decide(raw, dedupe, t0 + TTL_MS).outcome == "routed"  # forgotten at the TTL


@pytest.mark.parametrize(
    ("event", "kind"),
    [(e, k) for e in CHANNEL_EVENTS for k in applicable_kinds(e.event_type)],
    ids=lambda x: getattr(x, "event_type", x),
)
def test_every_malformed_kind_is_dead_lettered_with_its_error_kind(event: Any, kind: Any) -> None:
    dedupe = window()
    decision = decide(malform(event, kind, random.Random(3)), dedupe)
    assert decision.outcome == "dead_lettered"
    assert decision.failure is not None
    assert decision.failure.kind == EXPECTED_ERROR[kind]
    assert len(dedupe) == 0  # a dead letter leaves no dedupe trace


def test_valid_but_unroutable_event_is_dead_lettered() -> None:
    alert = derive(
        CHANNEL_EVENTS[0],
        Alert,
        AlertPayload(alert_id="a1", kind="x", severity="info", subject="s", message="m"),
    )
    decision = decide(encode(alert), window())
    assert decision.outcome == "dead_lettered"
    assert decision.failure is not None
    assert (decision.failure.kind, decision.failure.field) == ("unroutable", "event_type")


def test_tombstone_is_dead_lettered() -> None:
    decision = decide(None, window())
    assert decision.outcome == "dead_lettered"


def test_no_state_means_no_dedupe() -> None:
    raw = encode(CHANNEL_EVENTS[0])
    assert decide(raw, None).outcome == decide(raw, None).outcome == "routed"


@pytest.fixture
def in_message() -> Iterator[None]:
    set_message_context(MessageContext("ingress.web", 2, 41, 100))
    yield
    set_message_context(None)


def test_processor_counts_balance_and_dead_letters_keep_the_record(in_message: None) -> None:
    routes = {spec.name: f"topic:{spec.name}" for spec in ROUTES.values()}
    proc = RouterProcessor(routes, "topic:deadletters", "router")  # type: ignore[arg-type]
    dedupe = window()
    order = CHANNEL_EVENTS[0]
    original_headers = [*headers_for(order), ("trace", b"t-1")]
    bad = malform(order, "missing_field", random.Random(1))
    inputs = [encode(e) for e in CHANNEL_EVENTS] + [encode(order), bad, b"\xff\xfe"]
    outputs = [proc(raw, b"store-01", 5, original_headers, dedupe) for raw in inputs]
    stats = proc.stats
    assert (stats.consumed, stats.routed, stats.dead_lettered, stats.duplicates) == (7, 4, 2, 1)
    assert stats.balanced
    assert dict(stats.by_error) == {"missing_field": 1, "bad_encoding": 1}

    [routed] = outputs[0]
    assert routed.topic == "topic:orders"
    assert routed.key == b"store-01"
    assert routed.value == inputs[0]  # the original bytes, verbatim
    assert routed.headers == headers_for(order)
    assert outputs[4] == ()

    [dead] = outputs[5]
    assert dead.topic == "topic:deadletters"
    assert (dead.key, dead.value) == (b"store-01", bad)
    assert dead.headers[: len(original_headers)] == original_headers
    errors = dict(dead.headers[len(original_headers) :])
    assert errors[deadletter.KIND] == b"missing_field"
    assert errors[deadletter.TOPIC] == b"ingress.web"
    assert (errors[deadletter.PARTITION], errors[deadletter.OFFSET]) == (b"2", b"41")
    assert errors[deadletter.APP] == b"router"
    assert errors[deadletter.MESSAGE]


def test_dead_letter_log_line_carries_coordinates_and_ids(
    in_message: None, caplog: pytest.LogCaptureFixture
) -> None:
    proc = RouterProcessor({}, "topic:deadletters", "router")  # type: ignore[arg-type]
    order = CHANNEL_EVENTS[0]
    doc = to_json_dict(order)
    doc["payload"]["lines"][0]["qty"] = "two"  # a schema violation: the ids are still there
    with caplog.at_level("WARNING", logger="pipelines.router"):
        proc(orjson.dumps(doc), b"store-01", 5, [], window())
        proc(b"\x00garbage", b"store-01", 5, [("correlation_id", b"o-7")], window())
    first, second = (r.getMessage() for r in caplog.records)
    assert f"wrong_type at ingress.web[2]@41 event_id={order.event_id} correlation_id=o1" in first
    assert "ingress.web[2]@41 event_id=- correlation_id=o-7" in second
