"""The four choreographed services as apps: which topics, which rule, which outputs.

No orchestrator: each service is its own consumer group reacting to the events it reads
(pub/sub fan-out) and emitting events others react to::

    orders, returns, restocks --stock--> stock.events (+ stock.levels, alerts)
    orders, stock.events, returns --finance--> finance.events (+ alerts)
    stock.events, stock-questions --customer-relations--> customer.answers
    finance.events, stock.events, customer.answers --notifications--> notifications

Each service is one entry of the app registry (:data:`STOCK_APP`, ...; see
:mod:`shopstream.apps`): ``shopstream run stock`` runs it, ``shopstream up`` starts it.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from pipelines.services import customer_relations, finance, notifications, stock
from pipelines.services.service import ServiceDefinition, service_app
from shopstream.events import Envelope, format_timestamp
from shopstream.topics import (
    ALERTS,
    ANSWERS,
    FINANCE_EVENTS,
    NOTIFICATIONS,
    ORDERS,
    QUESTIONS,
    RESTOCKS,
    RETURNS,
    STOCK_EVENTS,
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
    group="shopstream-stock",
    description="Event-sourced inventory: reserves, rejects, releases, replenishes",
    inputs=(ORDERS, RETURNS, RESTOCKS),
    accepts=stock.INPUT_TYPES,
    outputs={**dict.fromkeys(stock.STOCK_EVENT_TYPES, STOCK_EVENTS), "Alert": ALERTS},
    rule=stock.handle,
    extra=level_records,
    extra_outputs=(STOCK_LEVELS,),
)

FINANCE = ServiceDefinition(
    name="finance",
    group="shopstream-finance",
    description="Invoices reserved orders, refunds returns of invoiced orders",
    # Orders too: a reservation carries quantities, the order the prices an invoice needs.
    inputs=(ORDERS, STOCK_EVENTS, RETURNS),
    accepts=finance.INPUT_TYPES,
    outputs={"InvoiceIssued": FINANCE_EVENTS, "RefundIssued": FINANCE_EVENTS, "Alert": ALERTS},
    rule=finance.handle,
)

CUSTOMER_RELATIONS = ServiceDefinition(
    name="customer-relations",
    group="shopstream-customer-relations",
    description="Answers stock questions from the stock event log",
    inputs=(STOCK_EVENTS, QUESTIONS),
    accepts=customer_relations.INPUT_TYPES,
    outputs={"QuestionAnswered": ANSWERS},
    rule=customer_relations.handle,
)

NOTIFICATIONS_SERVICE = ServiceDefinition(
    name="notifications",
    group="shopstream-notifications",
    description="Tells customers by their channel's medium",
    inputs=(FINANCE_EVENTS, STOCK_EVENTS, ANSWERS),
    accepts=notifications.INPUT_TYPES,
    outputs={"NotificationSent": NOTIFICATIONS},
    rule=notifications.handle,
)

SERVICES: dict[str, ServiceDefinition] = {
    d.name: d for d in (STOCK, FINANCE, CUSTOMER_RELATIONS, NOTIFICATIONS_SERVICE)
}


# Registry entries (pyproject.toml, "shopstream.apps"). Services start before the router,
# downstream ones last, so that the first events find their readers already joined.
STOCK_APP = service_app(STOCK, order=10)
FINANCE_APP = service_app(FINANCE, order=11)
CUSTOMER_RELATIONS_APP = service_app(CUSTOMER_RELATIONS, order=11)
NOTIFICATIONS_APP = service_app(NOTIFICATIONS_SERVICE, order=12)
