"""shopstream core: event contracts, topic catalog, settings, Kafka clients, brokers.

This package is shared by every role (``producers``, ``pipelines``, ``dashboard``)
and imports none of them.
"""

__version__ = "0.1.0"
