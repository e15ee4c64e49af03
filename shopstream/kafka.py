"""Kafka client factory: every producer, consumer, admin and Quix app is built here.

All clients take their connection, security and group timing from one
:class:`~shopstream.settings.Settings`, so pointing shopstream at Redpanda,
Apache Kafka or the embedded broker is a matter of settings alone.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ClusterMetadata

from shopstream.errors import BrokerUnreachable
from shopstream.settings import Settings

if TYPE_CHECKING:
    from quixstreams import Application


def connection_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings shared by every client: bootstrap servers and security."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.broker_address,
        "security.protocol": settings.security_protocol,
    }
    if settings.sasl_mechanism:
        config["sasl.mechanism"] = settings.sasl_mechanism
        config["sasl.username"] = settings.sasl_username or ""
        password = settings.sasl_password
        config["sasl.password"] = password.get_secret_value() if password else ""
    if settings.tls_ca_file:
        config["ssl.ca.location"] = str(settings.tls_ca_file)
    return config


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Durable, ordered, fast: idempotent, ``acks=all``, lz4, small linger.

    Keys are hashed with murmur2 like the Java client, Redpanda's tools and Quix
    Streams' producers, so a key lands in the same partition whoever writes it
    (librdkafka's default, CRC32, would split a store's events across partitions
    and so across the state of the services keyed by it).
    """
    return connection_config(settings) | {
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 20,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 500_000,
    } | overrides


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """Group consumer that reads committed data from the start of new groups."""
    return connection_config(settings) | {
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": settings.heartbeat_interval_ms,
    } | overrides


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    return Producer(producer_config(settings, **overrides))


def make_consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    return Consumer(consumer_config(settings, group_id, **overrides))


def make_admin(settings: Settings) -> AdminClient:
    return AdminClient(connection_config(settings))


def _first_reachable(address: str, timeout: float = 1.0) -> str | None:
    """Why no bootstrap server accepts a TCP connection, or None if one does."""
    reason = "no server listed"
    for server in address.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                return None
        except OSError as exc:
            reason = exc.strerror or str(exc)
    return reason.lower()


def fetch_metadata(settings: Settings, timeout: float = 5.0) -> ClusterMetadata:
    """Cluster metadata, or :class:`BrokerUnreachable` if nobody answers in time."""
    # A plain TCP probe first: it fails in milliseconds with a precise reason
    # (refused, unknown host) where librdkafka would retry until the timeout.
    refused = _first_reachable(settings.broker_address)
    if refused:
        raise BrokerUnreachable(settings.broker_address, refused)
    # log_level 0: the caller reports an unreachable broker in one line of its own.
    probe = {"socket.connection.setup.timeout.ms": 2000, "log_level": 0}
    admin = AdminClient(connection_config(settings) | probe)
    try:
        return admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnreachable(settings.broker_address, _short(exc)) from None


def _short(exc: KafkaException) -> str:
    err = exc.args[0] if exc.args else exc
    text = err.str() if hasattr(err, "str") else str(err)
    return text.split(":")[-1].strip() or text


def transactional_id(app_name: str, settings: Settings) -> str:
    """Stable per app instance, so a restart fences its crashed predecessor."""
    return f"shopstream-{app_name}-{settings.instance_id}"


def quix_app(
    settings: Settings,
    app_name: str,
    consumer_group: str,
    **kwargs: Any,
) -> Application:
    """A Quix Streams ``Application`` wired to shopstream's settings.

    Exactly-once (Kafka transactions) unless settings say at-least-once, a
    stable ``transactional.id``, fast group joins, state under
    ``<data_dir>/state/<app_name>``, and ``earliest`` as the reset policy so a
    new group starts from the beginning of the log.
    """
    from quixstreams import Application
    from quixstreams.kafka.configuration import ConnectionConfig

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
        "loglevel": "WARNING",
    }
    options.update(kwargs)
    return Application(**options)
