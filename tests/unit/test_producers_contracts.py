"""What the simulators put on the wire is what the contracts accept.

The hot path builds dicts and orjson bytes instead of pydantic models (for speed),
so these tests decode every record of a run with :func:`shopstream.events.decode`
and check envelope rules, keys, headers and Kafka timestamps against the models.
"""

from __future__ import annotations

import random
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from itertools import islice

import pytest

from producers.record import Record, TimestampFormatter, from_ms, to_ms, uuid4_from_bits
from producers.simulator import ShopSimulator, SimConfig
from shopstream.events import (
    DecodeError,
    ItemReturned,
    OrderPlaced,
    Restocked,
    StockQuestionAsked,
    decode,
    format_timestamp,
    headers_for,
)
from shopstream.shop.traffic import FlashSale
from shopstream.shop.world import N_CUSTOMERS, N_SKUS, N_STORES, build_shop
from shopstream.topics import INGRESS_BY_CHANNEL

START = to_ms(datetime(2025, 3, 7, 9, 0, tzinfo=UTC))  # a Friday morning

ENVELOPE_CHANNEL = {"mobile": "mobile", "pos": "pos", "web": "web", "warehouse": "system"}


@pytest.fixture(scope="module")
def run_records() -> list[Record]:
    """Opening stock and 40,000 traffic records, with a flash sale for promo prices."""
    sim = ShopSimulator(SimConfig(start_ms=START, seed=11, flash_sale=FlashSale()))
    return [*sim.opening(), *islice(sim.records(), 40_000)]


def test_every_record_of_a_run_decodes_to_its_contract(run_records: list[Record]) -> None:
    classes = {
        "OrderPlaced": OrderPlaced,
        "ItemReturned": ItemReturned,
        "StockQuestionAsked": StockQuestionAsked,
        "Restocked": Restocked,
    }
    seen_ids: set[uuid.UUID] = set()
    for rec in run_records:
        event = decode(rec.value)
        assert not isinstance(event, DecodeError), (event, rec.value[:300])
        assert isinstance(event, classes[rec.event_type])
        assert rec.event_type in INGRESS_BY_CHANNEL[rec.channel].event_types
        assert event.channel == ENVELOPE_CHANNEL[rec.channel]
        assert rec.key == event.store_id.encode(), "ingress is keyed by store_id"
        assert rec.headers == headers_for(event)
        assert rec.timestamp_ms == to_ms(event.occurred_at), "Kafka timestamp is event time"
        assert event.causation_id == "", "channel events have no cause"
        assert event.event_id.version == 4
        assert event.event_id not in seen_ids
        seen_ids.add(event.event_id)


def test_correlation_ids_tie_each_flow_together(run_records: list[Record]) -> None:
    for rec in run_records:
        event = decode(rec.value)
        assert not isinstance(event, DecodeError)
        if isinstance(event, OrderPlaced | ItemReturned):
            assert event.correlation_id == event.payload.order_id
        elif isinstance(event, StockQuestionAsked):
            assert event.correlation_id == event.payload.question_id
            assert event.payload.store_id == event.store_id
        elif isinstance(event, Restocked):
            assert event.correlation_id == event.payload.restock_id


def test_money_has_two_decimals_and_skus_match_the_contract(run_records: list[Record]) -> None:
    cents = Decimal("0.01")
    for rec in run_records[::7]:
        event = decode(rec.value)
        if isinstance(event, OrderPlaced):
            for line in event.payload.lines:
                assert line.unit_price == line.unit_price.quantize(cents)
                assert re.fullmatch(r"SKU-\d{5}", line.sku)
        elif isinstance(event, ItemReturned):
            assert event.payload.amount == event.payload.amount.quantize(cents)


def test_the_shop_is_as_big_as_the_issue_asks() -> None:
    shop = build_shop()
    assert shop.n_skus == N_SKUS >= 500
    assert shop.n_stores == N_STORES >= 20
    assert len(shop.customer_ids) == N_CUSTOMERS >= 10_000
    assert len(set(shop.sku_ids)) == shop.n_skus
    assert all(re.fullmatch(r"SKU-\d{5}", s) for s in shop.sku_ids)
    assert all(p > 0 and round(p, 2) == p for p in shop.sku_price)
    assert [loc for loc in shop.location_ids if loc.startswith("DC-")] == [
        "DC-NORTH", "DC-SOUTH", "DC-EAST", "DC-WEST",
    ]  # fmt: skip
    assert build_shop() is shop, "built once per process"


def test_timestamp_formatter_matches_the_contract_format() -> None:
    fmt = TimestampFormatter()
    rng = random.Random(5)
    for _ in range(2000):
        ms = START + rng.randrange(0, 10 * 86_400_000)
        assert fmt(ms) == format_timestamp(from_ms(ms))
        assert to_ms(from_ms(ms)) == ms


def test_seeded_uuids_are_valid_version_4() -> None:
    rng = random.Random(1)
    for _ in range(1000):
        text = uuid4_from_bits(rng.getrandbits(128))
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
