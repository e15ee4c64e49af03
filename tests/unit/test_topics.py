"""Topic catalog: every resource named once, every topic fully configured."""

from __future__ import annotations

from shopstream.admin import partitions
from shopstream.events import CHANNEL_EVENT_TYPES, EVENT_TYPES
from shopstream.settings import load_settings
from shopstream.topics import (
    ALL_TOPICS,
    INGRESS_BY_CHANNEL,
    ORDERS,
    ROUTES,
    TOPICS_BY_NAME,
    Namespace,
)


def test_names_are_unique() -> None:
    assert len(TOPICS_BY_NAME) == len(ALL_TOPICS)


def test_every_topic_sets_retention_explicitly_as_declared() -> None:
    # The embedded broker omits retention from DescribeConfigs unless set on creation, so
    # the creation config must carry the spec's own policy and retention, every time.
    for topic in ALL_TOPICS:
        assert topic.config == {
            "cleanup.policy": topic.cleanup_policy,
            "retention.ms": str(topic.retention_ms),
            "retention.bytes": str(topic.retention_bytes),
        }, topic.name
        assert topic.retention_ms == -1 or topic.retention_ms >= 24 * 3600 * 1000, topic.name


def test_partitions_come_from_the_settings_unless_a_topic_fixes_them() -> None:
    settings = load_settings(partitions=6)
    counts = {t.name: partitions(t, settings) for t in ALL_TOPICS}
    store_keyed = {t.name for t in ALL_TOPICS if t.key == "store_id"}
    assert {counts[name] for name in store_keyed} == {6}  # co-partitioned
    assert counts["shopstream.identity"] == 1


def test_history_topics_keep_every_record() -> None:
    # Records carry event time as their timestamp: time-based retention would delete
    # backfilled history at once, and replays from offset 0 would miss it.
    history = {t.name for t in ALL_TOPICS if t.history}
    assert {"orders", "returns", "restocks", "stock-questions", "stock.events"} <= history
    assert {"finance.events", "customer.answers"} <= history


def test_every_role_is_represented() -> None:
    roles = {"ingress", "typed", "service", "deadletter", "analytics", "meta"}
    assert {t.role for t in ALL_TOPICS} == roles


def test_each_channel_has_an_ingress_topic() -> None:
    assert set(INGRESS_BY_CHANNEL) == {"mobile", "pos", "web", "warehouse"}


def test_every_channel_event_has_a_route_to_a_typed_topic() -> None:
    assert set(ROUTES) == CHANNEL_EVENT_TYPES
    assert all(spec.role == "typed" for spec in ROUTES.values())


def test_declared_event_types_exist() -> None:
    for topic in ALL_TOPICS:
        assert set(topic.event_types) <= set(EVENT_TYPES), topic.name


def test_namespace_renames_everything_and_keeps_the_layout() -> None:
    ns = Namespace("t9")
    spec = ns.topic(ORDERS)
    assert spec.name == "orders-t9" and spec.config == ORDERS.config
    assert (ns.group("g"), ns.app("a")) == ("g-t9", "a-t9")
    assert Namespace().topic(ORDERS) is ORDERS
    assert [s.name for s in ns.topics([ORDERS, ORDERS])] == ["orders-t9"]
