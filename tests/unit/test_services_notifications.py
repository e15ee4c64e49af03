"""Notifications: one message per newsworthy event, by the channel's medium."""

from __future__ import annotations

import pytest

from pipelines.services import finance, notifications, stock
from pipelines.services.state import MemoryState
from shopstream.events import Channel, NotificationSent
from support import service_samples as s


def invoice_for(channel: Channel):  # type: ignore[no-untyped-def]
    order = s.order(f"o-{channel}", [("SKU-00001", 1, "3.00")], channel=channel)
    st, fin = MemoryState(), MemoryState()
    stock.handle(s.restock("r1", "SKU-00001", 5), st)
    [reserved] = stock.handle(order, st)
    finance.handle(order, fin)
    [invoice] = finance.handle(reserved, fin)
    return invoice


@pytest.mark.parametrize(
    ("channel", "medium"), [("mobile", "push"), ("web", "email"), ("pos", "receipt")]
)
def test_medium_follows_the_channel(channel: Channel, medium: str) -> None:
    invoice = invoice_for(channel)
    [sent] = notifications.handle(invoice, MemoryState())
    assert isinstance(sent, NotificationSent)
    assert sent.payload.medium == medium
    assert sent.payload.about == "InvoiceIssued"
    assert sent.payload.customer_id == "cust-1"
    assert sent.causation_id == str(invoice.event_id)
    assert sent.correlation_id == invoice.correlation_id
    assert sent.payload.notification_id == str(sent.event_id)


def test_each_newsworthy_type_is_notified_and_nothing_else() -> None:
    st = MemoryState()
    rejected = stock.handle(s.order("o1", [("SKU-00001", 1, "3.00")]), MemoryState())[0]
    assert [e.payload.about for e in notifications.handle(rejected, st)] == ["StockRejected"]
    restocked = stock.handle(s.restock("r1", "SKU-00001", 5), MemoryState())[0]
    assert notifications.handle(restocked, st) == []


def test_duplicate_delivery_sends_once() -> None:
    st = MemoryState()
    invoice = invoice_for("web")
    assert len(notifications.handle(invoice, st)) == 1
    assert notifications.handle(invoice, st) == []
