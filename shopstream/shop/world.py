"""The simulated shop: catalog, stores, distribution centres and customers.

The shop is one fixed world, built from :data:`SHOP_SEED` and independent of the
simulation's ``--seed``: every run, whatever its seed or channel selection, sells
the same SKUs at the same prices from the same stores to the same customers, and
opens with the same stock. The seed only varies who buys what, and when.

Everything is held in flat tuples indexed by small integers (SKU index, store
index, customer index) because the simulator's hot path reads them tens of
thousands of times per second.
"""

from __future__ import annotations

import math
import random
from bisect import bisect
from dataclasses import dataclass
from functools import cache
from itertools import accumulate
from typing import Literal

from shopstream.events import ReturnReason

SHOP_SEED = 20_240_601
"""Seed of the world (not of the traffic): change it and every SKU, price and stock changes."""

SalesChannel = Literal["mobile", "pos", "web"]
SALES_CHANNELS: tuple[SalesChannel, ...] = ("mobile", "pos", "web")

N_SKUS = 600
N_STORES = 24
N_CUSTOMERS = 10_000
REGIONS: tuple[str, ...] = ("NORTH", "SOUTH", "EAST", "WEST")
CITIES: dict[str, tuple[str, ...]] = {
    "NORTH": ("Leeds", "York", "Hull", "Durham", "Carlisle", "Harrogate"),
    "SOUTH": ("Brighton", "Exeter", "Bath", "Poole", "Dover", "Winchester"),
    "EAST": ("Norwich", "Ipswich", "Cambridge", "Colchester", "Ely", "Lowestoft"),
    "WEST": ("Bristol", "Cardiff", "Gloucester", "Hereford", "Swansea", "Taunton"),
}


@dataclass(frozen=True, slots=True)
class Category:
    """A product category: how many SKUs, what they cost, how often they come back."""

    name: str
    sku_share: float
    price_range: tuple[float, float]
    return_rate: float
    """Probability that one order line of this category is returned (partly or whole)."""
    reasons: tuple[tuple[ReturnReason, float], ...]
    nouns: tuple[str, ...]


CATEGORIES: tuple[Category, ...] = (
    Category("apparel", 0.20, (9.99, 89.99), 0.22,
             (("wrong_size", 0.50), ("changed_mind", 0.25), ("not_as_described", 0.15),
              ("damaged", 0.05), ("late_delivery", 0.05)),
             ("T-shirt", "Hoodie", "Jeans", "Jacket", "Dress", "Sweater")),
    Category("footwear", 0.10, (24.99, 149.99), 0.18,
             (("wrong_size", 0.60), ("changed_mind", 0.20), ("damaged", 0.10),
              ("not_as_described", 0.10)),
             ("Trainer", "Boot", "Sandal", "Loafer", "Running shoe")),
    Category("electronics", 0.10, (14.99, 899.99), 0.08,
             (("damaged", 0.35), ("not_as_described", 0.35), ("changed_mind", 0.20),
              ("late_delivery", 0.10)),
             ("Headphones", "Speaker", "Charger", "Tablet", "Camera", "Smartwatch")),
    Category("home", 0.12, (4.99, 199.99), 0.06,
             (("damaged", 0.45), ("not_as_described", 0.25), ("changed_mind", 0.30)),
             ("Lamp", "Cushion", "Pan", "Towel set", "Vase", "Kettle")),
    Category("beauty", 0.10, (2.99, 59.99), 0.03,
             (("damaged", 0.40), ("changed_mind", 0.40), ("not_as_described", 0.20)),
             ("Shampoo", "Face cream", "Perfume", "Lipstick", "Soap")),
    Category("toys", 0.08, (4.99, 79.99), 0.05,
             (("damaged", 0.40), ("changed_mind", 0.35), ("not_as_described", 0.25)),
             ("Puzzle", "Board game", "Teddy", "Building set", "Kite")),
    Category("sports", 0.10, (9.99, 249.99), 0.09,
             (("wrong_size", 0.35), ("damaged", 0.25), ("changed_mind", 0.25),
              ("not_as_described", 0.15)),
             ("Yoga mat", "Football", "Racket", "Bike helmet", "Dumbbell")),
    Category("grocery", 0.10, (0.49, 19.99), 0.01,
             (("damaged", 0.80), ("not_as_described", 0.20)),
             ("Coffee", "Tea", "Olive oil", "Chocolate", "Pasta", "Granola")),
    Category("books", 0.05, (4.99, 39.99), 0.02,
             (("damaged", 0.50), ("changed_mind", 0.30), ("late_delivery", 0.20)),
             ("Novel", "Cookbook", "Atlas", "Guide", "Comic")),
    Category("garden", 0.05, (3.99, 149.99), 0.05,
             (("damaged", 0.50), ("not_as_described", 0.30), ("changed_mind", 0.20)),
             ("Hose", "Planter", "Seeds", "Shears", "Bird feeder")),
)  # fmt: skip

ADJECTIVES = ("Classic", "Urban", "Eco", "Pro", "Lite", "Nordic", "Sunny", "Smart", "Cosy")


@dataclass(frozen=True, slots=True)
class Persona:
    """A kind of customer: which channels they use, in what proportion."""

    name: str
    share: float
    channel_weights: tuple[float, float, float]
    """Weights for (mobile, pos, web), in :data:`SALES_CHANNELS` order."""


PERSONAS: tuple[Persona, ...] = (
    Persona("app-first", 0.30, (0.70, 0.10, 0.20)),
    Persona("store-goer", 0.30, (0.10, 0.80, 0.10)),
    Persona("web-shopper", 0.25, (0.15, 0.15, 0.70)),
    Persona("omnichannel", 0.15, (0.34, 0.33, 0.33)),
)

STORE_STOCK_SCALE = 60.0
"""Opening stock of the most popular SKU in an average store, in units."""
DC_STOCK_FACTOR = 12
"""Distribution centres hold this many times a store's stock."""
REORDER_FRACTION = 0.3
"""A location reorders a SKU when its level falls below this share of its opening stock."""


@dataclass(frozen=True, slots=True)
class Shop:
    """The whole world, as flat tuples indexed by SKU, location and customer index.

    Locations are the physical stores (``ST-001``...) followed by the distribution
    centres (``DC-NORTH``...): web and mobile orders ship from the customer's
    regional DC or are collected at their home store.
    """

    sku_ids: tuple[str, ...]
    sku_names: tuple[str, ...]
    sku_category: tuple[int, ...]
    sku_price: tuple[float, ...]
    sku_popularity: tuple[float, ...]
    """Relative demand per SKU (Zipf-like: a few SKUs sell most)."""
    sku_cum_popularity: tuple[float, ...]

    location_ids: tuple[str, ...]
    location_names: tuple[str, ...]
    n_stores: int
    """Locations ``0..n_stores-1`` are stores; the rest are distribution centres."""
    region_dc: tuple[int, ...]
    """Location index of each region's distribution centre, in :data:`REGIONS` order."""

    opening_stock: tuple[int, ...]
    """Opening level per ``location * N_SKUS + sku``."""
    reorder_point: tuple[int, ...]

    customer_ids: tuple[str, ...]
    customer_persona: tuple[int, ...]
    customer_home_store: tuple[int, ...]
    customer_region: tuple[int, ...]
    channel_cum_weights: tuple[tuple[float, ...], ...]
    """Per sales channel, cumulative weights over customers (activity x preference)."""

    @property
    def n_skus(self) -> int:
        return len(self.sku_ids)

    @property
    def n_locations(self) -> int:
        return len(self.location_ids)

    def pick_sku(self, u: float) -> int:
        """The SKU at quantile ``u`` in [0, 1) of the popularity distribution."""
        cum = self.sku_cum_popularity
        return bisect(cum, u * cum[-1])

    def pick_customer(self, channel: int, u: float) -> int:
        """The customer at quantile ``u`` of the channel's customer distribution."""
        cum = self.channel_cum_weights[channel]
        return bisect(cum, u * cum[-1])


def _price(rng: random.Random, lo: float, hi: float) -> float:
    # Log-uniform so cheap items are common; shop prices end in .49 or .99.
    raw = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    whole = math.floor(raw)
    cents = 0.49 if raw - whole < 0.5 else 0.99
    return round(max(whole + cents, lo), 2)


@cache
def build_shop(seed: int = SHOP_SEED) -> Shop:
    """Build the world (about 30 ms, cached): same ``seed``, same shop."""
    rng = random.Random(seed)

    sku_category: list[int] = []
    for cat_index, cat in enumerate(CATEGORIES):
        sku_category += [cat_index] * round(cat.sku_share * N_SKUS)
    sku_category = (sku_category + [0] * N_SKUS)[:N_SKUS]
    rng.shuffle(sku_category)
    sku_ids = tuple(f"SKU-{10001 + i:05d}" for i in range(N_SKUS))
    sku_names = tuple(
        f"{rng.choice(ADJECTIVES)} {rng.choice(CATEGORIES[c].nouns)} {rng.randint(10, 99)}"
        for c in sku_category
    )
    sku_price = tuple(_price(rng, *CATEGORIES[c].price_range) for c in sku_category)
    # Zipf(s=0.9) over a random ranking (popularity not tied to the id): the top 20%
    # of SKUs take about 70% of the lines, the top one about 10%.
    ranks = list(range(1, N_SKUS + 1))
    rng.shuffle(ranks)
    sku_popularity = tuple(1.0 / r**0.9 for r in ranks)

    location_ids: list[str] = []
    location_names: list[str] = []
    store_region: list[int] = []
    for region_index, region in enumerate(REGIONS):
        for city in CITIES[region]:
            location_ids.append(f"ST-{len(location_ids) + 1:03d}")
            location_names.append(f"{city} store")
            store_region.append(region_index)
    n_stores = len(location_ids)
    assert n_stores == N_STORES
    region_dc = []
    for region in REGIONS:
        region_dc.append(len(location_ids))
        location_ids.append(f"DC-{region}")
        location_names.append(f"{region.title()} distribution centre")

    top = max(sku_popularity)
    opening: list[int] = []
    for loc in range(len(location_ids)):
        size = rng.uniform(0.7, 1.4) * (DC_STOCK_FACTOR if loc >= n_stores else 1)
        for k in range(N_SKUS):
            level = STORE_STOCK_SCALE * size * math.sqrt(sku_popularity[k] / top)
            opening.append(max(4, round(level * rng.uniform(0.8, 1.2))))
    reorder = tuple(max(1, math.floor(level * REORDER_FRACTION)) for level in opening)

    persona_cum = list(accumulate(p.share for p in PERSONAS))
    customer_persona: list[int] = []
    customer_home: list[int] = []
    customer_region: list[int] = []
    activity: list[float] = []
    for _ in range(N_CUSTOMERS):
        customer_persona.append(bisect(persona_cum, rng.random() * persona_cum[-1]))
        home = rng.randrange(n_stores)
        customer_home.append(home)
        customer_region.append(store_region[home])
        activity.append(rng.lognormvariate(0.0, 0.9))  # a few customers buy a lot
    channel_cum = tuple(
        tuple(
            accumulate(
                activity[i] * PERSONAS[customer_persona[i]].channel_weights[c]
                for i in range(N_CUSTOMERS)
            )
        )
        for c in range(len(SALES_CHANNELS))
    )

    return Shop(
        sku_ids=sku_ids,
        sku_names=sku_names,
        sku_category=tuple(sku_category),
        sku_price=sku_price,
        sku_popularity=sku_popularity,
        sku_cum_popularity=tuple(accumulate(sku_popularity)),
        location_ids=tuple(location_ids),
        location_names=tuple(location_names),
        n_stores=n_stores,
        region_dc=tuple(region_dc),
        opening_stock=tuple(opening),
        reorder_point=reorder,
        customer_ids=tuple(f"C-{i + 1:05d}" for i in range(N_CUSTOMERS)),
        customer_persona=tuple(customer_persona),
        customer_home_store=tuple(customer_home),
        customer_region=tuple(customer_region),
        channel_cum_weights=channel_cum,
    )
