"""Broker-side figures for the health and topology pages: consumer lag, topic sizes, apps.

Lag is the committed offset of each consumer group (from the app registry's group catalog,
:func:`shopstream.apps.consumer_groups`) against each partition's high watermark. On the
embedded broker the high watermark is that of the last *batch*, not record
(docs/testing.md), so lag there reads low or negative: :func:`broker_info` says which
broker this is so the page can say so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import polars as pl
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition

from shopstream.apps import consumer_groups, load_apps
from shopstream.kafka import fetch_metadata, make_admin, make_consumer
from shopstream.settings import Settings
from shopstream.status import read_statuses, run_dir

EMBEDDED_CLUSTER_ID = "tansu_cluster"
STATUS_STALE_S = 5.0


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    address: str
    cluster_id: str
    brokers: int
    topics: int

    @property
    def embedded(self) -> bool:
        """True for the embedded broker, whose high watermarks (and so lag) are off."""
        return self.cluster_id == EMBEDDED_CLUSTER_ID


def broker_info(settings: Settings) -> BrokerInfo:
    """Who the broker is (raises ``BrokerUnreachable``, one line, if nobody answers)."""
    metadata = fetch_metadata(settings, timeout=3.0)
    return BrokerInfo(
        settings.broker_address,
        str(metadata.cluster_id),
        len(metadata.brokers),
        len([t for t in metadata.topics if not t.startswith("__")]),
    )


def consumer_lag(settings: Settings) -> pl.DataFrame:
    """Per consumer group, topic and partition: committed offset, high watermark, lag."""
    groups = consumer_groups()
    admin = make_admin(settings)
    metadata = fetch_metadata(settings, timeout=3.0)
    consumer = make_consumer(settings, "shopstream-dashboard-watermarks")
    rows: list[dict[str, Any]] = []
    highs: dict[tuple[str, int], int] = {}
    try:
        for group in groups:
            partitions = [
                TopicPartition(topic, p)
                for topic in group.reads
                if topic in metadata.topics
                for p in metadata.topics[topic].partitions
            ]
            if not partitions:
                continue
            request = [ConsumerGroupTopicPartitions(group.name, partitions)]
            try:
                result = admin.list_consumer_group_offsets(request)[group.name].result(5)
                committed = result.topic_partitions
            except KafkaException:
                committed = []
            for tp in committed:
                key = (tp.topic, tp.partition)
                if key not in highs:
                    highs[key] = consumer.get_watermark_offsets(
                        TopicPartition(tp.topic, tp.partition), timeout=3.0
                    )[1]
                offset = tp.offset if tp.offset >= 0 else None
                rows.append({
                    "group": group.name, "app": group.app, "topic": tp.topic,
                    "partition": tp.partition, "committed": offset, "high_watermark": highs[key],
                    "lag": highs[key] - offset if offset is not None else highs[key],
                })  # fmt: skip
    finally:
        consumer.close()
    schema = {"group": pl.String, "app": pl.String, "topic": pl.String, "partition": pl.Int64,
              "committed": pl.Int64, "high_watermark": pl.Int64, "lag": pl.Int64}  # fmt: skip
    return pl.DataFrame(rows, schema=schema)


def app_statuses(settings: Settings) -> pl.DataFrame:
    """Every registered app with what its process last published (``shopstream.status``)."""
    statuses = read_statuses(run_dir(settings))
    now = time.time()
    rows = []
    for name, app in sorted(load_apps().items(), key=lambda kv: (kv[1].order, kv[0])):
        status = statuses.get(name)
        fresh = status is not None and now - status.updated_at < STATUS_STALE_S
        rows.append({
            "app": name, "kind": app.kind,
            "state": ("broker down" if status and not status.broker_up else "running")
            if fresh else "not running",
            "note": status.note if fresh and status else None,
            "consumed": status.consumed if status else None,
            "produced": status.produced if status else None,
            "dead_lettered": status.dead_lettered if status else None,
            "errors": status.errors if status else None,
            "last_error": status.last_error if status else None,
            "seconds_since_update": round(now - status.updated_at, 1) if status else None,
        })  # fmt: skip
    return pl.DataFrame(rows, infer_schema_length=None)
