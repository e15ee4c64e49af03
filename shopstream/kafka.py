"""Kafka client factory: every producer, consumer and admin client is built here.

All clients take their connection, security and group timing from one
:class:`~shopstream.settings.Settings`, so pointing shopstream at Redpanda,
Apache Kafka or the embedded broker is a matter of settings alone.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ClusterMetadata, ConfigResource

from shopstream.errors import BrokerAuthFailed, BrokerUnreachable
from shopstream.settings import Settings

CLIENT_MAX_MESSAGE_BYTES = 1_000_000
"""librdkafka's ``message.max.bytes`` default: the largest record a client sends."""
BROKER_MAX_MESSAGE_BYTES = 1_048_588
"""Kafka's and Redpanda's default ``message.max.bytes`` / ``max.message.bytes``: used when
a broker does not describe its limits (the embedded broker describes nothing)."""


LIBRDKAFKA_LOG = logging.getLogger("librdkafka")
"""Where every client's own log lines go (not raw to stderr): the process's handler, so a
run loop can hold back what a broker outage makes them repeat."""


def connection_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings shared by every client: bootstrap servers, security, logging."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.broker_address,
        "security.protocol": settings.security_protocol,
        "logger": LIBRDKAFKA_LOG,
    }
    if settings.sasl_mechanism:
        config["sasl.mechanism"] = settings.sasl_mechanism
        config["sasl.username"] = settings.sasl_username or ""
        password = settings.sasl_password
        config["sasl.password"] = password.get_secret_value() if password else ""
    if settings.tls_ca_file:
        config["ssl.ca.location"] = str(settings.tls_ca_file)
    return config


def transactional_id(app_name: str, settings: Settings) -> str:
    """Stable per app instance, so a restart fences its crashed predecessor."""
    return f"shopstream-{app_name}-{settings.instance_id}"


def record_size_limits(settings: Settings, topics: Iterable[str]) -> dict[str, int]:
    """The largest record (key + value + headers, bytes) shopstream may send to each topic.

    The smaller of the client's ``message.max.bytes`` and the topic's
    ``max.message.bytes`` as the broker describes it (else the broker's
    ``message.max.bytes``, else Kafka's default): a record over it would be refused,
    by the client at once or by the broker later.
    """
    names = sorted(set(topics))
    admin = AdminClient(connection_config(settings) | {"log_level": 0})
    limits = dict.fromkeys(names, BROKER_MAX_MESSAGE_BYTES)
    try:
        futures = admin.describe_configs([ConfigResource("topic", n) for n in names])
        for resource, future in futures.items():
            entry = future.result(timeout=10).get("max.message.bytes")
            if entry is not None and str(entry.value).isdigit():
                limits[resource.name] = int(entry.value)
    except (KafkaException, ValueError, TypeError):
        pass  # the defaults stand: a broker that describes nothing (the embedded one)
    return {n: min(v, CLIENT_MAX_MESSAGE_BYTES) for n, v in limits.items()}


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


FETCH_WAIT_MAX_MS = 25
"""How long a fetch may wait at the broker for records (librdkafka's default: 500 ms).

Why: the embedded broker answers a fetch only when this wait is over, even when records
arrive meanwhile. Measured there, produce -> consume: 222 ms at 500, 22 ms at 100, 3.6 ms
at 20; every hop of the choreography paid it. Apache Kafka answers at once either way
(4.4 / 3.2 / 2.7 ms). The cost is an idle consumer's fetch every 25 ms."""


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """Group consumer that reads committed data from the start of new groups, and gets
    new records within :data:`FETCH_WAIT_MAX_MS` on any broker."""
    return connection_config(settings) | {
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": settings.heartbeat_interval_ms,
        "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
    } | overrides


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    return Producer(producer_config(settings, **overrides))


def make_consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    return Consumer(consumer_config(settings, group_id, **overrides))


def make_admin(settings: Settings) -> AdminClient:
    return AdminClient(connection_config(settings))


def unreachable_reason(address: str, timeout: float = 1.0) -> str | None:
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
    """Cluster metadata, or :class:`BrokerUnreachable` if nobody answers in time, or
    :class:`BrokerAuthFailed` (as soon as the broker says so) if it refuses the SASL
    credentials of the settings."""
    # A plain TCP probe first: it fails in milliseconds with a precise reason
    # (refused, unknown host) where librdkafka would retry until the timeout.
    refused = unreachable_reason(settings.broker_address)
    if refused:
        raise BrokerUnreachable(settings.broker_address, refused)
    auth_failed: list[KafkaError] = []

    def on_error(err: KafkaError) -> None:
        if err.code() == KafkaError._AUTHENTICATION:
            auth_failed.append(err)

    # log_level 0: the caller reports an unreachable broker in one line of its own. The
    # client reports a refused login through error_cb only (list_topics just times out).
    probe = {"socket.connection.setup.timeout.ms": 2000, "log_level": 0, "error_cb": on_error}
    admin = AdminClient(connection_config(settings) | probe)
    deadline = time.monotonic() + timeout
    while True:
        # In slices, so that a refused login ends the wait as soon as it is reported.
        wait = max(0.1, min(1.0, deadline - time.monotonic()))
        started = time.monotonic()
        try:
            return admin.list_topics(timeout=wait)
        except KafkaException as exc:
            admin.poll(0)  # serves error_cb
            if auth_failed:
                raise BrokerAuthFailed(
                    settings.broker_address, settings.sasl_username or "",
                    settings.sasl_mechanism or "",
                ) from None  # fmt: skip
            gave_up = time.monotonic() - started < wait * 0.9  # failed before its time
            if gave_up or time.monotonic() >= deadline:
                raise BrokerUnreachable(
                    settings.broker_address, _short(exc), _handshake_hint(settings)
                ) from None


def _handshake_hint(settings: Settings) -> str:
    """What to check when a server accepts TCP but no Kafka session comes of it."""
    if settings.sasl_mechanism is None and settings.tls_ca_file is None:
        return (
            "something listens there but no Kafka session came of it: if it requires SASL "
            "or TLS, set SHOPSTREAM_SASL_* or SHOPSTREAM_TLS_CA_FILE, else check the address"
        )
    return (
        "something listens there but no Kafka session came of it: check "
        "SHOPSTREAM_BROKER_ADDRESS and the SASL/TLS settings"
    )


def _short(exc: KafkaException) -> str:
    err = exc.args[0] if exc.args else exc
    text = err.str() if hasattr(err, "str") else str(err)
    return text.split(":")[-1].strip() or text


