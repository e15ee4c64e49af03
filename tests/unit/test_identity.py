"""Reading the broker's identity log, with a stand-in consumer."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from shopstream import identity
from shopstream.settings import load_settings


class NewPartitionConsumer:
    """A consumer whose metadata does not list a just-created partition yet: the first
    watermark query fails the way librdkafka fails it, the next one answers."""

    def __init__(self) -> None:
        self.calls = 0

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        self.calls += 1
        if self.calls == 1:
            raise KafkaException(
                KafkaError(
                    KafkaError._UNKNOWN_PARTITION,
                    "Failed to get watermark offsets: Local: Unknown partition",
                )
            )
        return 0, 3


def test_reading_the_identity_waits_for_a_partition_just_created() -> None:
    """Seen on a fresh Apache Kafka (1 of 3 starts): the first process to read the
    identity right after creating its topic got librdkafka's local 'Unknown partition'."""
    consumer: Any = NewPartitionConsumer()
    settings = load_settings(broker_address="127.0.0.1:9092")
    assert identity._high_watermark(consumer, settings, timeout=5.0) == 3
    assert consumer.calls == 2


def test_apps_starting_together_never_see_a_half_written_stamp(tmp_path: Path) -> None:
    """Seen in CI: of five apps started at once on one data dir, one read the stamp while
    another wrote it, found it empty ("unknown") and refused to start."""
    state = identity.LocalState(tmp_path / "state")
    mine = identity.BrokerIdentity("dd11ccce659c", "2026-12-02T06:09:01+00:00")
    state.claim(mine)
    done = threading.Event()
    seen: set[str | None] = set()

    def read() -> None:
        while not done.is_set():
            seen.add(state.owner())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(300):
            state.claim(mine)
    finally:
        done.set()
        reader.join()
    assert seen == {"dd11ccce659c"}
    assert [p.name for p in tmp_path.iterdir()] == ["state"]  # nothing left beside it
