"""Small deterministic channel events for tests, benchmarks and demos of the services.

Not a simulator (that is :mod:`producers`): each builder makes exactly the event asked
for, with ids derived from its business ids so a scenario is the same on every run.
Event time is ``origin + t`` seconds; tests against a broker pass a recent ``origin``
(topics have a retention, and Kafka deletes records older than it).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from shopstream.events import (
    Channel,
    ItemReturned,
    ItemReturnedPayload,
    OrderLine,
    OrderPlaced,
    OrderPlacedPayload,
    Restocked,
    RestockedPayload,
    StockQuestionAsked,
    StockQuestionAskedPayload,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
_NS = uuid.UUID("0f6c8a5e-3d0b-4c55-9a8e-6c1d2b7e4f10")


def sample_id(*parts: object) -> uuid.UUID:
    """A stable UUID for ``parts`` (same parts, same id)."""
    return uuid.uuid5(_NS, "/".join(map(str, parts)))


def at(seconds: float, origin: datetime = T0) -> datetime:
    """Event time ``seconds`` after ``origin`` (:data:`T0` unless given)."""
    return origin + timedelta(seconds=seconds)


def order(
    order_id: str,
    lines: list[tuple[str, int, str]],
    *,
    store_id: str = "store-01",
    channel: Channel = "web",
    customer_id: str = "cust-1",
    t: float = 0.0,
    origin: datetime = T0,
) -> OrderPlaced:
    """An order of ``(sku, qty, unit_price)`` lines."""
    return OrderPlaced(
        event_id=sample_id("order", order_id, store_id),
        occurred_at=at(t, origin),
        channel=channel,
        store_id=store_id,
        correlation_id=order_id,
        payload=OrderPlacedPayload(
            order_id=order_id,
            customer_id=customer_id,
            lines=[OrderLine(sku=s, qty=q, unit_price=Decimal(p)) for s, q, p in lines],
            payment_method="cash" if channel == "pos" else "card",
        ),
    )


def return_of(
    placed: OrderPlaced,
    return_id: str,
    sku: str,
    qty: int,
    amount: str,
    *,
    t: float = 60.0,
    origin: datetime = T0,
) -> ItemReturned:
    """A return of ``qty`` of ``sku`` from ``placed``, refunded at ``amount``."""
    return returned(
        return_id,
        placed.payload.order_id,
        sku,
        qty,
        amount,
        store_id=placed.store_id,
        channel=placed.channel,
        customer_id=placed.payload.customer_id,
        t=t,
        origin=origin,
    )


def returned(
    return_id: str,
    order_id: str,
    sku: str,
    qty: int,
    amount: str,
    *,
    store_id: str = "store-01",
    channel: Channel = "web",
    customer_id: str = "cust-1",
    t: float = 60.0,
    origin: datetime = T0,
) -> ItemReturned:
    """A return referring to ``order_id`` (which may be unknown, on purpose)."""
    return ItemReturned(
        event_id=sample_id("return", return_id, store_id),
        occurred_at=at(t, origin),
        channel=channel,
        store_id=store_id,
        correlation_id=return_id,
        payload=ItemReturnedPayload(
            return_id=return_id,
            order_id=order_id,
            customer_id=customer_id,
            sku=sku,
            qty=qty,
            reason="damaged",
            amount=Decimal(amount),
        ),
    )


def restock(
    restock_id: str,
    sku: str,
    qty: int,
    *,
    store_id: str = "store-01",
    t: float = -60.0,
    origin: datetime = T0,
) -> Restocked:
    """A delivery of ``qty`` units (by default a minute before :data:`T0`)."""
    return Restocked(
        event_id=sample_id("restock", restock_id, store_id),
        occurred_at=at(t, origin),
        channel="system",
        store_id=store_id,
        correlation_id=restock_id,
        payload=RestockedPayload(restock_id=restock_id, sku=sku, qty=qty, reason="opening"),
    )


def question(
    question_id: str,
    sku: str,
    *,
    store_id: str = "store-01",
    channel: Channel = "mobile",
    customer_id: str = "cust-2",
    t: float = 30.0,
    origin: datetime = T0,
) -> StockQuestionAsked:
    """A customer asking whether ``sku`` is in stock at ``store_id``."""
    return StockQuestionAsked(
        event_id=sample_id("question", question_id, store_id),
        occurred_at=at(t, origin),
        channel=channel,
        store_id=store_id,
        correlation_id=question_id,
        payload=StockQuestionAskedPayload(
            question_id=question_id,
            customer_id=customer_id,
            sku=sku,
            store_id=store_id,
            text=f"Do you have {sku}?",
        ),
    )
