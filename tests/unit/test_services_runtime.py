"""The generic service app, broker-free: namespaces, staged state, the service processor."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from quixstreams.context import set_message_context
from quixstreams.models import MessageContext

from pipelines import deadletter
from pipelines.services.apps import FINANCE, SERVICES, STOCK
from pipelines.services.service import ServiceDefinition, ServiceProcessor
from pipelines.services.state import MemoryState, StagedState
from shopstream.apps import consumer_groups, load_apps
from shopstream.events import Envelope, encode, headers_for
from shopstream.topics import ALL_TOPICS, ORDERS, TOPICS_BY_NAME, Namespace
from support import service_samples as s


def test_namespace_renames_topics_groups_and_apps() -> None:
    ns = Namespace("t1")
    assert ns.topic(ORDERS).name == "orders-t1"
    assert ns.topic(ORDERS).config == ORDERS.config
    assert ns.group(FINANCE.group) == "shopstream-finance-t1"
    assert ns.app("finance") == "finance-t1"
    plain = Namespace()
    assert (plain.topic(ORDERS), plain.group(FINANCE.group), plain.app("x")) == (
        ORDERS,
        FINANCE.group,
        "x",
    )


def test_services_use_only_catalog_topics_and_groups() -> None:
    for definition in SERVICES.values():
        for spec in definition.topics():
            assert TOPICS_BY_NAME[spec.name] == spec
        assert definition.group in {g.name for g in consumer_groups()}
    assert {"router", *SERVICES} <= set(load_apps())


def test_staged_state_applies_nothing_until_commit() -> None:
    inner = MemoryState()
    inner.set("a", 1)
    staged = StagedState(inner)
    staged.set("b", 2, ttl=timedelta(seconds=5))
    staged.delete("a")
    assert (staged.get("a"), staged.get("b"), staged.exists("b")) == (None, 2, True)
    assert (inner.get("a"), inner.get("b")) == (1, None)
    staged.commit()
    assert (inner.get("a"), inner.get("b")) == (None, 2)
    inner.now_ms = 5_000
    assert not inner.exists("b")  # the TTL reached the real store


@pytest.fixture
def in_message() -> Iterator[None]:
    set_message_context(MessageContext("orders", 0, 9, 100))
    yield
    set_message_context(None)


def processor(definition: ServiceDefinition) -> ServiceProcessor:
    topics = {spec.name: f"topic:{spec.name}" for spec in definition.output_specs()}
    return ServiceProcessor(definition, definition.name, topics, "topic:deadletters")  # type: ignore[arg-type]


def test_stock_processor_emits_events_and_level_records(in_message: None) -> None:
    proc = processor(STOCK)
    state = MemoryState()
    restock = s.restock("r1", "SKU-00001", 4)
    [event, level] = proc(encode(restock), b"store-01", 0, headers_for(restock), state)
    assert (event.topic, event.key) == ("topic:stock.events", b"store-01")
    assert dict(event.headers)["event_type"] == b"StockReplenished"
    assert (level.topic, level.key) == ("topic:stock.levels", b"store-01/SKU-00001")
    assert b'"level":4' in level.value


def test_undecodable_input_is_dead_lettered_with_coordinates(in_message: None) -> None:
    proc = processor(FINANCE)
    [dead] = proc(b"not json", b"store-01", 0, [("correlation_id", b"o1")], MemoryState())
    assert dead.topic == "topic:deadletters"
    errors = dict(dead.headers)
    assert errors[deadletter.KIND] == b"bad_json"
    assert (errors[deadletter.TOPIC], errors[deadletter.OFFSET]) == (b"orders", b"9")
    assert errors[deadletter.APP] == b"finance"
    assert proc.stats.dead_lettered == 1


def test_a_failing_rule_leaves_the_state_untouched(in_message: None) -> None:
    def rule(event: Envelope, state: MemoryState) -> list[Envelope]:  # type: ignore[override]
        state.set("touched", 1)
        raise RuntimeError("boom")

    broken = ServiceDefinition(
        "broken",
        FINANCE.group,
        "a service whose rule raises",
        FINANCE.inputs,
        FINANCE.accepts,
        FINANCE.outputs,
        rule,  # type: ignore[arg-type]
    )
    proc = processor(broken)
    state = MemoryState()
    order = s.order("o1", [("SKU-00001", 1, "1.00")])
    [dead] = proc(encode(order), b"store-01", 0, headers_for(order), state)
    assert dict(dead.headers)[deadletter.KIND] == b"processing_error"
    assert b"RuntimeError: boom" in dict(dead.headers)[deadletter.MESSAGE]
    assert dead.value == encode(order)
    assert list(state.live_keys()) == []


def test_events_a_service_does_not_handle_are_ignored(in_message: None) -> None:
    proc = processor(FINANCE)
    question = s.question("q1", "SKU-00001")
    assert proc(encode(question), b"store-01", 0, [], MemoryState()) == []
    assert proc.stats.ignored == 1


def test_every_catalog_topic_a_service_needs_exists() -> None:
    names = {t.name for t in ALL_TOPICS}
    for definition in SERVICES.values():
        assert {spec.name for spec in definition.topics()} <= names
