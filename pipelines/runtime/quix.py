"""Quix Streams ``Application`` objects built from shopstream's settings."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException

from pipelines.deadletter import Source
from shopstream.hanging import end_hanging_offset_commits
from shopstream.kafka import FETCH_WAIT_MAX_MS, connection_config, transactional_id
from shopstream.settings import Settings
from shopstream.topics import TopicSpec

if TYPE_CHECKING:
    from quixstreams import Application
    from quixstreams.models import Topic
    from quixstreams.state.rocksdb import RocksDBOptions

log = logging.getLogger("pipelines.run")

COMMIT_INTERVAL_S = 0.25
"""Checkpoint (Kafka transaction) interval of every app, unless overridden.

Why not Quix's 5 s: under exactly-once an output is visible downstream only once its
transaction commits, so each hop of the choreography adds up to one interval of latency
(order -> reservation -> invoice -> notification is three hops after the router), and
the router's interval is most of an order's way to the dashboard. Measured: the router
at 0.25 s against 1 s, same run, 100,000 events: 34,158 / 36,036 events/s exactly-once
and 37,766 / 32,149 at-least-once (the machine's noise), while an order reached the
router's output 202 ms after it was sent at the median instead of 602 ms.
"""

POLL_TIMEOUT_S = 0.1
"""Longest wait of an app's poll for its next record (Quix's default: 1 s), at most a third
of its commit interval.

Quix commits an expired checkpoint only between polls, and records that come out of
another app's transactions arrive in bursts, one per commit of that app: with a 1 s poll,
a burst waited for the next one before its checkpoint committed. Measured with the sink
(commit interval 0.3 s) behind the router (1 s) at 1,000 events/s: the sink wrote every
0.7-1.1 s, not every 0.3 s, and an order took 1,047 ms at the median from readable on the
broker to written."""
STATE_MEMTABLE_BYTES = 4 * 1024 * 1024
"""RocksDB memtable size of each state store partition (Quix's default: 64 MiB, three).

State is written in checkpoint-sized pieces (the router rewrites a dedupe segment per
partition each second), and until a memtable fills it stays in memory, its WAL on disk:
measured under ``up`` at 100 events/s, the router held 288 MB of WAL and not one SST file
after 37 minutes, its RSS growing 8 MB a minute (210 -> 502 MiB). Small memtables reach
disk within minutes; an app's state then needs at most partitions x 2 x 4 MiB of memory
plus the block cache."""
STATE_BLOCK_CACHE_BYTES = 64 * 1024 * 1024
"""The block cache shared by every store partition of a process (Quix's default: 1 GiB)."""


def state_options() -> RocksDBOptions:
    """The RocksDB options of every app's state stores (see :data:`STATE_MEMTABLE_BYTES`)."""
    from quixstreams.state.rocksdb import RocksDBOptions

    return RocksDBOptions(
        write_buffer_size=STATE_MEMTABLE_BYTES,
        max_write_buffer_number=2,
        target_file_size_base=STATE_MEMTABLE_BYTES,
        block_cache_size=STATE_BLOCK_CACHE_BYTES,
    )


def quix_app(
    settings: Settings,
    app_name: str,
    consumer_group: str,
    **kwargs: Any,
) -> Application:
    """A Quix Streams ``Application`` wired to shopstream's settings.

    Exactly-once (Kafka transactions) unless settings say at-least-once, a stable
    ``transactional.id``, fast group joins, state under ``<data_dir>/state/<app_name>``,
    ``earliest`` as the reset policy so a new group starts from the beginning of the
    log, and no broker-availability deadline: an app waits for its broker to come back
    (:mod:`pipelines.runtime.running` says so in the log) instead of exiting after two
    minutes. ``kwargs`` override any ``Application`` argument.
    """
    from quixstreams import Application
    from quixstreams.kafka.configuration import ConnectionConfig

    logging.getLogger("quixstreams").setLevel(logging.WARNING)
    conn = connection_config(settings)
    connection = ConnectionConfig(
        bootstrap_servers=conn["bootstrap.servers"],
        security_protocol=conn["security.protocol"].lower(),
        sasl_mechanism=conn.get("sasl.mechanism"),
        sasl_username=conn.get("sasl.username"),
        sasl_password=conn.get("sasl.password"),
        ssl_ca_location=conn.get("ssl.ca.location"),
    )
    producer_extra: dict[str, Any] = {"compression.type": "lz4", "linger.ms": 20}
    if settings.processing_guarantee == "exactly-once":
        producer_extra["transactional.id"] = transactional_id(app_name, settings)
    consumer_extra = {
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": settings.heartbeat_interval_ms,
        "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
    }
    options: dict[str, Any] = {
        "broker_address": connection,
        "consumer_group": consumer_group,
        "processing_guarantee": settings.processing_guarantee,
        "auto_offset_reset": "earliest",
        "state_dir": Path(settings.data_dir) / "state" / app_name,
        "consumer_extra_config": consumer_extra,
        "producer_extra_config": producer_extra,
        "auto_create_topics": True,
        "broker_availability_timeout": 0,
        # Quix's records go to the process's own handler (shopstream.logs), where the
        # run loop's broker watch can hold back what an outage makes it say.
        "loglevel": None,
        "commit_interval": COMMIT_INTERVAL_S,
        "rocksdb_options": state_options(),
    }
    options.update(kwargs)
    options.setdefault(
        "consumer_poll_timeout", min(POLL_TIMEOUT_S, float(options["commit_interval"]) / 3)
    )
    return Application(**options)


HANGING_LOOKUP_S = 20.0
"""How long a run's start keeps asking a broker whose coordinators are loading."""
_COORDINATOR_MOVING = frozenset({
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError.CONCURRENT_TRANSACTIONS,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
})  # fmt: skip


def end_hanging_offset_commits_of(app: Application, settings: Settings, app_name: str) -> None:
    """Before ``app`` runs (exactly-once only): end its offset commits the broker holds
    back for good (:mod:`shopstream.hanging`), and say so. A broker that does not answer
    is left to the run: Quix's partition assignment fails, and the run loop runs again."""
    config = app.config
    tid = config.producer_extra_config.get("transactional.id")
    if config.processing_guarantee != "exactly-once" or not tid:
        return
    topics = [topic.name for topic in app._dataframe_registry.consumer_topics]
    # Outputs, changelogs, repartition topics; never the inputs: others write them, and
    # outside this app's transactions (the channels, the analytics ticker).
    own = [name for name in app._topic_manager.all_topics if name not in set(topics)]
    state = [t.name for stores in app._topic_manager.changelog_topics.values()
             for t in stores.values()]  # fmt: skip
    group = config.consumer_group
    deadline = time.monotonic() + HANGING_LOOKUP_S
    while True:
        try:
            ended = end_hanging_offset_commits(settings, tid, group, topics, own, state)
            break
        except (KafkaException, TimeoutError) as exc:
            # Right after a broker restart its coordinators are still loading: worth a
            # few more tries before the run (whose assignment would wait 30 s on them).
            err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
            moving = not isinstance(err, KafkaError) or (
                err.retriable() or err.code() in _COORDINATOR_MOVING
            )
            if moving and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            log.debug("%s: could not look for hanging offset commits: %s", app_name, exc)
            return
    if ended.unstuck and not ended.held:
        log.warning(
            "%s: a transaction that was never marked ended (a hanging transaction) held "
            "back the end of %s; aborted it, they are readable to their end again",
            app_name, ", ".join(ended.unstuck),
        )  # fmt: skip
    if ended.fenced:
        log.info(
            "%s: a previous run's open transaction held back group %s's committed offsets "
            "of %s; aborted as this run started",
            app_name, group, ", ".join(ended.fenced),
        )  # fmt: skip
    if ended.freed:
        log.warning(
            "%s: the broker held back group %s's committed offsets of %s for good: an "
            "offset commit of a transaction that was never marked ended (a hanging "
            "transaction); aborted it, they are answered again%s",
            app_name, group, ", ".join(ended.freed),
            f", and {', '.join(ended.unstuck)} are readable to their end again"
            if ended.unstuck else "",
        )  # fmt: skip
    if ended.still_held:
        log.warning(
            "%s: the broker holds back group %s's committed offsets of %s: a transaction "
            "of another producer is open on them (another instance of %s, or a hanging "
            "transaction: kafka-transactions.sh find-hanging)",
            app_name, group, ", ".join(ended.still_held), app_name,
        )  # fmt: skip


def input_topic(app: Application, spec: TopicSpec) -> Topic:
    """A Quix topic read as raw bytes: decoding is the app's job, so failures are data."""
    return app.topic(spec.name, key_deserializer="bytes", value_deserializer="bytes")


def output_topic(app: Application, spec: TopicSpec) -> Topic:
    """A topic an app produces to, declared to Quix (which looks it up on the broker as
    the app is built, like its inputs)."""
    return app.topic(spec.name, key_serializer="bytes", value_serializer="bytes")


def current_source() -> Source:
    """Coordinates of the record being processed (valid inside a dataframe function)."""
    from quixstreams import message_context

    ctx = message_context()
    return Source(ctx.topic, ctx.partition, ctx.offset)


class _DestroyedProducer:
    """Stands in for a destroyed Kafka producer: any use is a bug, and says so (the Quix
    wrapper would otherwise make a new producer with the same ``transactional.id``,
    fencing the next run's)."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"producer.{name}: this run's Kafka producer was destroyed")


def destroy_producer(app: Application) -> None:
    """Destroy ``app``'s Kafka producer now, once its run has ended: nothing it still
    holds (records, a transaction's offsets, an abort) is sent after this.

    Why: when a run fails, Quix closes the consumer but leaves the producer to the
    garbage collector, and until then librdkafka retries whatever that producer had not
    sent, under the old producer epoch, beside the next run's producer of the same
    ``transactional.id`` (after a restart of Apache Kafka, its log showed an old epoch's
    request refused). Destroying takes milliseconds, also while the broker is down.
    """
    wrapper = app._producer._producer  # quixstreams.kafka.producer.Producer
    inner = wrapper._inner_producer
    if inner is None or isinstance(inner, _DestroyedProducer):
        return
    wrapper._inner_producer = _DestroyedProducer()
    inner.purge(in_queue=True, in_flight=True, blocking=False)
    # The last reference: librdkafka's handle is destroyed here (the wrapper's callbacks
    # point from the handle to the wrapper, not back).
    del inner
