"""Finance rules: one invoice per reserved order, refunds only for invoiced orders."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pipelines.services import finance, stock
from pipelines.services.state import MemoryState
from shopstream.events import (
    Alert,
    Envelope,
    InvoiceIssued,
    OrderPlaced,
    RefundIssued,
    StockReserved,
)
from support import service_samples as s


def reserve(order: OrderPlaced) -> Envelope:
    """The stock decision on ``order`` with plenty of stock."""
    st = MemoryState()
    for line in order.payload.lines:
        stock.handle(s.restock(f"r-{line.sku}", line.sku, 100, store_id=order.store_id), st)
    [decision] = stock.handle(order, st)
    return decision


ORDER = s.order("o1", [("SKU-00001", 2, "9.99"), ("SKU-00002", 1, "20.02")], channel="mobile")


@pytest.mark.parametrize("order_first", [True, False], ids=["order-first", "reservation-first"])
def test_invoice_issued_once_whichever_arrives_first(order_first: bool) -> None:
    st = MemoryState()
    reserved = reserve(ORDER)
    first, second = (ORDER, reserved) if order_first else (reserved, ORDER)
    assert finance.handle(first, st) == []
    [invoice] = finance.handle(second, st)
    assert isinstance(invoice, InvoiceIssued)
    p = invoice.payload
    assert (p.invoice_id, p.order_id, p.customer_id) == ("INV-o1", "o1", "cust-1")
    assert p.total_amount == Decimal("40.00")
    assert p.net_amount + p.tax_amount == p.total_amount
    assert p.net_amount == Decimal("33.33")
    # The chain: order -> reserved -> invoice, one flow.
    assert invoice.causation_id == str(reserved.event_id)
    assert reserved.causation_id == str(ORDER.event_id)
    assert invoice.correlation_id == "o1"
    assert invoice.channel == "mobile"
    # Replays of either input never invoice again.
    assert finance.handle(ORDER, st) == []
    assert finance.handle(reserved, st) == []


def test_rejected_order_is_never_invoiced() -> None:
    st = MemoryState()
    rejected = stock.handle(ORDER, MemoryState())[0]  # no stock at all
    assert rejected.event_type == "StockRejected"
    assert finance.handle(ORDER, st) == []
    assert finance.handle(rejected, st) == []
    assert not st.exists("order:o1")  # nothing left waiting for a reservation


def test_refund_for_an_invoiced_order_capped_at_what_is_left() -> None:
    st = MemoryState()
    finance.handle(ORDER, st)
    finance.handle(reserve(ORDER), st)
    ret = s.return_of(ORDER, "ret1", "SKU-00001", 1, "9.99")
    [refund] = finance.handle(ret, st)
    assert isinstance(refund, RefundIssued)
    assert (refund.payload.refund_id, refund.payload.invoice_id) == ("REF-ret1", "INV-o1")
    assert refund.payload.amount == Decimal("9.99")
    assert refund.causation_id == str(ret.event_id)
    assert refund.correlation_id == "ret1"
    assert finance.handle(ret, st) == []  # duplicate return: no second refund
    [rest] = finance.handle(s.return_of(ORDER, "ret2", "SKU-00002", 1, "99.00"), st)
    assert isinstance(rest, RefundIssued)
    assert rest.payload.amount == Decimal("30.01")
    [alert] = finance.handle(s.return_of(ORDER, "ret3", "SKU-00002", 1, "1.00"), st)
    assert isinstance(alert, Alert)
    assert alert.payload.kind == "refund_exceeds_invoice"


def test_return_for_unknown_order_is_an_alert_not_a_refund() -> None:
    st = MemoryState()
    ret = s.returned("ret1", "ghost", "SKU-00001", 1, "5.00")
    [alert] = finance.handle(ret, st)
    assert isinstance(alert, Alert)
    assert alert.payload.kind == "return_for_unknown_order"
    assert alert.payload.subject == "ghost"
    assert alert.causation_id == str(ret.event_id)
    assert finance.handle(ret, st) == []  # alerted once


def test_return_for_rejected_order_is_an_alert() -> None:
    st = MemoryState()
    finance.handle(ORDER, st)
    finance.handle(stock.handle(ORDER, MemoryState())[0], st)
    [alert] = finance.handle(s.return_of(ORDER, "ret1", "SKU-00001", 1, "9.99"), st)
    assert isinstance(alert, Alert)
    assert alert.payload.kind == "return_for_rejected_order"


def test_tax_split_adds_up_to_the_cent() -> None:
    for cents in range(1, 5000, 7):
        total = Decimal(cents) / 100
        net, tax = finance.split_tax(total)
        assert net + tax == total
        assert abs(net * (1 + finance.TAX_RATE) - total) <= Decimal("0.01")


def test_business_ids_stay_within_the_id_limit() -> None:
    assert finance.invoice_id_for("o1") == "INV-o1"
    long_id = finance.invoice_id_for("x" * 64)
    assert len(long_id) <= 64
    assert long_id == finance.invoice_id_for("x" * 64)


def test_reservation_waits_for_its_order_as_plain_state() -> None:
    st = MemoryState()
    reserved = reserve(ORDER)
    assert isinstance(reserved, StockReserved)
    finance.handle(reserved, st)
    assert isinstance(st.get("reserved:o1"), str)  # JSON text: what a Quix store can hold


@pytest.mark.parametrize("order_first", [True, False])
def test_a_return_before_the_order_is_decided_is_refunded_once_it_is_invoiced(
    order_first: bool,
) -> None:
    """The return comes while the order or its reservation is on its way (another topic,
    a lagging consumer): it is held, not decided on what finance does not know yet."""
    st = MemoryState()
    reserved = stock.handle(ORDER_IN_STOCK, stocked())[0]
    ret = s.return_of(ORDER_IN_STOCK, "ret1", "SKU-00001", 1, "10.00")
    first, second = (ORDER_IN_STOCK, reserved) if order_first else (reserved, ORDER_IN_STOCK)
    assert finance.handle(first, st) == []
    assert finance.handle(ret, st) == []  # held: the order is known, only undecided
    invoice, refund = finance.handle(second, st)
    assert (invoice.event_type, refund.event_type) == ("InvoiceIssued", "RefundIssued")
    assert refund.causation_id == str(ret.event_id)
    assert finance.handle(ret, st) == []  # decided once


def test_a_return_of_an_unseen_order_alerts_and_is_refunded_if_the_order_comes() -> None:
    st = MemoryState()
    reserved = stock.handle(ORDER_IN_STOCK, stocked())[0]
    ret = s.return_of(ORDER_IN_STOCK, "ret1", "SKU-00001", 1, "10.00")
    [alert] = finance.handle(ret, st)
    assert isinstance(alert, Alert) and alert.payload.kind == "return_for_unknown_order"
    assert finance.handle(ret, st) == []  # a redelivery is held once, alerted once
    finance.handle(ORDER_IN_STOCK, st)
    kinds = [e.event_type for e in finance.handle(reserved, st)]
    assert kinds == ["InvoiceIssued", "RefundIssued"]


def test_a_held_return_of_an_order_then_rejected_is_an_alert() -> None:
    st = MemoryState()
    finance.handle(ORDER, st)
    ret = s.return_of(ORDER, "ret1", "SKU-00001", 1, "9.99")
    assert finance.handle(ret, st) == []
    [alert] = finance.handle(stock.handle(ORDER, MemoryState())[0], st)
    assert isinstance(alert, Alert) and alert.payload.kind == "return_for_rejected_order"


def stocked() -> MemoryState:
    levels = MemoryState()
    stock.handle(s.restock("d1", "SKU-00001", 5), levels)
    return levels


ORDER_IN_STOCK = s.order("o-in-stock", [("SKU-00001", 2, "10.00")])
