"""Topic administration from the catalog: create idempotently, compare with the broker."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from shopstream.errors import UserError
from shopstream.kafka import fetch_metadata, make_admin
from shopstream.settings import Settings
from shopstream.topics import ALL_TOPICS, TopicSpec


@dataclass(frozen=True, slots=True)
class TopicStatus:
    spec: TopicSpec
    exists: bool
    broker_partitions: int | None
    partitions: int
    """How many partitions the catalog and settings ask for."""

    @property
    def as_declared(self) -> bool:
        return self.exists and self.broker_partitions == self.partitions


def partitions(spec: TopicSpec, settings: Settings) -> int:
    """How many partitions ``spec`` has: its own count, else the settings' default."""
    return spec.partitions or settings.partitions


def create_topics(
    settings: Settings, specs: Iterable[TopicSpec] = ALL_TOPICS, timeout: float = 30.0
) -> list[str]:
    """Create every topic in ``specs`` that the broker lacks; return the names created.

    Idempotent: topics that already exist are left as they are (their partition
    count is not changed). Partitions and replication factor come from ``settings``
    unless a spec fixes its partitions. Raises :class:`UserError` on any other failure.
    """
    specs = list({s.name: s for s in specs}.values())  # a name twice fails the whole request
    existing = set(fetch_metadata(settings).topics)
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
    admin = make_admin(settings)
    futures = admin.create_topics(
        [
            NewTopic(
                s.name,
                num_partitions=partitions(s, settings),
                replication_factor=settings.replication_factor,
                config=s.config,
            )
            for s in missing
        ],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    created: list[str] = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise UserError(f"cannot create topic {name}: {err}") from None
    return created


def topic_status(settings: Settings, specs: Iterable[TopicSpec] = ALL_TOPICS) -> list[TopicStatus]:
    """Each catalog topic with whether it exists on the broker and its partition count."""
    topics = fetch_metadata(settings).topics
    return [
        TopicStatus(
            s,
            s.name in topics,
            len(topics[s.name].partitions) if s.name in topics else None,
            partitions(s, settings),
        )
        for s in specs
    ]
