"""Topic catalog: every resource named once, every topic fully configured."""

from __future__ import annotations

from shopstream.events import CHANNEL_EVENT_TYPES, EVENT_TYPES
from shopstream.topics import (
    ALL_GROUPS,
    ALL_TOPICS,
    INGRESS_BY_CHANNEL,
    ROUTES,
    TOPICS_BY_NAME,
)


def test_names_are_unique() -> None:
    assert len(TOPICS_BY_NAME) == len(ALL_TOPICS)
    assert len({g.name for g in ALL_GROUPS}) == len(ALL_GROUPS)


def test_every_topic_has_explicit_retention_and_policy() -> None:
    # The embedded broker omits retention from DescribeConfigs unless set on creation.
    for topic in ALL_TOPICS:
        assert set(topic.config) == {"cleanup.policy", "retention.ms", "retention.bytes"}
        assert topic.partitions >= 1


def test_every_role_is_represented() -> None:
    roles = {"ingress", "typed", "service", "deadletter", "analytics"}
    assert {t.role for t in ALL_TOPICS} == roles


def test_each_channel_has_an_ingress_topic() -> None:
    assert set(INGRESS_BY_CHANNEL) == {"mobile", "pos", "web", "warehouse"}


def test_every_channel_event_has_a_route_to_a_typed_topic() -> None:
    assert set(ROUTES) == CHANNEL_EVENT_TYPES
    assert all(spec.role == "typed" for spec in ROUTES.values())


def test_declared_event_types_exist() -> None:
    for topic in ALL_TOPICS:
        assert set(topic.event_types) <= set(EVENT_TYPES), topic.name


def test_groups_read_and_write_catalog_topics() -> None:
    for group in ALL_GROUPS:
        assert set(group.reads) | set(group.writes) <= set(TOPICS_BY_NAME), group.name


def test_renamed_keeps_the_layout() -> None:
    spec = ALL_TOPICS[0].renamed("x")
    assert spec.name == "x" and spec.config == ALL_TOPICS[0].config
