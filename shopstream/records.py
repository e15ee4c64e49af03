"""Contracts of the records that are not events but that the read side consumes.

Events have theirs in :mod:`shopstream.events`. The analytics windows, the late-event
records, the ``stock.levels`` records and the ``error.*`` headers of dead letters are
read by the DuckDB sink and shown by the dashboard, so they are published too: one
pydantic model each, exported as JSON Schema to ``docs/schemas/records/`` by
``shopstream schemas export`` and checked against what the apps really write
(``tests/unit/test_records.py``).

Window times are epoch milliseconds (UTC), ``window_end`` exclusive; money is euros with
at most two decimals (summed in integer cents by the analytics, so exact).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EpochMs = Annotated[int, Field(ge=0, description="epoch milliseconds, UTC")]
Euros = Annotated[float, Field(ge=0, description="euros, at most two decimals")]
Count = Annotated[int, Field(ge=0)]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Window(_Record):
    window_start: EpochMs
    window_end: EpochMs


class ChannelSales(_Window):
    """``analytics.sales-by-channel``: one 1-minute window x channel with orders."""

    channel: str
    orders: Annotated[int, Field(gt=0)]
    units: Count
    revenue: Euros
    avg_basket: Annotated[float, Field(ge=0)]


class StoreSales(_Window):
    """``analytics.sales-by-store``: one 1-minute window x store with orders."""

    store_id: str
    orders: Annotated[int, Field(gt=0)]
    units: Count
    revenue: Euros
    avg_basket: Annotated[float, Field(ge=0)]


class TopSku(_Window):
    """``analytics.top-skus``: one of the top SKUs of a 15-minute window hopping every minute."""

    sku: str
    category: str
    units: Count
    revenue: Euros
    rank: Annotated[int, Field(ge=1)]


class ReturnsWindow(_Window):
    """``analytics.returns``: one 1-minute window x SKU (or x category) with returns."""

    dimension: Literal["sku", "category"]
    key: str
    category: str
    returns: Count
    units: Count
    refunded: Euros
    trailing_ms: Annotated[int, Field(gt=0)]
    trailing_returned_units: Count
    trailing_sold_units: Count
    return_rate: Annotated[float, Field(ge=0)] | None
    """Returned / sold units over the trailing window; ``None`` when nothing sold."""


class DemandWindow(_Window):
    """``analytics.demand``: stock questions per SKU in a 1-minute window."""

    sku: str
    category: str
    questions: Count
    oos_questions: Count
    """Asked while the SKU was out of stock in the store asked about."""


class LateEvent(_Record):
    """``analytics.late-events``: an input the analytics did not count, and why."""

    reason: Literal["beyond_grace", "unreadable"]
    detail: str
    input: Literal["orders", "returns", "questions", "stock"]
    topic: str
    partition: Count
    offset: Count
    event_id: str | None
    event_type: str | None
    store_id: str | None
    event: Any
    event_time: EpochMs | None = None
    window_start: EpochMs | None = None
    window_end: EpochMs | None = None
    watermark: int | None = None
    grace_ms: Count | None = None
    late_by_ms: int | None = None


class StockLevel(_Record):
    """``stock.levels`` (compacted, key ``store_id/sku``): the level after a movement."""

    store_id: str
    sku: str
    level: Count
    as_of: str
    """Event time of the movement, ISO 8601 UTC with milliseconds."""
    event_id: str
    """The stock event that set this level."""


class DeadLetterHeaders(_Record):
    """The ``error.*`` headers of a ``deadletters`` record (names without the prefix).

    The record's key, value, timestamp and other headers are the original's.
    """

    kind: str
    message: str
    topic: str
    partition: Count
    offset: Count
    app: str
    field: str | None = None
    truncated: Literal["true"] | None = None
    original_size: Count | None = None
    original_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    headers_dropped: Count | None = None

    @classmethod
    def of(cls, headers: list[tuple[str, bytes | None]] | None) -> DeadLetterHeaders:
        """Validate the ``error.*`` headers of a record (``ValidationError`` if not one)."""
        values = {
            name.removeprefix("error."): (value or b"").decode("utf-8", "replace")
            for name, value in headers or ()
            if name.startswith("error.")
        }
        return cls.model_validate(values)


RECORD_MODELS: dict[str, type[_Record]] = {
    "analytics.sales-by-channel": ChannelSales,
    "analytics.sales-by-store": StoreSales,
    "analytics.top-skus": TopSku,
    "analytics.returns": ReturnsWindow,
    "analytics.demand": DemandWindow,
    "analytics.late-events": LateEvent,
    "stock.levels": StockLevel,
    "deadletters (error.* headers)": DeadLetterHeaders,
}
"""Which contract each topic's records follow."""


def record_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every record contract, by model name."""
    return {
        model.__name__: model.model_json_schema(mode="validation")
        for model in RECORD_MODELS.values()
    }
