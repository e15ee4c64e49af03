"""The simulated shop: deterministic, consistent flows, believable distributions.

Tolerances are stated per test and derived from the sampling error of the run
(counts are Poisson/binomial); they are several standard deviations wide, so
the tests are not flaky, yet far narrower than any real modelling bug.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import orjson
import pytest

from producers.record import Record, to_ms
from producers.simulator import BASKET_SIZES, ShopSimulator, SimConfig
from shopstream.shop.traffic import MINUTES_PER_WEEK, FlashSale, TrafficModel, weekly_shape
from shopstream.shop.world import CATEGORIES, SALES_CHANNELS, build_shop

MONDAY = to_ms(datetime(2025, 3, 3, 0, 0, tzinfo=UTC))
DAY_MS = 86_400_000


def take(sim: ShopSimulator, n: int) -> list[Record]:
    return list(islice(sim.records(), n))


def until(records: Iterator[Record], end_ms: int) -> Iterator[Record]:
    for rec in records:
        if rec.timestamp_ms >= end_ms:
            return
        yield rec


def wire(rec: Record) -> tuple[Any, ...]:
    return (rec.channel, rec.key, rec.value, rec.headers, rec.timestamp_ms, rec.event_type)


# --- determinism ---------------------------------------------------------------------


def test_same_seed_same_records() -> None:
    config = SimConfig(start_ms=MONDAY + 9 * 3_600_000, seed=42, flash_sale=FlashSale())
    first, second = ShopSimulator(config), ShopSimulator(config)
    assert [wire(r) for r in first.opening()] == [wire(r) for r in second.opening()]
    assert [wire(r) for r in take(first, 10_000)] == [wire(r) for r in take(second, 10_000)]


def test_other_seed_other_records() -> None:
    a = take(ShopSimulator(SimConfig(start_ms=MONDAY, seed=1)), 200)
    b = take(ShopSimulator(SimConfig(start_ms=MONDAY, seed=2)), 200)
    assert not {r.value for r in a} & {r.value for r in b}


@pytest.mark.parametrize("channel", ["mobile", "pos", "web", "warehouse"])
def test_a_channel_alone_is_exactly_its_slice_of_all(channel: str) -> None:
    """The whole shop is always simulated: selecting channels only filters records."""
    start = MONDAY + 10 * 3_600_000
    end = start + 3 * 3_600_000
    config = SimConfig(start_ms=start, seed=3, scale=0.2)
    everything = ShopSimulator(config)
    alone = ShopSimulator(replace(config, channels=frozenset({channel})))
    expected = [wire(r) for r in until(everything.records(), end) if r.channel == channel]
    assert expected, "the window must contain records of the channel"
    assert [wire(r) for r in until(alone.records(), end)] == expected


def test_records_come_in_event_time_order() -> None:
    sim = ShopSimulator(SimConfig(start_ms=MONDAY, seed=5))
    times = [r.timestamp_ms for r in take(sim, 30_000)]
    assert times == sorted(times)
    assert times[0] >= MONDAY


# --- one long, small-scale run: five simulated days ------------------------------------


@dataclass
class Run:
    start: int
    end: int
    opening: list[dict[str, Any]]
    events: list[dict[str, Any]]
    fulfilled: dict[str, bool]
    """order_id -> whether the order could be served from the stock folded so far."""
    low_stock_questions: int
    questions: int
    low_pairs_share: float


@pytest.fixture(scope="module")
def run() -> Run:
    """Monday 00:00 to Saturday 00:00 at scale 0.02 (about 60,000 records).

    Folds the log like the stock service will (opening stock, all-or-nothing
    orders, returns and restocks add), to know which orders were served.
    """
    start, end = MONDAY, MONDAY + 5 * DAY_MS
    sim = ShopSimulator(SimConfig(start_ms=start, seed=7, scale=0.02))
    opening = [orjson.loads(r.value) for r in sim.opening()]
    events = [orjson.loads(r.value) for r in until(sim.records(), end)]
    shop = build_shop()
    reorder = {
        (loc, sku): shop.reorder_point[li * shop.n_skus + ki]
        for li, loc in enumerate(shop.location_ids)
        for ki, sku in enumerate(shop.sku_ids)
    }
    level: dict[tuple[str, str], int] = {}
    for e in opening:
        level[(e["store_id"], e["payload"]["sku"])] = e["payload"]["qty"]
    fulfilled: dict[str, bool] = {}
    low_questions = questions = 0
    low_pair_samples: list[float] = []
    for e in events:
        p, store = e["payload"], e["store_id"]
        if e["event_type"] == "OrderPlaced":
            ok = all(level[(store, line["sku"])] >= line["qty"] for line in p["lines"])
            if ok:
                for line in p["lines"]:
                    level[(store, line["sku"])] -= line["qty"]
            fulfilled[p["order_id"]] = ok
        elif e["event_type"] in ("ItemReturned", "Restocked"):
            level[(store, p["sku"])] += p["qty"]
        else:
            questions += 1
            low_questions += level[(store, p["sku"])] < reorder[(store, p["sku"])]
            if questions % 500 == 0:
                low = sum(1 for key, v in level.items() if v < reorder[key])
                low_pair_samples.append(low / len(level))
    return Run(
        start, end, opening, events, fulfilled, low_questions, questions,
        sum(low_pair_samples) / len(low_pair_samples),
    )  # fmt: skip


def test_opening_stock_covers_every_sku_in_every_location(run: Run) -> None:
    shop = build_shop()
    pairs = {(e["store_id"], e["payload"]["sku"]) for e in run.opening}
    assert len(run.opening) == len(pairs) == shop.n_locations * shop.n_skus
    assert {e["payload"]["reason"] for e in run.opening} == {"opening"}
    assert {e["occurred_at"] for e in run.opening} == {"2025-03-03T00:00:00.000Z"}
    assert {e["channel"] for e in run.opening} == {"system"}


def test_replenishments_follow_sales(run: Run) -> None:
    restocks = [e for e in run.events if e["event_type"] == "Restocked"]
    assert len(restocks) > 100
    assert {e["payload"]["reason"] for e in restocks} == {"replenishment"}
    assert all(e["payload"]["qty"] > 0 for e in restocks)
    # Replenishment keeps the shop selling: nearly every order can be served.
    served = sum(run.fulfilled.values()) / len(run.fulfilled)
    assert served > 0.95


def test_every_return_refers_to_an_earlier_served_order_of_that_customer(run: Run) -> None:
    orders: dict[str, dict[str, Any]] = {}
    returned: Counter[tuple[str, str]] = Counter()
    n_returns = 0
    for e in run.events:
        if e["event_type"] == "OrderPlaced":
            orders[e["payload"]["order_id"]] = e
        elif e["event_type"] == "ItemReturned":
            n_returns += 1
            p = e["payload"]
            order = orders.get(p["order_id"])
            assert order is not None, "a return must follow its order in the stream"
            assert run.fulfilled[p["order_id"]], "only served orders come back"
            assert order["payload"]["customer_id"] == p["customer_id"]
            assert order["store_id"] == e["store_id"], "a return lands with its order"
            assert order["channel"] == e["channel"]
            assert e["correlation_id"] == order["correlation_id"] == p["order_id"]
            assert e["occurred_at"] > order["occurred_at"]
            line = next(ln for ln in order["payload"]["lines"] if ln["sku"] == p["sku"])
            returned[(p["order_id"], p["sku"])] += p["qty"]
            assert returned[(p["order_id"], p["sku"])] <= line["qty"]
            assert p["amount"] == round(line["unit_price"] * p["qty"], 2)
    assert n_returns > 1000


def test_channel_mix_follows_the_traffic_model(run: Run) -> None:
    """Each channel's actions within 5 Poisson standard deviations (about 4%) of the model."""
    expected = TrafficModel(run.start, 0.02).expected_actions(run.start, run.end)
    observed = Counter(
        e["channel"] for e in run.events
        if e["event_type"] in ("OrderPlaced", "StockQuestionAsked")
    )  # fmt: skip
    for channel, mean in zip(SALES_CHANNELS, expected, strict=True):
        assert abs(observed[channel] - mean) < 5 * math.sqrt(mean), (channel, observed, expected)


def test_basket_sizes_follow_the_stated_distribution(run: Run) -> None:
    """Each basket size's share within 0.01 of :data:`BASKET_SIZES` (~4 sd at 40k orders)."""
    orders = [e for e in run.events if e["event_type"] == "OrderPlaced"]
    sizes = Counter(len(e["payload"]["lines"]) for e in orders)
    total = sum(sizes.values())
    assert set(sizes) == set(BASKET_SIZES)
    for size, share in BASKET_SIZES.items():
        assert abs(sizes[size] / total - share) < 0.01, (size, sizes[size] / total, share)


def test_return_rate_is_category_dependent_and_as_stated(run: Run) -> None:
    """Returns of served lines ordered in the first two days (all of whose returns are
    due within the run) match the per-category rates within 4 binomial sd."""
    shop = build_shop()
    category_of = {sku: CATEGORIES[shop.sku_category[i]] for i, sku in enumerate(shop.sku_ids)}
    cutoff = run.start + 2 * DAY_MS  # + the 3-day maximum delay = the end of the run
    window: set[str] = set()
    lines: Counter[str] = Counter()
    for e in run.events:
        if (
            e["event_type"] == "OrderPlaced"
            and e["occurred_at"] < "2025-03-05"
            and run.fulfilled[e["payload"]["order_id"]]
        ):
            window.add(e["payload"]["order_id"])
            lines.update(category_of[ln["sku"]].name for ln in e["payload"]["lines"])
    assert cutoff == to_ms(datetime(2025, 3, 5, tzinfo=UTC))
    returns = Counter(
        category_of[e["payload"]["sku"]].name for e in run.events
        if e["event_type"] == "ItemReturned" and e["payload"]["order_id"] in window
    )  # fmt: skip
    rates = {c.name: c.return_rate for c in CATEGORIES}
    expected = sum(lines[c] * rates[c] for c in lines)
    sd = math.sqrt(sum(lines[c] * rates[c] * (1 - rates[c]) for c in lines))
    assert abs(sum(returns.values()) - expected) < 4 * sd
    # Apparel comes back an order of magnitude more often than grocery.
    apparel = returns["apparel"] / lines["apparel"]
    grocery = returns["grocery"] / lines["grocery"]
    assert apparel > 0.15 and grocery < 0.03


def test_popular_skus_dominate_orders(run: Run) -> None:
    shop = build_shop()
    ranked = sorted(range(shop.n_skus), key=lambda k: -shop.sku_popularity[k])
    top = {shop.sku_ids[k] for k in ranked[: shop.n_skus // 5]}
    units = Counter(
        ln["sku"] in top for e in run.events if e["event_type"] == "OrderPlaced"
        for ln in e["payload"]["lines"]
    )  # fmt: skip
    assert units[True] / (units[True] + units[False]) > 0.6, "top 20% of SKUs sell most"


def test_stock_questions_cluster_on_popular_and_low_stock_skus(run: Run) -> None:
    shop = build_shop()
    ranked = sorted(range(shop.n_skus), key=lambda k: -shop.sku_popularity[k])
    top = {shop.sku_ids[k] for k in ranked[: shop.n_skus // 10]}
    asked = [e["payload"]["sku"] for e in run.events if e["event_type"] == "StockQuestionAsked"]
    assert sum(sku in top for sku in asked) / len(asked) > 0.4, "top 10% of SKUs: >40% of questions"
    low_share = run.low_stock_questions / run.questions
    assert low_share > 10 * run.low_pairs_share, (low_share, run.low_pairs_share)


# --- traffic curves -----------------------------------------------------------------------


def test_traffic_curves_have_their_daily_shape() -> None:
    mobile, pos, web = (weekly_shape(c) for c in SALES_CHANNELS)
    for shape in (mobile, pos, web):
        assert len(shape) == MINUTES_PER_WEEK
        assert math.isclose(sum(shape) / len(shape), 1.0)
    wednesday = 2 * 1440

    def at(shape: tuple[float, ...], hour: int, day: int = wednesday) -> float:
        return shape[day + hour * 60]

    assert at(web, 20) > 3 * at(web, 4), "web peaks in the evening"
    assert at(web, 20) > at(web, 11)
    assert at(pos, 3) == at(pos, 22) == 0.0, "stores are closed at night"
    assert at(pos, 18) > at(pos, 9) > 0
    assert at(pos, 9, day=6 * 1440) == 0.0, "Sunday opens at 10"
    assert at(mobile, 8) > at(mobile, 4), "mobile has a commute peak"


def test_flash_sale_bursts_online_traffic_and_promo_skus() -> None:
    start = MONDAY + 12 * 3_600_000
    sale = FlashSale()
    model = TrafficModel(start, 1.0, sale)
    minute = start // 60_000
    (_, _, web_before), _ = model.rates(minute)
    (_, _, web_during), flash = model.rates(minute + sale.first_after + 1)
    assert flash and web_during == pytest.approx(web_before * sale.multiplier[2], rel=0.05)

    sim = ShopSimulator(SimConfig(start_ms=start, seed=9, flash_sale=sale))
    sale_start = start + sale.first_after * 60_000
    sale_end = sale_start + sale.duration * 60_000
    promo = sim.promo_skus
    promo_lines = total_lines = 0
    for rec in until(sim.records(), sale_end):
        if rec.timestamp_ms >= sale_start and rec.event_type == "OrderPlaced":
            for line in orjson.loads(rec.value)["payload"]["lines"]:
                total_lines += 1
                promo_lines += line["sku"] in promo
    assert promo_lines / total_lines > 0.5
