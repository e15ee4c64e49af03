"""Product and traffic knowledge the analytics need but events do not carry.

* **Category of a SKU.** Events carry only the SKU; the product catalog of record
  is the simulated shop's (:mod:`shopstream.shop.world`, one fixed world built from its
  own seed). The analytics take a plain ``sku -> category`` function, loaded here
  once at start-up; SKUs the catalog does not know fall in ``"unknown"``.
* **Traffic curve of a channel.** "No orders for ten minutes" is alarming at noon
  and normal at 3 a.m. for the stores. The silence alert scales a channel's
  recent order rate by the channel's relative intensity per minute (the weekly
  shape the simulators draw traffic from, :mod:`shopstream.shop.traffic`).

Both are injected into the engines (tests pass their own); the shop's reference
data lives in the core (:mod:`shopstream.shop`), shared with the simulators.
"""

from __future__ import annotations

from collections.abc import Callable

from shopstream.shop.traffic import MINUTE_MS, minute_of_week, weekly_shape
from shopstream.shop.world import CATEGORIES, build_shop

CategoryOf = Callable[[str], str]
"""``sku -> category name``."""
TrafficCurve = Callable[[str, int], float]
"""``(channel, minute start in epoch ms) -> relative intensity`` (any positive scale)."""

UNKNOWN_CATEGORY = "unknown"


def flat_curve(channel: str, minute_ms: int) -> float:
    """Every minute alike: silence alerts then compare with the recent rate only."""
    return 1.0


def category_lookup(mapping: dict[str, str]) -> CategoryOf:
    """A ``sku -> category`` function over ``mapping``; unknown SKUs -> ``"unknown"``."""
    get = mapping.get

    def category_of(sku: str) -> str:
        return get(sku, UNKNOWN_CATEGORY)

    return category_of


def load_category_of() -> CategoryOf:
    """The shop catalog's SKU categories (see the module docstring)."""
    shop = build_shop()
    return category_lookup(
        {sku: CATEGORIES[c].name for sku, c in zip(shop.sku_ids, shop.sku_category, strict=True)}
    )


def load_traffic_curve() -> TrafficCurve:
    """The channels' weekly traffic shape (see the module docstring)."""
    shapes: dict[str, tuple[float, ...]] = {}

    def curve(channel: str, minute_ms: int) -> float:
        shape = shapes.get(channel)
        if shape is None:
            try:
                shape = shapes[channel] = weekly_shape(channel)
            except KeyError:  # a channel the simulators do not model: no daily rhythm
                return 1.0
        return shape[minute_of_week(minute_ms // MINUTE_MS)]

    return curve
