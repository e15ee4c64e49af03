"""The four choreographed services as apps: which topics, which rule, which outputs.

No orchestrator: each service is its own consumer group reacting to the events it reads
(pub/sub fan-out) and emitting events others react to::

    orders, returns, restocks --stock--> stock.events (+ stock.levels, alerts)
    orders, stock.events, returns --finance--> finance.events (+ alerts)
    stock.events, stock-questions --customer-relations--> customer.answers
    finance.events, stock.events, customer.answers --notifications--> notifications

``run_<service>(settings)`` is what ``shopstream run <service>`` calls (see
:mod:`pipelines.registry`).
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from pipelines.services import customer_relations, finance, notifications, stock
from pipelines.services.runtime import CATALOG, Namespace, ServiceDefinition, run_service
from shopstream.events import Envelope, format_timestamp
from shopstream.settings import Settings
from shopstream.topics import (
    ALERTS,
    ANSWERS,
    CUSTOMER_RELATIONS_GROUP,
    FINANCE_EVENTS,
    FINANCE_GROUP,
    NOTIFICATIONS,
    NOTIFICATIONS_GROUP,
    ORDERS,
    QUESTIONS,
    RESTOCKS,
    RETURNS,
    STOCK_EVENTS,
    STOCK_GROUP,
    STOCK_LEVELS,
    TopicSpec,
)


def level_records(event: Envelope) -> Iterator[tuple[TopicSpec, bytes, bytes]]:
    """``stock.levels`` records for a stock event: key ``store_id/sku``, the level after it.

    Compacted, so the topic converges to one record per store and SKU: the live levels.
    """
    for m in stock.movements(event):
        value = {
            "store_id": event.store_id,
            "sku": m.sku,
            "level": m.level_after,
            "as_of": format_timestamp(event.occurred_at),
            "event_id": str(event.event_id),
        }
        yield STOCK_LEVELS, f"{event.store_id}/{m.sku}".encode(), orjson.dumps(value)


STOCK = ServiceDefinition(
    name="stock",
    group=STOCK_GROUP,
    inputs=(ORDERS, RETURNS, RESTOCKS),
    accepts=stock.INPUT_TYPES,
    outputs={**dict.fromkeys(stock.STOCK_EVENT_TYPES, STOCK_EVENTS), "Alert": ALERTS},
    rule=stock.handle,
    extra=level_records,
    extra_outputs=(STOCK_LEVELS,),
)

FINANCE = ServiceDefinition(
    name="finance",
    group=FINANCE_GROUP,
    # Orders too (the catalog's FINANCE_GROUP.reads lists stock.events and returns only):
    # a reservation carries quantities, the order carries the prices an invoice needs.
    inputs=(ORDERS, STOCK_EVENTS, RETURNS),
    accepts=finance.INPUT_TYPES,
    outputs={"InvoiceIssued": FINANCE_EVENTS, "RefundIssued": FINANCE_EVENTS, "Alert": ALERTS},
    rule=finance.handle,
)

CUSTOMER_RELATIONS = ServiceDefinition(
    name="customer-relations",
    group=CUSTOMER_RELATIONS_GROUP,
    inputs=(STOCK_EVENTS, QUESTIONS),
    accepts=customer_relations.INPUT_TYPES,
    outputs={"QuestionAnswered": ANSWERS},
    rule=customer_relations.handle,
)

NOTIFICATIONS_SERVICE = ServiceDefinition(
    name="notifications",
    group=NOTIFICATIONS_GROUP,
    inputs=(FINANCE_EVENTS, STOCK_EVENTS, ANSWERS),
    accepts=notifications.INPUT_TYPES,
    outputs={"NotificationSent": NOTIFICATIONS},
    rule=notifications.handle,
)

SERVICES: dict[str, ServiceDefinition] = {
    d.name: d for d in (STOCK, FINANCE, CUSTOMER_RELATIONS, NOTIFICATIONS_SERVICE)
}


def run_stock(settings: Settings, namespace: Namespace = CATALOG) -> None:
    """``shopstream run stock``: reserve, reject, release, replenish; runs until SIGTERM."""
    run_service(settings, STOCK, namespace)


def run_finance(settings: Settings, namespace: Namespace = CATALOG) -> None:
    """``shopstream run finance``: invoice reserved orders, refund returns."""
    run_service(settings, FINANCE, namespace)


def run_customer_relations(settings: Settings, namespace: Namespace = CATALOG) -> None:
    """``shopstream run customer-relations``: answer stock questions."""
    run_service(settings, CUSTOMER_RELATIONS, namespace)


def run_notifications(settings: Settings, namespace: Namespace = CATALOG) -> None:
    """``shopstream run notifications``: tell customers by their channel's medium."""
    run_service(settings, NOTIFICATIONS_SERVICE, namespace)
