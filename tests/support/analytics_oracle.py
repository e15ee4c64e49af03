"""The analytics aggregates computed in batch with polars, from a table of input records.

This is the independent reference the tests hold the streaming engines to, and a
way to recompute any window from history. It shares definitions with the stream
(:class:`AnalyticsConfig`, the category lookup) but no code: lateness,
panes, hopping and trailing windows and the as-of stock lookup are written here
as table operations, straight from the definitions in ``docs/analytics.md``:

* pane = event time floored to ``pane_ms``; a window is a pane or a run of panes;
* an input record is *late* when its pane end + ``grace_ms`` <= the watermark of
  its topic-partition just before it arrived: max(highest event time seen before
  it on that topic-partition, highest tick for that input so far); late records
  are not counted;
* a question is about an out-of-stock SKU when the last on-time stock fact for
  that store and SKU at or before the question's time (ties: later offset)
  states level 0.

Arrival order: ``seq`` orders the records of one partition (ticks among events).
Only the order within each topic-partition and each tick's place relative to it
matter - what Kafka fixes, whatever order the consumer interleaves topics in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from pipelines.analytics.catalog import CategoryOf, category_lookup
from pipelines.analytics.config import AnalyticsConfig


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One record as the app consumed it.

    ``kind`` ``"tick"`` carries ``watermark`` and the ``inputs`` it raises (all if None).
    """

    kind: str
    partition: int
    offset: int
    seq: int
    value: Mapping[str, Any] | None = None
    watermark: int | None = None
    inputs: tuple[str, ...] | None = None


INPUTS = ("orders", "returns", "questions", "stock")
_EVENT_SCHEMA = {
    "kind": pl.String,
    "partition": pl.Int64,
    "offset": pl.Int64,
    "seq": pl.Int64,
    "t": pl.Int64,
    "event_id": pl.String,
} | {f"tick_{k}": pl.Int64 for k in INPUTS}


def _flatten(
    records: Iterable[InputRecord],
) -> tuple[pl.DataFrame, dict[str, list[dict[str, Any]]]]:
    """The arrival table (one row per record) and detail rows keyed by (kind, partition, offset)."""
    rows: list[dict[str, Any]] = []
    details: dict[str, list[dict[str, Any]]] = {
        "lines": [],
        "returns": [],
        "questions": [],
        "stock": [],
    }
    for r in records:
        if r.kind == "tick":
            raised = INPUTS if r.inputs is None else r.inputs
            rows.append(
                {
                    "kind": "tick",
                    "partition": r.partition,
                    "offset": r.offset,
                    "seq": r.seq,
                    "t": None,
                    "event_id": None,
                    "occurred_at": None,
                }
                | {f"tick_{k}": r.watermark if k in raised else None for k in INPUTS}
            )
            continue
        v = r.value or {}
        rows.append(
            {
                "kind": r.kind,
                "partition": r.partition,
                "offset": r.offset,
                "seq": r.seq,
                "t": None,
                "event_id": v.get("event_id"),
                "occurred_at": v["occurred_at"],
            }
        )
        key = {"kind": r.kind, "partition": r.partition, "offset": r.offset}
        p = v["payload"]
        if r.kind == "orders":
            for line in p["lines"]:
                details["lines"].append(
                    key
                    | {
                        "channel": v["channel"],
                        "store_id": v["store_id"],
                        "order_id": p["order_id"],
                        "sku": line["sku"],
                        "qty": line["qty"],
                        "price": str(line["unit_price"]),
                    }
                )
        elif r.kind == "returns":
            details["returns"].append(
                key | {"sku": p["sku"], "qty": p["qty"], "amount": str(p["amount"])}
            )
        elif r.kind == "questions":
            details["questions"].append(key | {"store_id": p["store_id"], "sku": p["sku"]})
        elif r.kind == "stock":
            facts: list[tuple[str, int]] = []
            etype = v["event_type"]
            if etype == "StockReserved":
                facts = [(m["sku"], m["level_after"]) for m in p["movements"]]
            elif etype in ("StockReleased", "StockReplenished"):
                facts = [(p["movement"]["sku"], p["movement"]["level_after"])]
            elif etype == "StockRejected":
                facts = [(s["sku"], s["available"]) for s in p["shortages"]]
            for i, (sku, level) in enumerate(facts):
                details["stock"].append(
                    key | {"store_id": v["store_id"], "sku": sku, "level": level, "fact": i}
                )
    frame = pl.DataFrame(rows, schema=_EVENT_SCHEMA | {"occurred_at": pl.String})
    frame = frame.with_columns(
        t=pl.col("occurred_at")
        .str.to_datetime("%Y-%m-%dT%H:%M:%S%.3fZ", time_zone="UTC", time_unit="ms")
        .dt.epoch("ms")
    )
    return frame, details


def _cents(column: str) -> pl.Expr:
    # Decimal text -> exact cents (no binary floating point on the way).
    return (pl.col(column).str.to_decimal(scale=2) * 100).cast(pl.Int64)


class BatchAnalytics:
    """All aggregates of one input table, as polars frames shaped like the stream's outputs."""

    def __init__(
        self,
        records: Iterable[InputRecord],
        config: AnalyticsConfig,
        category_of: CategoryOf | None = None,
    ) -> None:
        self.config = config
        self.category_of = category_of or category_lookup({})
        frame, details = _flatten(records)
        self.arrivals = self._classify(frame)
        on_time = self.arrivals.filter(~pl.col("late") & (pl.col("kind") != "tick")).select(
            "kind", "partition", "offset", "t"
        )
        keys = ["kind", "partition", "offset"]
        self._lines = _frame(
            details["lines"],
            {
                "kind": pl.String,
                "partition": pl.Int64,
                "offset": pl.Int64,
                "channel": pl.String,
                "store_id": pl.String,
                "order_id": pl.String,
                "sku": pl.String,
                "qty": pl.Int64,
                "price": pl.String,
            },
        )
        self._returns = _frame(
            details["returns"],
            {
                "kind": pl.String,
                "partition": pl.Int64,
                "offset": pl.Int64,
                "sku": pl.String,
                "qty": pl.Int64,
                "amount": pl.String,
            },
        )
        self._questions = _frame(
            details["questions"],
            {
                "kind": pl.String,
                "partition": pl.Int64,
                "offset": pl.Int64,
                "store_id": pl.String,
                "sku": pl.String,
            },
        )
        self._stock = _frame(
            details["stock"],
            {
                "kind": pl.String,
                "partition": pl.Int64,
                "offset": pl.Int64,
                "store_id": pl.String,
                "sku": pl.String,
                "level": pl.Int64,
                "fact": pl.Int64,
            },
        )
        pane = self.config.pane_ms
        window = (pl.col("t") - pl.col("t") % pane).alias("window_start")
        self._lines = self._lines.join(on_time, on=keys).with_columns(
            window, cents=pl.col("qty") * _cents("price")
        )
        self._returns = self._returns.join(on_time, on=keys).with_columns(
            window, cents=_cents("amount")
        )
        self._questions = self._questions.join(on_time, on=keys).with_columns(window)
        self._stock = self._stock.join(on_time, on=keys)

    # --- lateness ---------------------------------------------------------------------

    def _classify(self, frame: pl.DataFrame) -> pl.DataFrame:
        cfg = self.config
        frame = frame.sort("partition", "seq")
        is_event = pl.col("kind") != "tick"
        # Highest tick for this record's input so far (ticks precede what comes after).
        tick_before = pl.coalesce(
            pl.when(pl.col("kind") == k).then(
                pl.col(f"tick_{k}").cum_max().forward_fill().shift(1).over("partition")
            )
            for k in INPUTS
        )
        # Highest event time of the same topic-partition before this record.
        own_before = pl.col("t").cum_max().shift(1).over("partition", "kind")
        frame = frame.with_columns(watermark=pl.max_horizontal(own_before, tick_before))
        pane_end = pl.col("t") - pl.col("t") % cfg.pane_ms + cfg.pane_ms
        return frame.with_columns(
            late=is_event & (pane_end + cfg.grace_ms <= pl.col("watermark")).fill_null(False)
        )

    def late_records(self) -> pl.DataFrame:
        """(kind, partition, offset) of every late input record."""
        return self.arrivals.filter("late").select("kind", "partition", "offset").sort(pl.all())

    # --- sales ------------------------------------------------------------------------

    def sales_by(self, dimension: str) -> pl.DataFrame:
        """``dimension`` ``"channel"`` or ``"store_id"``: one row per 1-minute window and key."""
        orders = self._lines.group_by("window_start", dimension, "partition", "offset").agg(
            units=pl.col("qty").sum(), cents=pl.col("cents").sum()
        )
        return (
            orders.group_by("window_start", dimension)
            .agg(
                orders=pl.len().cast(pl.Int64),
                units=pl.col("units").sum(),
                cents=pl.col("cents").sum(),
            )
            .with_columns(
                window_end=pl.col("window_start") + self.config.pane_ms,
                revenue=pl.col("cents") / 100,
                avg_basket=pl.col("cents") / pl.col("orders") / 100,
            )
            .select(
                "window_start", "window_end", dimension, "orders", "units", "revenue", "avg_basket"
            )
            .sort("window_start", dimension)
        )

    def _sku_units(self) -> pl.DataFrame:
        return self._lines.group_by("window_start", "sku").agg(
            units=pl.col("qty").sum(), cents=pl.col("cents").sum()
        )

    def _spread(self, frame: pl.DataFrame, span_ms: int) -> pl.DataFrame:
        """Each pane row repeated for every ``span_ms`` window (hopping by a pane) it is in,
        with that window's end as ``window_end``."""
        steps = pl.DataFrame({"step": range(span_ms // self.config.pane_ms)})
        return frame.join(steps, how="cross").with_columns(
            window_end=pl.col("window_start") + self.config.pane_ms * (pl.col("step") + 1)
        )

    def top_skus(self) -> pl.DataFrame:
        cfg = self.config
        windows = (
            self._spread(self._sku_units(), cfg.top_window_ms)
            .group_by("window_end", "sku")
            .agg(units=pl.col("units").sum(), cents=pl.col("cents").sum())
            .sort(
                "window_end",
                pl.col("units"),
                pl.col("cents"),
                "sku",
                descending=[False, True, True, False],
            )
            .with_columns(rank=pl.int_range(1, pl.len() + 1).over("window_end"))
        )
        if cfg.top_n is not None:
            windows = windows.filter(pl.col("rank") <= cfg.top_n)
        return windows.select(
            window_start=pl.col("window_end") - cfg.top_window_ms,
            window_end="window_end",
            sku="sku",
            category=pl.col("sku").map_elements(self.category_of, return_dtype=pl.String),
            units="units",
            revenue=pl.col("cents") / 100,
            rank=pl.col("rank").cast(pl.Int64),
        ).sort("window_end", "rank")

    # --- returns ----------------------------------------------------------------------

    def returns_stats(self) -> pl.DataFrame:
        cfg = self.config
        category = pl.col("sku").map_elements(self.category_of, return_dtype=pl.String)
        returned = self._returns.with_columns(category=category)
        sold = self._sku_units().with_columns(category=category)
        frames = []
        for dimension, key in (("sku", "sku"), ("category", "category")):
            minute = (
                returned.group_by("window_start", key)
                .agg(
                    returns=pl.len().cast(pl.Int64),
                    units=pl.col("qty").sum(),
                    cents=pl.col("cents").sum(),
                )
                .with_columns(window_end=pl.col("window_start") + cfg.pane_ms)
            )
            trail_ret = (
                self._spread(
                    returned.group_by("window_start", key).agg(u=pl.col("qty").sum()),
                    cfg.returns_trailing_ms,
                )
                .group_by("window_end", key)
                .agg(trailing_returned_units=pl.col("u").sum())
            )
            trail_sold = (
                self._spread(
                    sold.group_by("window_start", key).agg(u=pl.col("units").sum()),
                    cfg.returns_trailing_ms,
                )
                .group_by("window_end", key)
                .agg(trailing_sold_units=pl.col("u").sum())
            )
            stats = (
                minute.join(trail_ret, on=["window_end", key], how="left")
                .join(trail_sold, on=["window_end", key], how="left")
                .with_columns(pl.col("trailing_returned_units", "trailing_sold_units").fill_null(0))
            )
            frames.append(
                stats.select(
                    window_start="window_start",
                    window_end="window_end",
                    dimension=pl.lit(dimension),
                    key=key,
                    category=pl.col(key) if dimension == "category" else category,
                    returns="returns",
                    units="units",
                    refunded=pl.col("cents") / 100,
                    trailing_ms=pl.lit(cfg.returns_trailing_ms, dtype=pl.Int64),
                    trailing_returned_units="trailing_returned_units",
                    trailing_sold_units="trailing_sold_units",
                    return_rate=pl.when(pl.col("trailing_sold_units") > 0).then(
                        pl.col("trailing_returned_units") / pl.col("trailing_sold_units")
                    ),
                )
            )
        return pl.concat(frames).sort("window_start", "dimension", "key")

    # --- demand -----------------------------------------------------------------------

    def demand(self) -> pl.DataFrame:
        stock = self._stock.sort("t", "offset", "fact").select(
            "store_id", "sku", pl.col("t").alias("stock_t"), "level"
        )
        questions = self._questions.sort("t")
        asked = questions.join_asof(
            stock,
            left_on="t",
            right_on="stock_t",
            by=["store_id", "sku"],
            strategy="backward",
            check_sortedness=False,  # sorted above; polars cannot verify it within groups
        )
        return (
            asked.with_columns(oos=(pl.col("level") == 0).fill_null(False))
            .group_by("window_start", "sku")
            .agg(
                questions=pl.len().cast(pl.Int64), oos_questions=pl.col("oos").sum().cast(pl.Int64)
            )
            .select(
                "window_start",
                window_end=pl.col("window_start") + self.config.pane_ms,
                sku="sku",
                category=pl.col("sku").map_elements(self.category_of, return_dtype=pl.String),
                questions="questions",
                oos_questions="oos_questions",
            )
            .sort("window_start", "sku")
        )


def _frame(rows: list[dict[str, Any]], schema: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=schema)
