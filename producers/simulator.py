"""The shop simulation: every channel's events, in event-time order, from a seed.

:class:`ShopSimulator` is a pure function of its :class:`SimConfig`: the same
seed, start time, scale, flash-sale setting and channel selection give the same
records (ids, contents, event times, order), however fast they are consumed.
Nothing reads the wall clock and every id comes from the seeded RNG.

The whole shop is always simulated; ``channels`` only chooses which records are
emitted. So ``--channel pos`` yields exactly the POS records of
``--channel all`` with the same seed, and four single-channel processes together
produce what one ``all`` process would.

Flows are consistent, as the downstream services need them:

* every ItemReturned refers to an OrderPlaced emitted earlier by the same
  customer, for a SKU of that order, at most the ordered quantity, at the paid
  price, keyed by the order's store and correlated by its ``order_id``;
* the warehouse channel first emits one ``opening`` Restocked per SKU and
  location (the stock service starts empty and learns opening stock from the
  log), then replenishes a location's SKU after a lead time once the
  simulation's own stock estimate falls below the reorder point;
* stock questions lean on popular SKUs and on SKUs the asker's store is low on.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from producers.record import (
    INGRESS_CHANNELS,
    IngressChannel,
    Record,
    TimestampFormatter,
    uuid4_from_bits,
)
from shopstream.shop.traffic import MINUTE_MS, FlashSale, TrafficModel
from shopstream.shop.world import CATEGORIES, SALES_CHANNELS, Shop, build_shop

MOBILE, POS, WEB = 0, 1, 2
HOUR_MS = 3_600_000

BASKET_SIZES: dict[int, float] = {1: 0.40, 2: 0.27, 3: 0.17, 4: 0.10, 5: 0.06}
"""Order lines per basket and their probabilities (mean 2.15)."""
LINE_QTY: dict[int, float] = {1: 0.80, 2: 0.15, 3: 0.05}
QUESTION_SHARE: tuple[float, float, float] = (0.15, 0.04, 0.10)
"""Share of customer actions that are stock questions, for (mobile, pos, web)."""
PAYMENT: tuple[dict[str, float], ...] = (
    {"wallet": 0.60, "card": 0.35, "gift_card": 0.05},
    {"card": 0.60, "cash": 0.30, "gift_card": 0.05, "wallet": 0.05},
    {"card": 0.75, "wallet": 0.20, "gift_card": 0.05},
)
CLICK_AND_COLLECT = 0.15
"""Share of web and mobile orders collected at the customer's home store."""
POS_AWAY_FROM_HOME = 0.2
"""Share of POS visits (orders and questions) at a store other than the home store."""
LOW_STOCK_QUESTION_SHARE = 0.35
"""Share of questions about a SKU the asked location is low on (if it has any)."""
RETURN_DELAY_MEDIAN_MS = 4 * HOUR_MS
RETURN_DELAY_MIN_MS = 15 * 60_000
RETURN_DELAY_MAX_MS = 72 * HOUR_MS
"""Returns come back 15 min to 3 days after the order (median 4 h): compressed from
real life so that a demo of an hour or two shows the whole order-return-refund flow."""
RESTOCK_LEAD_MS: tuple[tuple[int, int], tuple[int, int]] = (
    (2 * HOUR_MS, 8 * HOUR_MS),  # stores
    (1 * HOUR_MS, 4 * HOUR_MS),  # distribution centres
)
QUESTION_TEMPLATES = (
    "Is the {name} in stock at {place}?",
    "Do you have {name} ({sku}) at {place}?",
    "When will {name} be available at {place}?",
    "How many {name} are left at {place}?",
)

_RETURN, _RESTOCK = 0, 1


def _table(weights: dict, size: int = 1000) -> tuple:  # type: ignore[type-arg]
    """A lookup table for O(1) weighted draws: ``table[int(u * size)]``."""
    out: list[object] = []
    total = sum(weights.values())
    for value, weight in weights.items():
        out += [value] * round(weight / total * size)
    return tuple((out + [out[-1]] * size)[:size])


_BASKET = _table(BASKET_SIZES)
_QTY = _table(LINE_QTY)
_PAYMENT = tuple(_table(p) for p in PAYMENT)
_REASONS = tuple(_table(dict(c.reasons)) for c in CATEGORIES)
_RETURN_RATE = tuple(c.return_rate for c in CATEGORIES)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything the simulated events depend on (and nothing else does)."""

    start_ms: int
    """Event time of the opening stock and the start of traffic (epoch ms, UTC)."""
    seed: int = 1
    channels: frozenset[IngressChannel] = field(default_factory=lambda: frozenset(INGRESS_CHANNELS))
    scale: float = 1.0
    """Multiplies customer actions per simulated second (see :mod:`shopstream.shop.traffic`)."""
    flash_sale: FlashSale | None = None


class ShopSimulator:
    """Generates the shop's records; iterate :meth:`opening` then :meth:`records`."""

    def __init__(self, config: SimConfig, shop: Shop | None = None) -> None:
        self.config = config
        self.shop = shop or build_shop()
        self._rng = random.Random(config.seed)
        self._rnd = self._rng.random
        self._bits = self._rng.getrandbits
        self._ts = TimestampFormatter()
        self._traffic = TrafficModel(config.start_ms, config.scale, config.flash_sale)
        shop = self.shop
        self._emit = tuple(c in config.channels for c in SALES_CHANNELS)
        self._emit_warehouse = "warehouse" in config.channels
        self._keys = tuple(loc.encode() for loc in shop.location_ids)
        # Flat copies of the shop's tables for the hot path (attribute lookups add up).
        self._customer_cum = shop.channel_cum_weights
        self._home = shop.customer_home_store
        self._customer_dc = tuple(shop.region_dc[r] for r in shop.customer_region)
        self._n_stores, self._n_skus = shop.n_stores, shop.n_skus
        self._sku_cum = shop.sku_cum_popularity
        self._sku_total = shop.sku_cum_popularity[-1]
        self._sku_price, self._sku_ids = shop.sku_price, shop.sku_ids
        self._sku_category, self._reorder = shop.sku_category, shop.reorder_point
        self._stock = list(shop.opening_stock)
        self._pending = bytearray(len(self._stock))
        # Per location, the SKUs awaiting a restock ("low stock"), with O(1) removal.
        self._low: list[list[int]] = [[] for _ in range(shop.n_locations)]
        self._low_pos: dict[int, int] = {}
        self._heap: list[tuple[int, int, int, tuple]] = []  # type: ignore[type-arg]
        self._seq = 0
        self._flash = False
        promo_rng = random.Random(f"promo/{config.seed}")
        self._promo = tuple(promo_rng.sample(range(shop.n_skus), 25))
        discount = config.flash_sale.discount if config.flash_sale else 0.0
        self._promo_price = {
            k: round(max(0.49, shop.sku_price[k] * (1 - discount)), 2) for k in self._promo
        }
        self._promo_share = config.flash_sale.promo_share if config.flash_sale else 0.0

    @property
    def promo_skus(self) -> frozenset[str]:
        """SKUs discounted during flash sales (fixed per seed)."""
        return frozenset(self.shop.sku_ids[k] for k in self._promo)

    # --- opening stock ---------------------------------------------------------

    def opening(self) -> Iterator[Record]:
        """One ``opening`` Restocked per location and SKU at the start time.

        Empty unless the warehouse channel is selected. Uses its own RNG, so the
        traffic that follows is the same with or without the opening load.
        """
        if not self._emit_warehouse:
            return
        shop, rng = self.shop, random.Random(f"opening/{self.config.seed}")
        occurred = self._ts(self.config.start_ms)
        for loc, location_id in enumerate(shop.location_ids):
            key = self._keys[loc]
            for k in range(shop.n_skus):
                qty = shop.opening_stock[loc * shop.n_skus + k]
                restock_id = f"RS-{rng.getrandbits(64):016x}"
                yield self._restocked(
                    uuid4_from_bits(rng.getrandbits(128)), occurred, self.config.start_ms,
                    location_id, key, restock_id, shop.sku_ids[k], qty, "opening",
                )  # fmt: skip

    # --- traffic ---------------------------------------------------------------

    def records(self) -> Iterator[Record]:
        """Customer actions and their consequences, forever, in event-time order."""
        rnd, heap, traffic = self._rnd, self._heap, self._traffic
        expo = self._rng.expovariate
        minute = self.config.start_ms // MINUTE_MS
        seg = traffic.segment(minute)
        self._flash = seg.flash
        t = float(self.config.start_ms)
        rate, seg_end, cum = seg.total_per_ms, seg.end_ms, seg.cum_share
        while True:
            # Poisson arrivals, piecewise constant per minute: memorylessness makes
            # "jump to the segment end and redraw" exact.
            if rate > 0:
                t += expo(rate)
            if rate <= 0 or t >= seg_end:
                t = float(seg_end)
                minute += 1
                seg = traffic.segment(minute)
                self._flash = seg.flash
                rate, seg_end, cum = seg.total_per_ms, seg.end_ms, seg.cum_share
                continue
            now = int(t)
            while heap and heap[0][0] <= now:
                due, _, kind, data = heapq.heappop(heap)
                rec = self._return(due, data) if kind == _RETURN else self._restock(due, data)
                if rec is not None:
                    yield rec
            u = rnd()
            channel = MOBILE if u < cum[0] else POS if u < cum[1] else WEB
            if rnd() < QUESTION_SHARE[channel]:
                rec = self._question(now, channel)
            else:
                rec = self._order(now, channel)
            if rec is not None:
                yield rec

    def _schedule(self, due: int, kind: int, data: tuple) -> None:  # type: ignore[type-arg]
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, kind, data))

    def _location_for(self, customer: int, channel: int) -> int:
        shop, rnd = self.shop, self._rnd
        home = shop.customer_home_store[customer]
        if channel == POS:
            return int(rnd() * shop.n_stores) if rnd() < POS_AWAY_FROM_HOME else home
        if rnd() < CLICK_AND_COLLECT:
            return home
        return shop.region_dc[shop.customer_region[customer]]

    def _order(self, now: int, channel: int) -> Record | None:
        # The hot path (about 90% of records): locals and inlined lookups on purpose.
        rnd, shop = self._rnd, self.shop
        cum = self._customer_cum[channel]
        customer = bisect(cum, rnd() * cum[-1])
        home = self._home[customer]
        if channel == POS:
            loc = int(rnd() * self._n_stores) if rnd() < POS_AWAY_FROM_HOME else home
        elif rnd() < CLICK_AND_COLLECT:
            loc = home
        else:
            loc = self._customer_dc[customer]
        n_lines = _BASKET[int(rnd() * 1000)]
        skus: list[int] = []
        qtys: list[int] = []
        prices: list[float] = []
        promo = self._flash and self._promo_share > 0
        sku_cum, sku_total, sku_price = self._sku_cum, self._sku_total, self._sku_price
        while len(skus) < n_lines:
            if promo and rnd() < self._promo_share:
                k = self._promo[int(rnd() * len(self._promo))]
                price = self._promo_price[k]
            else:
                k = bisect(sku_cum, rnd() * sku_total)
                price = sku_price[k]
            if k in skus:
                continue  # one line per SKU
            skus.append(k)
            qtys.append(_QTY[int(rnd() * 1000)])
            prices.append(price)
        payment = _PAYMENT[channel][int(rnd() * 1000)]
        order_id = f"O-{self._bits(64):016x}"
        event_id = uuid4_from_bits(self._bits(128))

        # Mirror the stock service: an order is fulfilled only if every line is
        # available; only fulfilled orders deplete stock and can be returned.
        stock, base = self._stock, loc * self._n_skus
        for k, q in zip(skus, qtys, strict=True):
            if stock[base + k] < q:
                break
        else:
            reorder, pending, category = self._reorder, self._pending, self._sku_category
            for k, q, p in zip(skus, qtys, prices, strict=True):
                i = base + k
                stock[i] -= q
                if stock[i] < reorder[i] and not pending[i]:
                    self._schedule_restock(now, i, loc >= self._n_stores)
                if rnd() < _RETURN_RATE[category[k]]:
                    back = q if q == 1 or rnd() < 0.7 else 1 + int(rnd() * q)
                    self._schedule(
                        now + self._return_delay(), _RETURN,
                        (order_id, customer, loc, k, back, p, channel),
                    )  # fmt: skip
        if not self._emit[channel]:
            return None
        channel_name = SALES_CHANNELS[channel]
        sku_ids = self._sku_ids
        value = _event_json(
            "OrderPlaced", event_id, self._ts(now), channel_name, shop.location_ids[loc], order_id,
            {
                "order_id": order_id,
                "customer_id": shop.customer_ids[customer],
                "lines": [
                    {"sku": sku_ids[k], "qty": q, "unit_price": p}
                    for k, q, p in zip(skus, qtys, prices, strict=True)
                ],
                "currency": "EUR",
                "payment_method": payment,
            },
        )  # fmt: skip
        return Record(
            channel_name, self._keys[loc], value,
            [*_ORDER_HEADERS[channel], ("correlation_id", order_id.encode())],
            now, "OrderPlaced",
        )  # fmt: skip

    def _return_delay(self) -> int:
        delay = self._rng.lognormvariate(math.log(RETURN_DELAY_MEDIAN_MS), 1.0)
        return int(min(max(delay, RETURN_DELAY_MIN_MS), RETURN_DELAY_MAX_MS))

    def _return(self, now: int, data: tuple) -> Record | None:  # type: ignore[type-arg]
        order_id, customer, loc, k, qty, price, channel = data
        shop, rnd = self.shop, self._rnd
        reason = _REASONS[shop.sku_category[k]][int(rnd() * 1000)]
        return_id = f"R-{self._bits(64):016x}"
        event_id = uuid4_from_bits(self._bits(128))
        self._stock[loc * shop.n_skus + k] += qty  # the stock service releases it
        if not self._emit[channel]:
            return None
        channel_name = SALES_CHANNELS[channel]
        value = _event_json(
            "ItemReturned", event_id, self._ts(now), channel_name, shop.location_ids[loc], order_id,
            {
                "return_id": return_id,
                "order_id": order_id,
                "customer_id": shop.customer_ids[customer],
                "sku": shop.sku_ids[k],
                "qty": qty,
                "reason": reason,
                "amount": round(price * qty, 2),
            },
        )  # fmt: skip
        return Record(
            channel_name, self._keys[loc], value,
            _headers(b"ItemReturned", channel_name, order_id), now, "ItemReturned",
        )  # fmt: skip

    def _question(self, now: int, channel: int) -> Record | None:
        shop, rnd = self.shop, self._rnd
        customer = shop.pick_customer(channel, rnd())
        home = shop.customer_home_store[customer]
        if channel == POS:
            loc = int(rnd() * shop.n_stores) if rnd() < POS_AWAY_FROM_HOME else home
        else:
            loc = home if rnd() < 0.7 else shop.region_dc[shop.customer_region[customer]]
        low = self._low[loc]
        if low and rnd() < LOW_STOCK_QUESTION_SHARE:
            k = low[int(rnd() * len(low))]
        else:
            k = shop.pick_sku(rnd())
        template = QUESTION_TEMPLATES[int(rnd() * len(QUESTION_TEMPLATES))]
        question_id = f"Q-{self._bits(64):016x}"
        event_id = uuid4_from_bits(self._bits(128))
        if not self._emit[channel]:
            return None
        channel_name = SALES_CHANNELS[channel]
        store_id = shop.location_ids[loc]
        text = template.format(
            name=shop.sku_names[k], sku=shop.sku_ids[k], place=shop.location_names[loc]
        )
        value = _event_json(
            "StockQuestionAsked", event_id, self._ts(now), channel_name, store_id, question_id,
            {
                "question_id": question_id,
                "customer_id": shop.customer_ids[customer],
                "sku": shop.sku_ids[k],
                "store_id": store_id,
                "text": text,
            },
        )  # fmt: skip
        return Record(
            channel_name, self._keys[loc], value,
            _headers(b"StockQuestionAsked", channel_name, question_id), now, "StockQuestionAsked",
        )  # fmt: skip

    # --- replenishment -------------------------------------------------------------

    def _schedule_restock(self, now: int, i: int, is_dc: bool) -> None:
        self._pending[i] = 1
        low = self._low[i // self.shop.n_skus]
        self._low_pos[i] = len(low)
        low.append(i % self.shop.n_skus)
        lo, hi = RESTOCK_LEAD_MS[is_dc]
        self._schedule(now + lo + int(self._rnd() * (hi - lo)), _RESTOCK, (i,))

    def _restock(self, now: int, data: tuple) -> Record | None:  # type: ignore[type-arg]
        (i,) = data
        shop = self.shop
        loc, k = divmod(i, shop.n_skus)
        self._pending[i] = 0
        low = self._low[loc]
        pos = self._low_pos.pop(i)
        last = low.pop()
        if pos < len(low):  # swap-remove: move the last entry into the hole
            low[pos] = last
            self._low_pos[loc * shop.n_skus + last] = pos
        restock_id = f"RS-{self._bits(64):016x}"
        event_id = uuid4_from_bits(self._bits(128))
        # Fill up to the opening level; returns may already have done it.
        qty = shop.opening_stock[i] - self._stock[i]
        if qty <= 0:
            return None
        self._stock[i] += qty
        if not self._emit_warehouse:
            return None
        return self._restocked(
            event_id, self._ts(now), now, shop.location_ids[loc], self._keys[loc],
            restock_id, shop.sku_ids[k], qty, "replenishment",
        )  # fmt: skip

    @staticmethod
    def _restocked(
        event_id: str,
        occurred: str,
        now: int,
        store_id: str,
        key: bytes,
        restock_id: str,
        sku: str,
        qty: int,
        reason: str,
    ) -> Record:
        value = _event_json(
            "Restocked", event_id, occurred, "system", store_id, restock_id,
            {"restock_id": restock_id, "sku": sku, "qty": qty, "reason": reason},
        )  # fmt: skip
        return Record(
            "warehouse", key, value, _headers(b"Restocked", "system", restock_id), now, "Restocked"
        )


_CHANNEL_BYTES = {name: name.encode() for name in (*SALES_CHANNELS, "system")}
_ORDER_HEADERS = tuple(
    (("event_type", b"OrderPlaced"), ("schema_version", b"1"), ("channel", _CHANNEL_BYTES[c]))
    for c in SALES_CHANNELS
)


def _event_json(
    event_type: str,
    event_id: str,
    occurred_at: str,
    channel: str,
    store_id: str,
    correlation_id: str,
    payload: dict[str, Any],
) -> bytes:
    """A channel event's JSON, envelope as :func:`shopstream.events.encode` writes it,
    without building a model (the contract tests check the two agree)."""
    return orjson.dumps(
        {
            "event_id": event_id,
            "event_type": event_type,
            "schema_version": 1,
            "occurred_at": occurred_at,
            "channel": channel,
            "store_id": store_id,
            "correlation_id": correlation_id,
            "causation_id": "",
            "payload": payload,
        }
    )


def _headers(event_type: bytes, channel: str, correlation_id: str) -> list[tuple[str, bytes]]:
    """The headers of :func:`shopstream.events.headers_for`, without building a model."""
    return [
        ("event_type", event_type),
        ("schema_version", b"1"),
        ("channel", _CHANNEL_BYTES[channel]),
        ("correlation_id", correlation_id.encode()),
    ]
