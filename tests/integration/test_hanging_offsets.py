"""Offset commits a broker holds back (``shopstream.hanging``), on a real broker.

What a run of an exactly-once app finds before it starts: the offsets of a crashed
predecessor's open transaction (aborted by fencing), or of another instance's
transaction (left alone). A commit hanging for good after a broker restart cannot be
made on purpose here (Kafka 4.4 refuses an offset commit outside its transaction);
tests/unit/test_hanging.py holds that path to a broker stand-in, and
tests/integration/test_outage.py meets it for real now and then (docs/running.md).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

import shopstream.hanging as hanging
from shopstream.hanging import end_hanging_offset_commits
from shopstream.kafka import connection_config, make_admin
from shopstream.settings import Settings

TANSU_HOLDS_NOTHING_BACK = (
    "Tansu answers a group's offsets while a transaction's commit of them is pending "
    "(it has no require_stable): nothing is ever held back, so there is nothing to end"
)


@pytest.fixture
def topic(settings: Settings, unique: Callable[[str], str]) -> str:
    name = unique("hanging-in")
    admin = make_admin(settings)  # held until the future is done
    admin.create_topics([NewTopic(name, 3)])[name].result(timeout=30)
    return name


def open_transaction(
    settings: Settings, transactional_id: str, group: str, offsets: list[TopicPartition]
) -> Producer:
    """A producer of ``transactional_id`` with an open transaction committing ``offsets``."""
    producer = Producer(connection_config(settings) | {"transactional.id": transactional_id})
    member = Consumer(connection_config(settings) | {"group.id": group})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.send_offsets_to_transaction(offsets, member.consumer_group_metadata(), 30)
    member.close()
    return producer


def committed(settings: Settings, group: str, topic: str) -> dict[int, int]:
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(3)])]
    admin = make_admin(settings)  # held until the future is done
    future = admin.list_consumer_group_offsets(request, require_stable=True)[group]
    return {tp.partition: tp.offset for tp in future.result(timeout=30).topic_partitions}


@pytest.mark.known_gap("embedded", TANSU_HOLDS_NOTHING_BACK)
def test_a_crashed_runs_open_transaction_is_aborted_and_its_offsets_answered_again(
    settings: Settings,
    topic: str,
    unique: Callable[[str], str],
    claim: Callable[[bool, str], None],
) -> None:
    group, tid = unique("group"), unique("app-0")
    member = Consumer(connection_config(settings) | {"group.id": group})
    member.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
    member.close()
    crashed = open_transaction(
        settings, tid, group, [TopicPartition(topic, 0, 7), TopicPartition(topic, 1, 5)]
    )
    crashed.purge()
    del crashed  # the process died: its transaction stays open on the broker

    ended = end_hanging_offset_commits(settings, tid, group, [topic])

    claim(
        ended.held == [f"{topic}[0]", f"{topic}[1]"] and ended.fenced == ended.held,
        f"held back {ended.held}, answered again once fenced {ended.fenced}",
    )
    assert not ended.freed and not ended.still_held
    # Aborted: the offsets before the crashed run's transaction stand.
    assert committed(settings, group, topic) == {0: 3, 1: -1001, 2: -1001}


@pytest.mark.known_gap("embedded", TANSU_HOLDS_NOTHING_BACK)
def test_another_producers_open_transaction_is_left_alone(
    settings: Settings,
    topic: str,
    unique: Callable[[str], str],
    claim: Callable[[bool, str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hanging, "SETTLE_S", 1.0)  # it stays held back: no need to wait 5 s
    group = unique("group")
    other = open_transaction(settings, unique("app-1"), group, [TopicPartition(topic, 2, 9)])

    ended = end_hanging_offset_commits(settings, unique("app-0"), group, [topic])

    claim(ended.still_held == [f"{topic}[2]"], f"held back {ended.held}")
    assert not ended.fenced and not ended.freed
    other.commit_transaction(30)  # the other instance's transaction was not touched
    assert committed(settings, group, topic)[2] == 9


def test_nothing_held_back_costs_two_requests_and_starts_no_transaction(
    settings: Settings, topic: str, unique: Callable[[str], str]
) -> None:
    ended = end_hanging_offset_commits(settings, unique("app-0"), unique("group"), [topic])
    assert ended == hanging.Ended()
