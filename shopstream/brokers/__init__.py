"""Broker processes shopstream can start itself: embedded Tansu and Apache Kafka.

Both expose the same small API (:class:`~shopstream.brokers.base.BrokerProcess`):
``start()``, ``address``, ``stop()``, usable as a context manager, so tests and
``shopstream broker`` / ``shopstream up`` accept either.
"""

from __future__ import annotations

from shopstream.brokers.base import BrokerKind, BrokerProcess, free_port
from shopstream.brokers.embedded import EmbeddedBroker
from shopstream.brokers.kafka_reference import KafkaReferenceBroker
from shopstream.errors import UserError

BROKERS: dict[BrokerKind, type[BrokerProcess]] = {
    "embedded": EmbeddedBroker,
    "kafka": KafkaReferenceBroker,
}
BROKER_KINDS: tuple[BrokerKind, ...] = tuple(BROKERS)


def make_broker(kind: BrokerKind, port: int | None = None, **kwargs: object) -> BrokerProcess:
    """A not-yet-started broker of ``kind`` (``embedded`` or ``kafka``)."""
    try:
        cls = BROKERS[kind]
    except KeyError:
        raise UserError(
            f"unknown broker kind {kind!r} - use one of {', '.join(BROKER_KINDS)}"
        ) from None
    return cls(port=port, **kwargs)  # type: ignore[arg-type]


__all__ = ["BROKER_KINDS", "BrokerKind", "BrokerProcess", "free_port", "make_broker"]
