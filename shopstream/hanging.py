"""Hanging transactional offset commits: found, and ended, before an app starts.

An exactly-once app commits its consumer offsets inside its Kafka transaction; the group
coordinator keeps them pending until the transaction's marker reaches
``__consumer_offsets``. If that marker never comes, the offsets hang: the broker answers
every offset fetch that asks for stable offsets (librdkafka's does, under
``read_committed``) with ``UNSTABLE_OFFSET_COMMIT``, for ever, and the app's partition
assignment times out run after run.

Seen here on Apache Kafka 4.4 after a broker restart (``tests/integration/test_outage.py``,
2 of 6 local runs, 2 CI runs): the coordinator rolled the app's open transaction back
("due to timeout") at its restart, yet ``__consumer_offsets`` kept that transaction open
(DescribeProducers: the app's producer id, epoch 0, a transaction begun at offset 119)
while the coordinator said ``Empty``; the router never got past its assignment again.
The same transaction hung on the partitions it had written to (changelogs, outputs):
their last stable offset stayed behind, and ``read_committed`` readers stopped there.
Kafka's remedy is an operator's ``kafka-transactions.sh abort``; the app can do it
itself, because a transaction marker ends the pending transaction of its producer id on
its partition (whatever the epoch): :func:`end_hanging_offset_commits` runs one
transaction of the app's own ``transactional.id`` that adds the group's offsets and a
record to each of the app's partitions held back, and is aborted. A previous
life's transaction that is merely open is fenced and aborted by the same
``init_transactions`` (what the app's own producer would do next anyway), so nothing
committed is undone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import dataclass, field
from typing import TypeVar

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from shopstream.kafka import connection_config
from shopstream.settings import Settings

log = logging.getLogger("shopstream.kafka")
Answer = TypeVar("Answer", bound=Sized)

TIMEOUT_S = 10.0
"""For each call to the broker (a broker that does not answer leaves the app to its run
loop, which retries)."""
ABORT_KEY = b"shopstream.hanging: aborted"
"""Key of the records the ending transaction writes (aborted, so never read; a key,
because compacted topics such as changelogs refuse a record without one)."""
SETTLE_S = 5.0
"""How long to wait for the held offsets to be answered again after the abort."""


@dataclass(frozen=True)
class Ended:
    """What :func:`end_hanging_offset_commits` found and did (``topic[partition]`` each)."""

    held: list[str] = field(default_factory=list)
    """Partitions whose committed offsets the broker held back."""
    fenced: list[str] = field(default_factory=list)
    """Answered again once the app's producer was initialised: a previous run's
    transaction was merely open (it crashed), and the coordinator aborted it."""
    freed: list[str] = field(default_factory=list)
    """Answered again only once the app aborted a transaction of its own over them: the
    commit was hanging."""
    unstuck: list[str] = field(default_factory=list)
    """Partitions of the app's own topics whose last stable offset the hanging transaction
    held back, and which that abort moved on."""

    @property
    def still_held(self) -> list[str]:
        """Held back still: another producer's transaction (another instance's)."""
        return sorted(set(self.held) - set(self.fenced) - set(self.freed))


def _partitions(admin: AdminClient, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of those of ``topics`` the broker has."""
    metadata = admin.list_topics(timeout=TIMEOUT_S)
    return [
        TopicPartition(name, p)
        for name in sorted(set(topics))
        if name in metadata.topics
        for p in sorted(metadata.topics[name].partitions)
    ]


def _settled(ask: Callable[[], Answer]) -> Answer:
    """``ask()`` until it answers nothing, for at most :data:`SETTLE_S`; its last answer.

    Why: the coordinator writes a transaction's markers after it answers, so what they
    end is answered again a moment later (measured: not at once, 0.2 s on)."""
    deadline = time.monotonic() + SETTLE_S
    while (still := ask()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return still


def unstable_partitions(
    admin: AdminClient, group: str, topics: Iterable[str]
) -> dict[tuple[str, int], int]:
    """``(topic, partition) -> committed offset`` (-1 if none) of every partition of
    ``topics`` whose offsets in ``group`` the broker holds back as unstable.

    Asked partition by partition: asked for all of a group's partitions, the broker
    leaves out those with nothing committed yet, pending commit or not."""
    partitions = _partitions(admin, topics)
    if not partitions:
        return {}

    def fetch(stable: bool) -> list[TopicPartition]:
        request = [ConsumerGroupTopicPartitions(group, partitions)]
        future = admin.list_consumer_group_offsets(request, require_stable=stable)[group]
        return future.result(timeout=TIMEOUT_S).topic_partitions or []

    held = {
        (tp.topic, tp.partition)
        for tp in fetch(stable=True)
        if tp.error is not None and tp.error.code() == KafkaError.UNSTABLE_OFFSET_COMMIT
    }
    if not held:
        return {}
    committed = {(tp.topic, tp.partition): tp.offset for tp in fetch(stable=False)}
    return {tp: committed.get(tp, -1) for tp in held}


def stuck_partitions(admin: AdminClient, topics: Iterable[str]) -> set[tuple[str, int]]:
    """Partitions of ``topics`` whose last stable offset is behind the high watermark
    they had a moment before: a transaction is open on them."""
    partitions = _partitions(admin, topics)
    if not partitions:
        return set()

    def ends(isolation: IsolationLevel) -> dict[tuple[str, int], int]:
        futures = admin.list_offsets(
            {tp: OffsetSpec.latest() for tp in partitions},
            isolation_level=isolation, request_timeout=TIMEOUT_S,
        )  # fmt: skip
        return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}

    # The end first, the last stable offset after: a partition others keep writing to
    # outside transactions has moved on meanwhile, and is not taken for stuck.
    high = ends(IsolationLevel.READ_UNCOMMITTED)
    stable = ends(IsolationLevel.READ_COMMITTED)
    return {tp for tp, end in high.items() if stable.get(tp, end) < end}


def end_hanging_offset_commits(
    settings: Settings,
    transactional_id: str,
    group: str,
    topics: Iterable[str],
    own_topics: Iterable[str] = (),
    state_topics: Iterable[str] = (),
) -> Ended:
    """End ``transactional_id``'s offset commits to ``group`` on ``topics`` (its inputs)
    that the broker holds back (see the module docstring); a no-op (two requests) when
    none is.

    A hanging transaction holds back more than offsets: on the partitions it wrote to
    (of ``own_topics``: the app's outputs, changelogs, repartition topics) it keeps the
    last stable offset behind, so ``read_committed`` readers stop there (seen in CI:
    Quix refused analytics' state, its stored changelog offset ahead of the changelog's
    end as a ``read_committed`` consumer sees it). The aborted transaction therefore
    also writes one record (key :data:`ABORT_KEY`, no value) to each such partition:
    aborted, no ``read_committed`` reader ever sees it, and the abort's marker ends the
    hanging transaction there too.

    The same transaction may hang on the app's state changelogs (``state_topics``, of
    ``own_topics``) with no offset commit held back (seen in CI: finance's state refused
    5 runs in a row after a restart, its offsets answered): a changelog partition still
    held back once the app's producer is initialised (which ends a crashed predecessor's
    open transaction, on Tansu too) is ended the same way.

    Raises ``KafkaException`` when the broker does not answer."""
    topics, own_topics, state_topics = list(topics), list(own_topics), list(state_topics)
    admin = AdminClient(connection_config(settings))
    held = unstable_partitions(admin, group, topics)
    stuck_state = stuck_partitions(admin, state_topics)
    if not held and not stuck_state:
        return Ended()

    def settled() -> dict[tuple[str, int], int]:
        return _settled(lambda: unstable_partitions(admin, group, topics))

    def state_stuck_after_fencing() -> set[tuple[str, int]]:
        return _settled(lambda: stuck_partitions(admin, state_topics))

    producer = Producer(connection_config(settings) | {"transactional.id": transactional_id})
    # Only for its group metadata: it never joins (no subscribe, no poll).
    member = Consumer(connection_config(settings) | {"group.id": group})
    try:
        # Fences a previous run of this transactional.id and aborts its open transaction.
        producer.init_transactions(TIMEOUT_S)
        hanging = settled() if held else {}
        state_hangs = bool(stuck_state) and bool(state_stuck_after_fencing())
        stuck = stuck_partitions(admin, own_topics) if hanging or state_hangs else set()
        if hanging or state_hangs:
            producer.begin_transaction()
            for topic, partition in sorted(stuck):
                producer.produce(topic, key=ABORT_KEY, value=None, partition=partition)
            # Sent before the abort: a record still queued would be purged by it, and its
            # partition would get no marker.
            producer.flush(TIMEOUT_S)
            offsets = [TopicPartition(t, p, max(o, 0)) for (t, p), o in sorted(hanging.items())]
            try:
                if offsets:
                    producer.send_offsets_to_transaction(
                        offsets, member.consumer_group_metadata(), TIMEOUT_S
                    )
            except KafkaException as exc:
                # The offsets were added to the transaction before the commit was refused
                # (or not, and the abort has nothing to mark): abort all the same.
                log.debug("ending hanging offset commits: %s", exc)
            producer.abort_transaction(TIMEOUT_S)
    finally:
        member.close()
        producer.purge()
        del producer  # destroyed here: nothing of it is sent later
    still = settled() if hanging else {}
    stuck_still = stuck_partitions(admin, own_topics) if stuck else set()
    if not held:  # the state changelogs alone: nothing of the offsets to report
        return Ended(unstuck=sorted(f"{t}[{p}]" for t, p in stuck - stuck_still))

    def names(partitions: Iterable[tuple[str, int]]) -> list[str]:
        return sorted(f"{t}[{p}]" for t, p in partitions)

    return Ended(
        held=names(held),
        fenced=names(set(held) - set(hanging)),
        freed=names(set(hanging) - set(still)),
        unstuck=names(stuck - stuck_still),
    )
