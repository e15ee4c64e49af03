"""Broker processes shopstream can start itself: embedded Tansu and Apache Kafka.

Both expose the same small API (:class:`~shopstream.brokers.base.BrokerProcess`):
``start()``, ``address``, ``stop()``, usable as a context manager, so tests and
``shopstream broker`` / ``shopstream up`` accept either.
"""

from shopstream.brokers.base import BrokerKind, BrokerProcess, free_port, make_broker

__all__ = ["BrokerKind", "BrokerProcess", "free_port", "make_broker"]
