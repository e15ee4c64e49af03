"""The platform spine over TCP: topic creation, typed events, the CLI against a real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from kafka import KafkaConsumer

from shopstream.admin import create_topics, partitions, topic_status
from shopstream.brokers import BrokerProcess
from shopstream.events import (
    OrderLine,
    OrderPlaced,
    OrderPlacedPayload,
    decode,
    encode,
    headers_for,
)
from shopstream.kafka import make_consumer, make_producer
from shopstream.settings import Settings
from shopstream.topics import ALL_TOPICS, ORDERS, TopicSpec


def shopstream(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shopstream", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_create_topics_is_idempotent_and_visible_to_an_independent_client(
    settings: Settings, unique: Callable[[str], str]
) -> None:
    specs = [t.renamed(unique(t.name)) for t in ALL_TOPICS]
    assert sorted(create_topics(settings, specs)) == sorted(s.name for s in specs)
    assert create_topics(settings, specs) == []

    # kafka-python is a separate, pure-Python implementation of the protocol.
    client = KafkaConsumer(bootstrap_servers=settings.broker_address)
    try:
        seen = {name: len(client.partitions_for_topic(name) or ()) for name in client.topics()}
    finally:
        client.close()
    for spec in specs:
        assert seen.get(spec.name) == partitions(spec, settings), spec.name
    statuses = topic_status(settings, specs)
    assert all(s.as_declared for s in statuses)


def test_typed_events_round_trip_over_the_broker(
    settings: Settings, isolated_topics: Callable[..., list[TopicSpec]]
) -> None:
    (orders,) = isolated_topics(ORDERS)
    sent = [
        OrderPlaced(
            event_id=uuid.uuid4(),
            occurred_at=datetime.now(UTC),
            channel="pos",
            store_id=f"ST-{i % 5:03d}",
            correlation_id=f"O-{i}",
            payload=OrderPlacedPayload(
                order_id=f"O-{i}", customer_id="C-1", payment_method="cash",
                lines=[OrderLine(sku="SKU-00001", qty=1 + i % 3, unit_price=Decimal("4.50"))],
            ),
        )
        for i in range(200)
    ]
    producer = make_producer(settings)
    for event in sent:
        producer.produce(
            orders.name, key=event.store_id, value=encode(event), headers=headers_for(event)
        )
    assert producer.flush(30) == 0

    consumer = make_consumer(settings, f"spine-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([orders.name])
    received = []
    try:
        for _ in range(300):
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                received.append((msg.key(), dict(msg.headers() or []), decode(msg.value())))
            if len(received) == len(sent):
                break
    finally:
        consumer.close()
    assert sorted(e.event_id for _, _, e in received) == sorted(e.event_id for e in sent)
    for key, headers, event in received:
        assert key == event.store_id.encode()
        assert headers["event_type"] == b"OrderPlaced"
    # Keyed by store: each store's orders arrive in the order they were sent.
    for store in {e.store_id for e in sent}:
        got = [e.correlation_id for _, _, e in received if e.store_id == store]
        assert got == [e.correlation_id for e in sent if e.store_id == store]


def test_cli_topics_create_and_list_against_the_broker(broker: BrokerProcess) -> None:
    env = {"SHOPSTREAM_BROKER_ADDRESS": broker.address}
    created = shopstream("topics", "create", env=env)
    assert created.returncode == 0, created.stderr
    listed = shopstream("topics", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    for spec in ALL_TOPICS:
        assert spec.name in listed.stdout
    assert " no " not in listed.stdout  # every catalog topic exists now
