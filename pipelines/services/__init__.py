"""The choreographed services: stock, finance, customer relations, notifications.

Each service is a module of pure business rules (``stock``, ``finance``,
``customer_relations``, ``notifications``: plain functions on events and a key-value
state, no Kafka) wired into a Quix Streams app by :mod:`pipelines.services.apps` through
the shared :mod:`pipelines.services.runtime`.
"""
