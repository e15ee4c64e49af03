"""Finance: invoices reserved orders, refunds returns of invoiced orders. Pure rules.

Inputs: ``OrderPlaced`` (for the priced lines: a reservation carries quantities, not
prices), ``StockReserved`` / ``StockRejected`` from the stock event log, ``ItemReturned``.
The order and its reservation arrive on two topics, so either may come first: whichever
is second issues the invoice. A return may even come before both: it is held and decided
once stock has decided the order. The invoice's ``causation_id`` is always the reservation.

Prices on orders include tax (retail prices); the invoice splits the total into net and
tax at :data:`TAX_RATE`.

State keys, per store:

* ``order:<order_id>`` - priced order awaiting its reservation.
* ``reserved:<order_id>`` - a reservation (as JSON) awaiting its order.
* ``invoice:<order_id>`` - the invoice: id, customer, currency, total, refunded so far.
  Its presence is what makes invoicing idempotent: one invoice per order, ever.
* ``rejected:<order_id>`` - stock rejected the order; a return of it is an alert.
* ``held:<order_id>`` - returns that came before the order was decided, decided with it.
* ``return:<return_id>`` - the return was decided (refund or alert), never twice.
"""

from __future__ import annotations

import uuid
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from pipelines.services.state import KeyValueState, first_time, hold, take_held
from shopstream.events import (
    Alert,
    AlertPayload,
    Envelope,
    InvoiceIssued,
    InvoiceIssuedPayload,
    ItemReturned,
    OrderPlaced,
    RefundIssued,
    RefundIssuedPayload,
    StockRejected,
    StockReserved,
    decode_or_raise,
    derive,
    derived_event_id,
    encode,
)

TAX_RATE = Decimal("0.20")
CENT = Decimal("0.01")

INPUT_TYPES = frozenset({"OrderPlaced", "StockReserved", "StockRejected", "ItemReturned"})


def invoice_id_for(order_id: str) -> str:
    """The one invoice id an order can have (so a second invoice is visible as such)."""
    return business_id("INV", order_id)


def business_id(prefix: str, ref: str) -> str:
    """``PREFIX-ref``, or a stable hash of it when that would exceed the 64-char id limit."""
    readable = f"{prefix}-{ref}"
    if len(readable) <= 64:
        return readable
    return f"{prefix}-{uuid.uuid5(uuid.NAMESPACE_URL, ref).hex}"


def split_tax(total: Decimal) -> tuple[Decimal, Decimal]:
    """``(net, tax)`` of a tax-inclusive total; ``net + tax == total`` to the cent."""
    net = (total / (1 + TAX_RATE)).quantize(CENT, rounding=ROUND_HALF_EVEN)
    return net, total.quantize(CENT) - net


def handle(event: Envelope, state: KeyValueState) -> list[Envelope]:
    """The finance events (and alerts) ``event`` causes; state updated.

    Idempotent on the business id (order, return): a duplicate input returns ``[]``.
    """
    if isinstance(event, OrderPlaced):
        return _on_order(event, state)
    if isinstance(event, StockReserved):
        return _on_reserved(event, state)
    if isinstance(event, StockRejected):
        order_id = event.payload.order_id
        if state.exists(f"invoice:{order_id}"):
            return []
        state.set(f"rejected:{order_id}", 1)
        state.delete(f"order:{order_id}")
        return _decide_held_returns(order_id, state)
    if isinstance(event, ItemReturned):
        return _on_return(event, state)
    return []


def _on_order(order: OrderPlaced, state: KeyValueState) -> list[Envelope]:
    p = order.payload
    if state.exists(f"invoice:{p.order_id}") or state.exists(f"rejected:{p.order_id}"):
        return []
    priced = {"customer_id": p.customer_id, "currency": p.currency, "total": str(p.total)}
    pending = state.get(f"reserved:{p.order_id}")
    if pending is None:
        state.set(f"order:{p.order_id}", priced)
        return []
    state.delete(f"reserved:{p.order_id}")
    reservation = decode_or_raise(pending.encode())
    assert isinstance(reservation, StockReserved)
    return [_invoice(reservation, priced, state), *_decide_held_returns(p.order_id, state)]


def _on_reserved(reserved: StockReserved, state: KeyValueState) -> list[Envelope]:
    order_id = reserved.payload.order_id
    if state.exists(f"invoice:{order_id}"):
        return []
    priced = state.get(f"order:{order_id}")
    if priced is None:
        # The order itself is still on its way (another topic); park the reservation.
        state.set(f"reserved:{order_id}", encode(reserved).decode())
        return []
    state.delete(f"order:{order_id}")
    return [_invoice(reserved, priced, state), *_decide_held_returns(order_id, state)]


def held_returns_key(order_id: str) -> str:
    return f"held:{order_id}"


def _decide_held_returns(order_id: str, state: KeyValueState) -> list[Envelope]:
    """Refund (or alert on) the returns that came before the order was decided."""
    out: list[Envelope] = []
    for ret in take_held(state, held_returns_key(order_id)):
        assert isinstance(ret, ItemReturned)
        out += _on_return(ret, state)
    return out


def _invoice(reserved: StockReserved, priced: dict[str, Any], state: KeyValueState) -> Envelope:
    order_id = reserved.payload.order_id
    total = Decimal(priced["total"])
    net, tax = split_tax(total)
    invoice = derive(
        reserved,
        InvoiceIssued,
        InvoiceIssuedPayload(
            invoice_id=invoice_id_for(order_id),
            order_id=order_id,
            customer_id=priced["customer_id"],
            net_amount=net,
            tax_amount=tax,
            total_amount=total,
            currency=priced["currency"],
        ),
    )
    state.set(
        f"invoice:{order_id}",
        {
            "invoice_id": invoice.payload.invoice_id,
            "customer_id": priced["customer_id"],
            "currency": priced["currency"],
            "total": str(total),
            "refunded": "0.00",
        },
    )
    return invoice


def _on_return(ret: ItemReturned, state: KeyValueState) -> list[Envelope]:
    p = ret.payload
    if state.exists(f"return:{p.return_id}"):
        return []
    invoice: dict[str, Any] | None = state.get(f"invoice:{p.order_id}")
    if invoice is None and not state.exists(f"rejected:{p.order_id}"):
        # Not decided yet (the order or its reservation is on its way, on other topics):
        # hold the return and decide it with the order. An order finance has not heard of
        # at all is worth an alert now - it may never come - and still refunded if it does.
        known = state.exists(f"order:{p.order_id}") or state.exists(f"reserved:{p.order_id}")
        if not hold(state, held_returns_key(p.order_id), ret) or known:
            return []
        return [_alert(ret, "return_for_unknown_order",
                       f"return {p.return_id} refers to order {p.order_id}, which finance "
                       "has not seen: it is refunded if the order is invoiced")]  # fmt: skip
    first_time(state, f"return:{p.return_id}")
    if invoice is None:
        return [_alert(ret, "return_for_rejected_order",
                       f"return {p.return_id} refers to order {p.order_id}, which was "
                       "rejected for lack of stock")]  # fmt: skip
    total, refunded = Decimal(invoice["total"]), Decimal(invoice["refunded"])
    amount = min(p.amount, total - refunded)
    if amount <= 0:
        return [
            _alert(
                ret,
                "refund_exceeds_invoice",
                f"return {p.return_id}: invoice {invoice['invoice_id']} is already fully refunded",
            )
        ]
    state.set(f"invoice:{p.order_id}", {**invoice, "refunded": str(refunded + amount)})
    return [
        derive(
            ret,
            RefundIssued,
            RefundIssuedPayload(
                refund_id=business_id("REF", p.return_id),
                return_id=p.return_id,
                order_id=p.order_id,
                invoice_id=invoice["invoice_id"],
                customer_id=p.customer_id,
                amount=amount,
                currency=invoice["currency"],
            ),
        )
    ]


def _alert(ret: ItemReturned, kind: str, message: str) -> Alert:
    event_id = derived_event_id(ret.event_id, "Alert", kind)
    return derive(
        ret,
        Alert,
        AlertPayload(
            alert_id=str(event_id),
            kind=kind,
            severity="warning",
            subject=ret.payload.order_id,
            message=message,
            details={"return_id": ret.payload.return_id, "amount": float(ret.payload.amount)},
        ),
        event_id=event_id,
    )
