"""Every read-model table, named once, with its columns.

The read models of one broker live in one DuckLake schema, a *generation*
(``lake.gen_0001``): the tables below, created together. ``lake.main.generations``
lists the generations and the broker each belongs to (see :mod:`readmodels.generations`).

Conventions: money is ``DECIMAL(14,2)`` (exact), event times are ``TIMESTAMPTZ``; every
table fed by an event carries its ``event_id``; the lineage of every event is in
``events``. Tables whose name ends in ``_minute`` are additive pre-aggregates (one row
per group and write; sum them) so that dashboard queries stay fast over millions of
orders.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Table:
    """A read-model table: name, columns (DuckDB DDL) and what a row is."""

    name: str
    columns: str
    description: str


MONEY = "DECIMAL(14,2)"

EVENTS = Table("events", """
    event_id VARCHAR, event_type VARCHAR, causation_id VARCHAR, correlation_id VARCHAR,
    app VARCHAR, channel VARCHAR, store_id VARCHAR, topic VARCHAR, kafka_partition INTEGER,
    kafka_offset BIGINT, occurred_at TIMESTAMPTZ, emitted_at TIMESTAMPTZ, sunk_at TIMESTAMPTZ
""", "lineage: every event on every event topic, who emitted it, where and when")
ORDERS = Table("orders", f"""
    order_id VARCHAR, event_id VARCHAR, customer_id VARCHAR, channel VARCHAR,
    store_id VARCHAR, occurred_at TIMESTAMPTZ, payment_method VARCHAR, currency VARCHAR,
    lines INTEGER, units INTEGER, total {MONEY}
""", "one row per order placed (the full order history)")
ORDER_LINES = Table("order_lines", f"""
    order_id VARCHAR, line_no INTEGER, sku VARCHAR, qty INTEGER, unit_price {MONEY},
    amount {MONEY}, channel VARCHAR, store_id VARCHAR, occurred_at TIMESTAMPTZ
""", "one row per order line")
RETURNS = Table("returns", f"""
    return_id VARCHAR, event_id VARCHAR, order_id VARCHAR, customer_id VARCHAR, sku VARCHAR,
    qty INTEGER, reason VARCHAR, amount {MONEY}, channel VARCHAR, store_id VARCHAR,
    occurred_at TIMESTAMPTZ
""", "one row per item returned")
QUESTIONS = Table("stock_questions", """
    question_id VARCHAR, event_id VARCHAR, customer_id VARCHAR, sku VARCHAR,
    store_id VARCHAR, channel VARCHAR, text VARCHAR, occurred_at TIMESTAMPTZ
""", "one row per stock question asked")
ANSWERS = Table("stock_answers", """
    question_id VARCHAR, event_id VARCHAR, customer_id VARCHAR, sku VARCHAR,
    store_id VARCHAR, available_qty INTEGER, answer VARCHAR, occurred_at TIMESTAMPTZ
""", "one row per answer customer relations gave")
MOVEMENTS = Table("stock_movements", """
    event_id VARCHAR, event_type VARCHAR, store_id VARCHAR, sku VARCHAR, delta INTEGER,
    level_after INTEGER, order_id VARCHAR, return_id VARCHAR, restock_id VARCHAR,
    occurred_at TIMESTAMPTZ
""", "the stock log: one row per SKU moved by a reservation, release or replenishment")
REJECTIONS = Table("stock_rejections", """
    event_id VARCHAR, order_id VARCHAR, customer_id VARCHAR, store_id VARCHAR, sku VARCHAR,
    requested INTEGER, available INTEGER, channel VARCHAR, occurred_at TIMESTAMPTZ
""", "one row per SKU short in a rejected order")
LEVELS = Table("stock_levels", """
    store_id VARCHAR, sku VARCHAR, level INTEGER, as_of TIMESTAMPTZ, event_id VARCHAR
""", "the latest level per store and SKU (from the compacted stock.levels)")
INVOICES = Table("invoices", f"""
    invoice_id VARCHAR, event_id VARCHAR, order_id VARCHAR, customer_id VARCHAR,
    net_amount {MONEY}, tax_amount {MONEY}, total_amount {MONEY}, currency VARCHAR,
    channel VARCHAR, store_id VARCHAR, occurred_at TIMESTAMPTZ
""", "one row per invoice issued")
REFUNDS = Table("refunds", f"""
    refund_id VARCHAR, event_id VARCHAR, return_id VARCHAR, order_id VARCHAR,
    invoice_id VARCHAR, customer_id VARCHAR, amount {MONEY}, currency VARCHAR,
    channel VARCHAR, store_id VARCHAR, occurred_at TIMESTAMPTZ
""", "one row per refund issued")
NOTIFICATIONS = Table("notifications", """
    notification_id VARCHAR, event_id VARCHAR, customer_id VARCHAR, medium VARCHAR,
    about VARCHAR, message VARCHAR, channel VARCHAR, store_id VARCHAR, occurred_at TIMESTAMPTZ
""", "one row per message sent to a customer")
ALERTS = Table("alerts", """
    alert_id VARCHAR, event_id VARCHAR, kind VARCHAR, severity VARCHAR, subject VARCHAR,
    message VARCHAR, details JSON, store_id VARCHAR, occurred_at TIMESTAMPTZ
""", "one row per alert raised")
DEAD_LETTERS = Table("dead_letters", """
    kafka_partition INTEGER, kafka_offset BIGINT, error_kind VARCHAR, error_message VARCHAR,
    error_field VARCHAR, app VARCHAR, source_topic VARCHAR, source_partition INTEGER,
    source_offset BIGINT, record_key VARCHAR, value_sample VARCHAR, value_bytes INTEGER,
    truncated BOOLEAN, original_bytes INTEGER, original_sha256 VARCHAR,
    recorded_at TIMESTAMPTZ
""", "one row per dead letter: why, where from, and the start of the record")
SALES_BY_CHANNEL = Table("sales_by_channel", f"""
    window_start TIMESTAMPTZ, window_end TIMESTAMPTZ, channel VARCHAR, orders INTEGER,
    units INTEGER, revenue {MONEY}, avg_basket DOUBLE
""", "analytics: 1-minute windows per channel (final, after the grace period)")
SALES_BY_STORE = Table("sales_by_store", f"""
    window_start TIMESTAMPTZ, window_end TIMESTAMPTZ, store_id VARCHAR, orders INTEGER,
    units INTEGER, revenue {MONEY}, avg_basket DOUBLE
""", "analytics: 1-minute windows per store")
TOP_SKUS = Table("top_skus", f"""
    window_start TIMESTAMPTZ, window_end TIMESTAMPTZ, sku VARCHAR, category VARCHAR,
    units INTEGER, revenue {MONEY}, rank INTEGER
""", "analytics: top sellers of 15-minute windows hopping every minute")
RETURNS_STATS = Table("returns_stats", f"""
    window_start TIMESTAMPTZ, window_end TIMESTAMPTZ, dimension VARCHAR, key VARCHAR,
    category VARCHAR, returns INTEGER, units INTEGER, refunded {MONEY}, trailing_ms BIGINT,
    trailing_returned_units INTEGER, trailing_sold_units INTEGER, return_rate DOUBLE
""", "analytics: returns and trailing return rates per SKU and category")
DEMAND = Table("demand", """
    window_start TIMESTAMPTZ, window_end TIMESTAMPTZ, sku VARCHAR, category VARCHAR,
    questions INTEGER, oos_questions INTEGER
""", "analytics: stock questions per SKU per minute, and those on a stock-out")
LATE_EVENTS = Table("late_events", """
    reason VARCHAR, detail VARCHAR, input VARCHAR, topic VARCHAR, kafka_partition INTEGER,
    kafka_offset BIGINT, event_id VARCHAR, event_type VARCHAR, store_id VARCHAR,
    event_time TIMESTAMPTZ, window_start TIMESTAMPTZ, late_by_ms BIGINT
""", "analytics: inputs not counted (beyond the grace period, or unreadable)")
SALES_MINUTE = Table("sales_minute", f"""
    minute TIMESTAMPTZ, channel VARCHAR, store_id VARCHAR, orders INTEGER, units INTEGER,
    revenue {MONEY}
""", "pre-aggregate, live: orders, units, revenue per minute, channel and store")
SKU_MINUTE = Table("sku_minute", f"""
    minute TIMESTAMPTZ, sku VARCHAR, units INTEGER, revenue {MONEY}
""", "pre-aggregate, live: units and revenue per minute and SKU")
RETURNS_MINUTE = Table("returns_minute", f"""
    minute TIMESTAMPTZ, channel VARCHAR, store_id VARCHAR, reason VARCHAR, returns INTEGER,
    units INTEGER, amount {MONEY}
""", "pre-aggregate, live: returns per minute, channel, store and reason")
QUESTIONS_MINUTE = Table("questions_minute", """
    minute TIMESTAMPTZ, channel VARCHAR, store_id VARCHAR, sku VARCHAR, questions INTEGER
""", "pre-aggregate, live: stock questions per minute, channel, store and SKU")
OFFSETS = Table("sink_offsets", """
    topic VARCHAR, kafka_partition INTEGER, next_offset BIGINT, written_at TIMESTAMPTZ
""", "exactly-once bookkeeping: the next offset to write per topic and partition, "
    "stored in the same transaction as the rows (the highest row per partition counts)")

TABLES: tuple[Table, ...] = (
    EVENTS, ORDERS, ORDER_LINES, RETURNS, QUESTIONS, ANSWERS, MOVEMENTS, REJECTIONS, LEVELS,
    INVOICES, REFUNDS, NOTIFICATIONS, ALERTS, DEAD_LETTERS, SALES_BY_CHANNEL, SALES_BY_STORE,
    TOP_SKUS, RETURNS_STATS, DEMAND, LATE_EVENTS, SALES_MINUTE, SKU_MINUTE, RETURNS_MINUTE,
    QUESTIONS_MINUTE, OFFSETS,
)  # fmt: skip
TABLES_BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}

GENERATIONS = Table("generations", """
    generation INTEGER, schema_name VARCHAR, broker_id VARCHAR, created_at TIMESTAMPTZ,
    note VARCHAR
""", "one row per generation of the read models: which broker its offsets belong to")

REPLAYS = Table("replays", """
    name VARCHAR, schema_name VARCHAR, generation INTEGER, namespace VARCHAR, topics VARCHAR,
    start_offsets JSON, target_offsets JSON, live_snapshot BIGINT, started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ, events BIGINT, seconds DOUBLE
""", "one row per replay model: what it replays from where to where, against which live "
    "snapshot it compares")
REPLAY_TABLES: tuple[Table, ...] = (ORDERS, ORDER_LINES, RETURNS, QUESTIONS, DEAD_LETTERS, OFFSETS)
"""The order-history model a replay rebuilds (and the tables its topics may feed); its
``_minute`` pre-aggregates are rolled up from it when compared, not written."""
