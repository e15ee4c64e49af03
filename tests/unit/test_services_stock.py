"""Stock rules: reserve or reject, release, replenish, low-stock alerts, the log as truth."""

from __future__ import annotations

import random

import pytest

from pipelines.services import stock
from pipelines.services.state import MemoryState
from shopstream.events import (
    Alert,
    Envelope,
    StockRejected,
    StockReleased,
    StockReplenished,
    StockReserved,
)
from support import service_samples as s


def levels(state: MemoryState) -> dict[str, int]:
    return {
        str(k).removeprefix("level:"): state.get(k)
        for k in state.live_keys()
        if str(k).startswith("level:")
    }


@pytest.fixture
def state() -> MemoryState:
    st = MemoryState()
    stock.handle(s.restock("r1", "SKU-00001", 10), st)
    stock.handle(s.restock("r2", "SKU-00002", 3), st)
    return st


def test_restock_replenishes_and_is_idempotent() -> None:
    st = MemoryState()
    delivery = s.restock("r1", "SKU-00001", 10)
    [event] = stock.handle(delivery, st)
    assert isinstance(event, StockReplenished)
    assert (event.payload.movement.delta, event.payload.movement.level_after) == (10, 10)
    assert event.causation_id == str(delivery.event_id)
    assert event.correlation_id == delivery.correlation_id
    assert stock.handle(delivery, st) == []
    assert levels(st) == {"SKU-00001": 10}


def test_order_in_stock_is_reserved_with_levels_after(state: MemoryState) -> None:
    order = s.order("o1", [("SKU-00001", 2, "5.00"), ("SKU-00002", 1, "7.50")])
    [reserved] = stock.handle(order, state)
    assert isinstance(reserved, StockReserved)
    assert reserved.causation_id == str(order.event_id)
    assert reserved.correlation_id == "o1"
    assert [(m.sku, m.delta, m.level_after) for m in reserved.payload.movements] == [
        ("SKU-00001", -2, 8),
        ("SKU-00002", -1, 2),
    ]
    assert levels(state) == {"SKU-00001": 8, "SKU-00002": 2}


def test_same_sku_on_two_lines_is_reserved_once_in_total(state: MemoryState) -> None:
    order = s.order("o1", [("SKU-00001", 2, "5.00"), ("SKU-00001", 3, "5.00")])
    reserved, alert = stock.handle(order, state)  # 10 -> 5: also at the low-stock mark
    assert isinstance(alert, Alert)
    assert [(m.sku, m.delta, m.level_after) for m in reserved.payload.movements] == [
        ("SKU-00001", -5, 5)
    ]


def test_short_order_is_rejected_whole_and_moves_nothing(state: MemoryState) -> None:
    order = s.order("o1", [("SKU-00001", 2, "5.00"), ("SKU-00002", 4, "7.50")])
    [rejected] = stock.handle(order, state)
    assert isinstance(rejected, StockRejected)
    assert [(x.sku, x.requested, x.available) for x in rejected.payload.shortages] == [
        ("SKU-00002", 4, 3)
    ]
    assert levels(state) == {"SKU-00001": 10, "SKU-00002": 3}


def test_unknown_sku_has_no_stock(state: MemoryState) -> None:
    [rejected] = stock.handle(s.order("o1", [("SKU-09999", 1, "1.00")]), state)
    assert isinstance(rejected, StockRejected)
    assert rejected.payload.shortages[0].available == 0


def test_duplicate_order_never_reserves_twice(state: MemoryState) -> None:
    order = s.order("o1", [("SKU-00001", 2, "5.00")])
    assert len(stock.handle(order, state)) == 1
    assert stock.handle(order, state) == []
    # Same order id under a new event id (a channel resend): still one reservation.
    resent = order.model_copy(update={"event_id": s.sample_id("resend")})
    assert stock.handle(resent, state) == []
    assert levels(state)["SKU-00001"] == 8


def test_low_stock_alert_fires_once_when_crossing_the_threshold(state: MemoryState) -> None:
    out = stock.handle(s.order("o1", [("SKU-00001", 4, "5.00")]), state)  # 10 -> 6
    assert [type(e) for e in out] == [StockReserved]
    out = stock.handle(s.order("o2", [("SKU-00001", 2, "5.00")]), state)  # 6 -> 4
    assert [type(e) for e in out] == [StockReserved, Alert]
    alert = out[1]
    assert isinstance(alert, Alert)
    assert alert.payload.kind == "low_stock"
    assert alert.payload.subject == "store-01/SKU-00001"
    assert alert.causation_id == str(out[0].causation_id)
    out = stock.handle(s.order("o3", [("SKU-00001", 1, "5.00")]), state)  # 4 -> 3
    assert [type(e) for e in out] == [StockReserved]


def test_return_releases_what_was_reserved_once(state: MemoryState) -> None:
    order = s.order("o1", [("SKU-00001", 2, "5.00")])
    stock.handle(order, state)
    ret = s.return_of(order, "ret1", "SKU-00001", 1, "5.00")
    [released] = stock.handle(ret, state)
    assert isinstance(released, StockReleased)
    assert (released.payload.movement.delta, released.payload.movement.level_after) == (1, 9)
    assert released.causation_id == str(ret.event_id)
    assert stock.handle(ret, state) == []  # duplicate return
    # Returning more than is left of the reservation releases only the rest.
    [rest] = stock.handle(s.return_of(order, "ret2", "SKU-00001", 5, "25.00"), state)
    assert rest.payload.movement.delta == 1
    assert stock.handle(s.return_of(order, "ret3", "SKU-00001", 1, "5.00"), state) == []
    assert levels(state)["SKU-00001"] == 10


def test_return_of_unknown_or_rejected_order_moves_no_stock(state: MemoryState) -> None:
    assert stock.handle(s.returned("ret1", "nope", "SKU-00001", 1, "5.00"), state) == []
    rejected = s.order("o9", [("SKU-00002", 9, "1.00")])
    stock.handle(rejected, state)
    assert stock.handle(s.return_of(rejected, "ret2", "SKU-00002", 1, "1.00"), state) == []
    assert levels(state) == {"SKU-00001": 10, "SKU-00002": 3}


def test_a_return_before_its_order_releases_the_units_once_the_order_is_reserved(
    state: MemoryState,
) -> None:
    """Orders and returns come on two topics: a return may come first (a lagging
    consumer). It is held, then decided right after the order."""
    order = s.order("o1", [("SKU-00001", 2, "5.00")])
    ret = s.return_of(order, "ret1", "SKU-00001", 1, "5.00")
    assert stock.handle(ret, state) == []
    assert stock.handle(ret, state) == []  # a redelivery is held once
    reserved, released = stock.handle(order, state)
    assert (type(reserved), type(released)) == (StockReserved, StockReleased)
    assert released.causation_id == str(ret.event_id)
    assert released.payload.movement.level_after == 9  # 10 - 2 + 1
    assert stock.handle(ret, state) == []
    assert levels(state)["SKU-00001"] == 9


def test_a_return_held_for_an_order_then_rejected_moves_no_stock(state: MemoryState) -> None:
    order = s.order("o9", [("SKU-00002", 9, "1.00")])
    assert stock.handle(s.return_of(order, "ret1", "SKU-00002", 1, "1.00"), state) == []
    [rejected] = stock.handle(order, state)
    assert isinstance(rejected, StockRejected)
    assert levels(state)["SKU-00002"] == 3


def test_derived_event_ids_are_deterministic(state: MemoryState) -> None:
    order = s.order("o1", [("SKU-00001", 2, "5.00")])
    [first] = stock.handle(order, state)
    [again] = stock.handle(order, _restocked())
    assert first.event_id == again.event_id


def _restocked() -> MemoryState:
    st = MemoryState()
    stock.handle(s.restock("r1", "SKU-00001", 10), st)
    return st


def random_history(seed: int, n: int = 400) -> list[Envelope]:
    """Orders, returns and restocks over two stores and a few SKUs, with resends."""
    rng = random.Random(seed)
    skus = [f"SKU-{i:05d}" for i in range(1, 6)]
    stores = ["store-01", "store-02"]
    history: list[Envelope] = []
    orders = []
    for i in range(n):
        roll = rng.random()
        store = rng.choice(stores)
        if roll < 0.2:
            history.append(s.restock(f"r{i}", rng.choice(skus), rng.randint(1, 8), store_id=store))
        elif roll < 0.8:
            lines = [
                (rng.choice(skus), rng.randint(1, 3), "2.00") for _ in range(rng.randint(1, 3))
            ]
            o = s.order(f"o{i}", lines, store_id=store, t=i)
            orders.append(o)
            history.append(o)
        elif orders:
            o = rng.choice(orders)
            line = rng.choice(o.payload.lines)
            history.append(s.return_of(o, f"ret{i}", line.sku, rng.randint(1, 3), "2.00", t=i))
        if history and rng.random() < 0.05:
            history.append(rng.choice(history))  # a resend of something seen
    return history


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_folding_the_emitted_log_rebuilds_exactly_the_live_levels(seed: int) -> None:
    live: dict[str, MemoryState] = {}
    log: list[Envelope] = []
    for event in random_history(seed):
        st = live.setdefault(event.store_id, MemoryState())
        log.extend(e for e in stock.handle(event, st) if e.event_type in stock.STOCK_EVENT_TYPES)
    live_levels = {
        (store, sku): level for store, st in live.items() for sku, level in levels(st).items()
    }
    assert stock.rebuild_levels(log) == live_levels
    # A broker delivering part of the log twice changes nothing.
    assert stock.rebuild_levels(log[:50] + log) == live_levels
    assert all(level >= 0 for level in live_levels.values())


def test_rebuild_detects_a_log_that_contradicts_itself() -> None:
    st = MemoryState()
    log = stock.handle(s.restock("r1", "SKU-00001", 5), st)
    log += stock.handle(s.order("o1", [("SKU-00001", 2, "1.00")]), st)
    with pytest.raises(stock.LogInconsistent):
        stock.rebuild_levels(log[1:])  # the reservation without the delivery before it


def alerts_of(out: list[object]) -> list[Alert]:
    return [e for e in out if isinstance(e, Alert)]


def test_a_condition_alerts_once_until_a_restock_clears_it() -> None:
    st = MemoryState()
    stock.handle(s.restock("r1", "SKU-00001", 7), st)
    assert alerts_of(stock.handle(s.order("o1", [("SKU-00001", 2, "1.00")], t=0), st))  # 7 -> 5
    # Back to 7 (not above the clearing level 10), down again: the same condition, no alert.
    stock.handle(s.restock("r2", "SKU-00001", 2, t=60), st)
    assert not alerts_of(stock.handle(s.order("o2", [("SKU-00001", 2, "1.00")], t=3600), st))
    # Restocked above the clearing level: cleared; the next crossing is a new condition.
    stock.handle(s.restock("r3", "SKU-00001", 10, t=3700), st)  # 5 -> 15
    out = stock.handle(s.order("o3", [("SKU-00001", 11, "1.00")], t=7200), st)  # 15 -> 4
    assert [a.payload.severity for a in alerts_of(out)] == ["warning"]


def test_a_store_alerts_at_most_once_per_cooldown_and_counts_what_it_held_back() -> None:
    st = MemoryState()
    for i in range(1, 5):
        stock.handle(s.restock(f"r{i}", f"SKU-0000{i}", 6), st)
    first = alerts_of(stock.handle(s.order("o1", [("SKU-00001", 2, "1.00")], t=0), st))
    held = [
        alerts_of(stock.handle(s.order(f"o{i}", [(f"SKU-0000{i}", 2, "1.00")], t=60 * i), st))
        for i in (2, 3)
    ]
    assert len(first) == 1 and held == [[], []]  # within 10 minutes: counted, not raised
    minutes = stock.ALERT_COOLDOWN.total_seconds()
    [after] = alerts_of(stock.handle(s.order("o4", [("SKU-00004", 2, "1.00")], t=minutes + 1), st))
    assert after.payload.details["more_skus"] == 2
    assert "and 2 more SKUs" in after.payload.message


def test_a_stock_out_is_critical_even_from_below_the_threshold() -> None:
    st = MemoryState()
    stock.handle(s.restock("r1", "SKU-00001", 3), st)
    [alert] = alerts_of(stock.handle(s.order("o1", [("SKU-00001", 3, "1.00")]), st))
    assert alert.payload.severity == "critical" and "out of stock" in alert.payload.message
