"""Notifications: tells the customer, by the medium of the channel the flow came from.

``InvoiceIssued``, ``StockRejected``, ``RefundIssued`` and ``QuestionAnswered`` each
become one ``NotificationSent``: push for the mobile app, e-mail for the web store, a
receipt at the point of sale (e-mail for system-originated flows). Pure rules.

State keys, per store: ``sent:<event_id>`` - the causing event was notified (TTL
:data:`DEDUPE_TTL`), so a duplicate delivery of the same event sends nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pipelines.services.state import KeyValueState, first_time
from shopstream.events import (
    Channel,
    Envelope,
    InvoiceIssued,
    NotificationSent,
    NotificationSentPayload,
    QuestionAnswered,
    RefundIssued,
    StockRejected,
    derive,
    derived_event_id,
)

Medium = Literal["push", "email", "receipt"]

MEDIUM_BY_CHANNEL: dict[Channel, Medium] = {
    "mobile": "push",
    "web": "email",
    "pos": "receipt",
    "system": "email",
}
DEDUPE_TTL = timedelta(days=7)
"""How long (event time) a notified event id is remembered."""

INPUT_TYPES = frozenset({"InvoiceIssued", "StockRejected", "RefundIssued", "QuestionAnswered"})


def message_for(event: Envelope) -> tuple[str, str] | None:
    """``(customer_id, text)`` to send about ``event``, or ``None`` if it is not news."""
    if isinstance(event, InvoiceIssued):
        p = event.payload
        return p.customer_id, (
            f"Thank you for order {p.order_id}: invoice {p.invoice_id}, "
            f"{p.total_amount} {p.currency} incl. {p.tax_amount} tax."
        )
    if isinstance(event, StockRejected):
        p = event.payload
        skus = ", ".join(s.sku for s in p.shortages)
        return p.customer_id, (
            f"Sorry, we could not confirm order {p.order_id}: not enough stock of {skus}."
        )
    if isinstance(event, RefundIssued):
        p = event.payload
        return p.customer_id, (
            f"Refund {p.refund_id} of {p.amount} {p.currency} for order {p.order_id} is on its way."
        )
    if isinstance(event, QuestionAnswered):
        return event.payload.customer_id, event.payload.answer
    return None


def handle(event: Envelope, state: KeyValueState) -> list[Envelope]:
    """One ``NotificationSent`` per newsworthy event, never two for the same event id."""
    news = message_for(event)
    if news is None:
        return []
    if not first_time(state, f"sent:{event.event_id}", DEDUPE_TTL):
        return []
    customer_id, text = news
    event_id = derived_event_id(event.event_id, "NotificationSent")
    return [
        derive(
            event,
            NotificationSent,
            NotificationSentPayload(
                notification_id=str(event_id),
                customer_id=customer_id,
                medium=MEDIUM_BY_CHANNEL[event.channel],
                about=event.event_type,
                message=text[:1000],
            ),
            event_id=event_id,
        )
    ]
