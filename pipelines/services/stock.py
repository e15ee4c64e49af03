"""Stock: the event-sourced inventory aggregate, one per store (the message key) and SKU.

Pure rules, no Kafka: :func:`handle` turns one input event (``OrderPlaced``,
``ItemReturned``, ``Restocked``) into the stock events it causes, and :func:`evolve`
applies a stock event to the levels. The live service only ever changes a level through
:func:`evolve` on an event it emits, so the emitted log *is* the state:
:func:`rebuild_levels` folds ``stock.events`` from offset zero into exactly the levels the
live service holds.

State keys, per store:

* ``level:<sku>`` - units on hand (absent = 0).
* ``order:<order_id>`` - ``{"status": "reserved"|"rejected", "lines": {sku: qty},
  "released": {sku: qty}, "returns": [return_id, ...]}``: the decision on an order, kept
  so a duplicate order never reserves twice and a return can release what was reserved.
* ``held:<order_id>`` - returns that came before their order, held until it comes.
* ``restock:<restock_id>`` - marks a delivery as booked, so a duplicate never adds twice.
* ``alerting:<sku>`` - ``"low"`` or ``"out"`` while an alert condition holds (hysteresis).
* ``cooldown:<severity>`` - ``{"until": epoch ms, "held": n}``: the store's alert cooldown.

Business records keep no TTL: an order must be known for as long as it can be returned.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from pipelines.services.state import KeyValueState, first_time, hold, take_held
from shopstream.events import (
    Alert,
    AlertPayload,
    Envelope,
    ItemReturned,
    OrderPlaced,
    Restocked,
    Shortage,
    StockMovement,
    StockRejected,
    StockRejectedPayload,
    StockReleased,
    StockReleasedPayload,
    StockReplenished,
    StockReplenishedPayload,
    StockReserved,
    StockReservedPayload,
    derive,
    derived_event_id,
)

LOW_STOCK_THRESHOLD = 5
"""A low-stock condition starts when a reservation takes a SKU's level from above this to at
or below it; a stock-out when it takes it to 0."""
CLEAR_LEVEL = 2 * LOW_STOCK_THRESHOLD
"""A condition clears once the level is back above this (hysteresis: a SKU hovering around
the threshold does not alert on every sale and restock)."""
ALERT_COOLDOWN = timedelta(minutes=10)
"""Per store and severity, at most one alert per this much event time: conditions that start
meanwhile are counted into the next alert instead of each raising one (signals, not a
flood: most store/SKU pairs open with a handful of units)."""

INPUT_TYPES = frozenset({"OrderPlaced", "ItemReturned", "Restocked"})
STOCK_EVENT_TYPES = frozenset(
    {"StockReserved", "StockRejected", "StockReleased", "StockReplenished"}
)

StockEvent = StockReserved | StockRejected | StockReleased | StockReplenished


def level_key(sku: str) -> str:
    return f"level:{sku}"


def handle(event: Envelope, state: KeyValueState) -> list[Envelope]:
    """Decide and apply: the stock events (and alerts) ``event`` causes, state updated.

    Idempotent on the business id of the input (order, return, restock): handling the
    same input twice returns ``[]`` the second time and changes nothing.
    """
    if isinstance(event, OrderPlaced):
        return _on_order(event, state)
    if isinstance(event, ItemReturned):
        return _on_return(event, state)
    if isinstance(event, Restocked):
        return _on_restock(event, state)
    return []


def evolve(state: KeyValueState, event: Envelope) -> None:
    """Apply one stock event to the levels in ``state``; other events change nothing.

    A level back above :data:`CLEAR_LEVEL` clears the SKU's alert condition.
    """
    for movement in movements(event):
        state.set(level_key(movement.sku), movement.level_after)
        if movement.delta > 0 and movement.level_after > CLEAR_LEVEL:
            state.delete(f"alerting:{movement.sku}")


def movements(event: Envelope) -> list[StockMovement]:
    """The level changes a stock event records (none for a rejection)."""
    if isinstance(event, StockReserved):
        return list(event.payload.movements)
    if isinstance(event, StockReleased | StockReplenished):
        return [event.payload.movement]
    return []


def _on_order(order: OrderPlaced, state: KeyValueState) -> list[Envelope]:
    if state.exists(f"order:{order.payload.order_id}"):
        return []
    out = _decide_order(order, state)
    # Returns that came before their order: decided now that the order is (a rejected
    # order's return moves no stock - finance raises its alert).
    for ret in take_held(state, held_returns_key(order.payload.order_id)):
        assert isinstance(ret, ItemReturned)
        out += _on_return(ret, state)
    return out


def held_returns_key(order_id: str) -> str:
    return f"held:{order_id}"


def _decide_order(order: OrderPlaced, state: KeyValueState) -> list[Envelope]:
    """Reserve the whole order or reject it (with the shortages), never in part."""
    p = order.payload
    record_key = f"order:{p.order_id}"
    wanted: dict[str, int] = {}
    for line in p.lines:  # the same SKU may appear on two lines
        wanted[line.sku] = wanted.get(line.sku, 0) + line.qty
    available = {sku: int(state.get(level_key(sku), 0)) for sku in wanted}
    shortages = [
        Shortage(sku=sku, requested=qty, available=available[sku])
        for sku, qty in wanted.items()
        if qty > available[sku]
    ]
    out: list[Envelope] = []
    if shortages:
        out.append(
            derive(
                order,
                StockRejected,
                StockRejectedPayload(
                    order_id=p.order_id, customer_id=p.customer_id, shortages=shortages
                ),
            )
        )
        state.set(
            record_key, {"status": "rejected", "lines": wanted, "released": {}, "returns": []}
        )
        return out
    reserved = derive(
        order,
        StockReserved,
        StockReservedPayload(
            order_id=p.order_id,
            customer_id=p.customer_id,
            movements=[
                StockMovement(sku=sku, delta=-qty, level_after=available[sku] - qty)
                for sku, qty in wanted.items()
            ],
        ),
    )
    evolve(state, reserved)
    state.set(record_key, {"status": "reserved", "lines": wanted, "released": {}, "returns": []})
    out.append(reserved)
    for m in reserved.payload.movements:
        alert = _alert_condition(order, m, state)
        if alert is not None:
            out.append(alert)
    return out


def _alert_condition(order: OrderPlaced, m: StockMovement, state: KeyValueState) -> Alert | None:
    """The alert a reservation's movement raises, if it starts a condition and the store's
    cooldown allows (else the condition is counted into the store's next alert)."""
    before = m.level_after - m.delta
    marker = f"alerting:{m.sku}"
    current = state.get(marker)
    if m.level_after == 0 and before > 0 and current != "out":
        condition, severity = "out", "critical"
    elif before > LOW_STOCK_THRESHOLD >= m.level_after and current is None:
        condition, severity = "low", "warning"
    else:
        return None
    state.set(marker, condition)
    cooldown_key = f"cooldown:{severity}"
    now = int(order.occurred_at.timestamp() * 1000)
    cooldown = state.get(cooldown_key) or {"until": 0, "held": 0}
    if now < int(cooldown["until"]):
        state.set(cooldown_key, {**cooldown, "held": int(cooldown["held"]) + 1})
        return None
    window = int(ALERT_COOLDOWN.total_seconds() * 1000)
    state.set(cooldown_key, {"until": now + window, "held": 0})
    return _low_stock_alert(order, m.sku, m.level_after, severity, int(cooldown["held"]))


def _on_return(ret: ItemReturned, state: KeyValueState) -> list[Envelope]:
    p = ret.payload
    record_key = f"order:{p.order_id}"
    record: dict[str, Any] | None = state.get(record_key)
    if record is None:
        # The order has not come yet (another topic, maybe a lagging consumer): hold the
        # return until it does. A return of an order that never comes stays held and
        # moves no stock; finance raises the alert.
        hold(state, held_returns_key(p.order_id), ret)
        return []
    # A return of a rejected order moves no stock; finance raises the alert.
    if record["status"] != "reserved" or p.return_id in record["returns"]:
        return []
    reserved = int(record["lines"].get(p.sku, 0))
    released = int(record["released"].get(p.sku, 0))
    qty = min(p.qty, reserved - released)
    record = {
        **record,
        "returns": [*record["returns"], p.return_id],
        "released": {**record["released"], p.sku: released + max(qty, 0)},
    }
    state.set(record_key, record)
    if qty <= 0:  # more units returned than were ever reserved: nothing to put back
        return []
    level = int(state.get(level_key(p.sku), 0))
    event = derive(
        ret,
        StockReleased,
        StockReleasedPayload(
            return_id=p.return_id,
            order_id=p.order_id,
            movement=StockMovement(sku=p.sku, delta=qty, level_after=level + qty),
        ),
    )
    evolve(state, event)
    return [event]


def _on_restock(restock: Restocked, state: KeyValueState) -> list[Envelope]:
    p = restock.payload
    if not first_time(state, f"restock:{p.restock_id}"):
        return []
    level = int(state.get(level_key(p.sku), 0))
    event = derive(
        restock,
        StockReplenished,
        StockReplenishedPayload(
            restock_id=p.restock_id,
            movement=StockMovement(sku=p.sku, delta=p.qty, level_after=level + p.qty),
        ),
    )
    evolve(state, event)
    return [event]


def _low_stock_alert(cause: OrderPlaced, sku: str, level: int, severity: str, held: int) -> Alert:
    more = f" (and {held} more SKUs of this store since the last alert)" if held else ""
    state = "out of stock" if level == 0 else f"down to {level} units"
    return derive(
        cause,
        Alert,
        AlertPayload(
            alert_id=str(derived_event_id(cause.event_id, "Alert", f"low_stock/{sku}")),
            kind="low_stock",
            severity=severity,  # type: ignore[arg-type]
            subject=f"{cause.store_id}/{sku}",
            message=f"{sku} at {cause.store_id} is {state}{more}",
            details={
                "sku": sku,
                "level": level,
                "threshold": LOW_STOCK_THRESHOLD,
                "more_skus": held,
                "cooldown_min": ALERT_COOLDOWN.total_seconds() / 60,
            },
        ),
        event_id=derived_event_id(cause.event_id, "Alert", f"low_stock/{sku}"),
    )


class LogInconsistent(ValueError):
    """The stock event log contradicts itself: a movement's level_after does not follow."""


def rebuild_levels(events: Iterable[Envelope]) -> dict[tuple[str, str], int]:
    """Fold the stock event log, in log order per store, into ``{(store_id, sku): level}``.

    Events already folded (same ``event_id``) are skipped: a broker may deliver a record
    twice (see docs/services.md), and re-applying a movement would double it. Every
    movement is checked: ``level before + delta == level_after``; a break raises
    :class:`LogInconsistent`, because then the log no longer explains the state.
    """
    levels: dict[tuple[str, str], int] = {}
    seen: set[str] = set()
    for event in events:
        eid = str(event.event_id)
        if eid in seen:
            continue
        seen.add(eid)
        for m in movements(event):
            key = (event.store_id, m.sku)
            before = levels.get(key, 0)
            if before + m.delta != m.level_after:
                raise LogInconsistent(
                    f"{event.event_type} {eid} for {key}: {before} {m.delta:+d} "
                    f"!= level_after {m.level_after}"
                )
            levels[key] = m.level_after
    return levels
