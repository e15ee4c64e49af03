"""The query module the dashboard and notebooks share: typed functions over the read models.

:class:`ReadModels` keeps one read-only DuckLake attach (attaching costs about 280 ms) and
answers every question of the dashboard with a polars DataFrame, through parameterised
SQL only. It reads the newest generation (:mod:`readmodels.generations`), optionally *as
of* an earlier snapshot (DuckLake time travel). Dashboard figures come from the additive
``*_minute`` pre-aggregates, never from scans of the order history, so they stay fast over
millions of orders (``benchmarks/sink_throughput.py`` measures them).

A reader never blocks the sink and never sees half a batch: each query runs on one
DuckLake snapshot. Thread-safe: each call takes its own cursor.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import polars as pl

from readmodels import schema as t
from readmodels.generations import Generation, current
from readmodels.lake import LAKE, LakeMissing, connect
from shopstream.settings import Settings

GENERATION_CHECK_S = 5.0
"""How often a reader looks for a newer generation (a new broker's read models)."""


FRESHNESS: tuple[tuple[str, str], ...] = (
    (t.ORDERS.name, "occurred_at"), (t.RETURNS.name, "occurred_at"),
    (t.MOVEMENTS.name, "occurred_at"), (t.INVOICES.name, "occurred_at"),
    (t.NOTIFICATIONS.name, "occurred_at"), (t.ANSWERS.name, "occurred_at"),
    (t.ALERTS.name, "occurred_at"), (t.SALES_BY_CHANNEL.name, "window_end"),
    (t.EVENTS.name, "sunk_at"),
)  # fmt: skip
"""Tables whose freshness the health page shows: ``(table, its newest-event column)``."""


class NoReadModels(LookupError):
    """There is nothing to read yet: no lake, or no generation in it."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A DuckLake snapshot: a version of the read models a reader can look at."""

    version: int
    at: datetime


class ReadModels:
    """Read-only access to the read models of one settings' lake (see the module docstring).

    ``as_of`` (a snapshot version) pins every query to that snapshot; ``None`` is now.
    """

    def __init__(self, settings: Settings, as_of: int | None = None) -> None:
        self.settings = settings
        self.as_of = as_of
        self._con: duckdb.DuckDBPyConnection | None = None
        self._generation: Generation | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    # --- plumbing ---------------------------------------------------------------------

    def _connection(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            if self._con is None:
                try:
                    self._con = connect(self.settings, read_only=True)
                except LakeMissing as exc:
                    raise NoReadModels(str(exc)) from None
            return self._con

    @property
    def generation(self) -> Generation:
        """The generation read (the newest; looked up again every few seconds)."""
        now = time.monotonic()
        if self._generation is None or now - self._checked > GENERATION_CHECK_S:
            found = current(self._connection().cursor())
            if found is None:
                raise NoReadModels("the read models are empty: the sink has not written yet")
            self._generation, self._checked = found, now
        return self._generation

    def pinned(self, as_of: int | None) -> ReadModels:
        """The same read models as of snapshot ``as_of`` (sharing the connection)."""
        other = ReadModels(self.settings, as_of)
        other._con, other._generation, other._checked = self._connection(), None, 0.0
        return other

    def table(self, name: str) -> str:
        """``lake.gen_NNNN.name``; when pinned, a subquery over it ``AT (VERSION => n)``
        (a subquery, so that callers may alias it like any table)."""
        qualified = self.generation.table(name)
        if not self.as_of:
            return qualified
        return f"(SELECT * FROM {qualified} AT (VERSION => {int(self.as_of)}))"

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor on the kept read-only connection (close it when done)."""
        return self._connection().cursor()

    def sql(self, query: str, params: list[Any] | None = None) -> pl.DataFrame:
        """Run ``query`` (``{table}`` placeholders name read-model tables) with ``params``."""
        cursor = self._connection().cursor()
        try:
            return cursor.execute(query, params or []).pl()
        finally:
            cursor.close()

    def _q(self, query: str, params: list[Any] | None = None, **tables: str) -> pl.DataFrame:
        names = {key: self.table(name) for key, name in tables.items()}
        return self.sql(query.format(**names), params)

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    # --- snapshots ----------------------------------------------------------------------

    def snapshots(self, limit: int = 200) -> list[Snapshot]:
        """The newest snapshots, newest first (for "as of" views)."""
        rows = self._connection().execute(
            f"SELECT snapshot_id, snapshot_time FROM ducklake_snapshots('{LAKE}') "
            "ORDER BY snapshot_id DESC LIMIT ?",
            [limit],
        ).fetchall()
        return [Snapshot(int(v), at) for v, at in rows]

    def snapshot_at(self, moment: datetime) -> Snapshot | None:
        """The last snapshot at or before ``moment``."""
        rows = self._connection().execute(
            f"SELECT snapshot_id, snapshot_time FROM ducklake_snapshots('{LAKE}') "
            "WHERE snapshot_time <= ? ORDER BY snapshot_id DESC LIMIT 1",
            [moment],
        ).fetchall()
        return Snapshot(int(rows[0][0]), rows[0][1]) if rows else None

    # --- overview -----------------------------------------------------------------------

    def sales_per_minute(self, minutes: int = 60) -> pl.DataFrame:
        """Orders, units and revenue per minute and channel over the last ``minutes``
        (of event time, up to the newest minute with sales)."""
        return self._q(
            """
            WITH newest AS (SELECT max(minute) AS m FROM {sales})
            SELECT minute, channel, sum(orders)::BIGINT AS orders, sum(units)::BIGINT AS units,
                   sum(revenue)::DECIMAL(18,2) AS revenue
            FROM {sales}, newest
            WHERE minute > newest.m - to_minutes(?::BIGINT)
            GROUP BY ALL ORDER BY minute, channel""",
            [minutes],
            sales=t.SALES_MINUTE.name,
        )

    def channel_summary(self, minutes: int = 60) -> pl.DataFrame:
        """Per channel over the last ``minutes``: orders, revenue (EUR), average basket
        (EUR per order), returns and return rate (returned units / sold units)."""
        return self._q(
            """
            WITH newest AS (SELECT max(minute) AS m FROM {sales}),
            sold AS (
                SELECT channel, sum(orders)::BIGINT AS orders, sum(units)::BIGINT AS units,
                       sum(revenue)::DECIMAL(18,2) AS revenue
                FROM {sales}, newest WHERE minute > newest.m - to_minutes(?::BIGINT)
                GROUP BY ALL),
            back AS (
                SELECT channel, sum(returns)::BIGINT AS returns,
                       sum(units)::BIGINT AS returned_units
                FROM {returns}, newest WHERE minute > newest.m - to_minutes(?::BIGINT)
                GROUP BY ALL)
            SELECT sold.channel, orders, revenue,
                   (revenue / nullif(orders, 0))::DECIMAL(18,2) AS avg_basket,
                   coalesce(returns, 0) AS returns,
                   coalesce(returned_units, 0) / nullif(units, 0) AS return_rate
            FROM sold LEFT JOIN back USING (channel) ORDER BY sold.channel""",
            [minutes, minutes],
            sales=t.SALES_MINUTE.name,
            returns=t.RETURNS_MINUTE.name,
        )

    def totals(self) -> dict[str, Any]:
        """Orders, revenue and the newest event time the read models hold (all time)."""
        frame = self._q(
            """
            SELECT sum(orders)::BIGINT AS orders, sum(revenue)::DECIMAL(18,2) AS revenue,
                   max(minute) AS newest_minute
            FROM {sales}""",
            sales=t.SALES_MINUTE.name,
        )
        return frame.row(0, named=True)

    def alerts(self, limit: int = 50) -> pl.DataFrame:
        """The newest alerts."""
        return self._q(
            """
            SELECT occurred_at, severity, kind, subject, message, store_id
            FROM {alerts} ORDER BY occurred_at DESC LIMIT ?""",
            [limit],
            alerts=t.ALERTS.name,
        )

    def top_skus(self, minutes: int = 15, limit: int = 10) -> pl.DataFrame:
        """The best sellers (units) over the last ``minutes`` with sales."""
        return self._q(
            """
            WITH newest AS (SELECT max(minute) AS m FROM {skus})
            SELECT sku, sum(units)::BIGINT AS units, sum(revenue)::DECIMAL(18,2) AS revenue
            FROM {skus}, newest WHERE minute > newest.m - to_minutes(?::BIGINT)
            GROUP BY ALL ORDER BY units DESC, revenue DESC, sku LIMIT ?""",
            [minutes, limit],
            skus=t.SKU_MINUTE.name,
        )

    # --- inventory ----------------------------------------------------------------------

    def stock_levels(self, store_id: str | None = None) -> pl.DataFrame:
        """The latest level per store and SKU (optionally one store)."""
        return self._q(
            """
            SELECT store_id, sku, level, as_of FROM {levels}
            WHERE ? IS NULL OR store_id = ? ORDER BY store_id, sku""",
            [store_id, store_id],
            levels=t.LEVELS.name,
        )

    def low_stock(self, threshold: int = 5, limit: int = 50) -> pl.DataFrame:
        """Store and SKU pairs at or below ``threshold`` units, lowest first."""
        # Every column in the ORDER BY: with one left out, DuckDB's late materialization
        # scans the table twice (top N on the sort keys, then a join for the rest), and a
        # DuckLake scan's fixed cost (reading the catalog) is most of this query's time.
        return self._q(
            """
            SELECT store_id, sku, level, as_of FROM {levels} WHERE level <= ?
            ORDER BY level, as_of DESC, store_id, sku LIMIT ?""",
            [threshold, limit],
            levels=t.LEVELS.name,
        )

    def rejected_orders(self, limit: int = 50) -> pl.DataFrame:
        """The newest rejected orders and the SKUs they were short of."""
        return self._q(
            """
            SELECT occurred_at, order_id, store_id, channel, string_agg(sku, ', ') AS short_of,
                   sum(requested - available)::BIGINT AS units_missing
            FROM {rejections} GROUP BY ALL ORDER BY occurred_at DESC LIMIT ?""",
            [limit],
            rejections=t.REJECTIONS.name,
        )

    def stockouts_with_questions(self, minutes: int = 60, limit: int = 20) -> pl.DataFrame:
        """SKUs out of stock in a store, with the questions asked about them there over the
        last ``minutes`` (most asked first)."""
        return self._q(
            """
            WITH newest AS (SELECT max(minute) AS m FROM {questions}),
            asked AS (
                SELECT store_id, sku, sum(questions)::BIGINT AS questions
                FROM {questions}, newest WHERE minute > newest.m - to_minutes(?::BIGINT)
                GROUP BY ALL)
            SELECT l.store_id, l.sku, l.as_of AS out_since, coalesce(a.questions, 0) AS questions
            FROM {levels} l LEFT JOIN asked a USING (store_id, sku)
            WHERE l.level = 0 ORDER BY questions DESC, out_since LIMIT ?""",
            [minutes, limit],
            questions=t.QUESTIONS_MINUTE.name,
            levels=t.LEVELS.name,
        )

    # --- customers ----------------------------------------------------------------------

    def questions_and_answers(self, limit: int = 50) -> pl.DataFrame:
        """The newest stock questions with the answer each got (if any yet), and how long
        after the question its answer was emitted.

        From the lineage: an answer carries its question's event time (a service stamps
        what it emits with the time of the event that caused it), so the two event times
        are always equal. The lineage is read from the oldest question's time on (its
        files before that are skipped)."""
        return self._q(
            """
            WITH q AS MATERIALIZED (SELECT * FROM {questions} ORDER BY occurred_at DESC LIMIT ?)
            SELECT q.occurred_at AS asked_at, q.channel, q.store_id, q.sku, q.text,
                   a.available_qty, a.answer,
                   date_diff('millisecond', q.occurred_at, ev.emitted_at) AS answered_after_ms
            FROM q LEFT JOIN {answers} a USING (question_id)
            LEFT JOIN (SELECT event_id, emitted_at FROM {events}
                       WHERE occurred_at >= (SELECT min(occurred_at) FROM q)) ev
                   ON ev.event_id = a.event_id
            ORDER BY q.occurred_at DESC""",
            [limit],
            questions=t.QUESTIONS.name,
            answers=t.ANSWERS.name,
            events=t.EVENTS.name,
        )

    def notifications_by_channel(self) -> pl.DataFrame:
        """Messages sent per channel, medium and subject (all time)."""
        return self._q(
            """
            SELECT channel, medium, about, count(*)::BIGINT AS messages
            FROM {notes} GROUP BY ALL ORDER BY channel, messages DESC""",
            notes=t.NOTIFICATIONS.name,
        )

    # --- order trace --------------------------------------------------------------------

    def recent_orders(self, limit: int = 20) -> pl.DataFrame:
        """The newest orders (to pick one to trace)."""
        return self._q(
            """
            SELECT occurred_at, order_id, channel, store_id, lines, total
            FROM {orders} ORDER BY occurred_at DESC LIMIT ?""",
            [limit],
            orders=t.ORDERS.name,
        )

    def order_trace(self, order_id: str) -> pl.DataFrame:
        """Every event of an order's flow across the services, in the order they were
        emitted, each with the event that caused it and how long that hop took (from the
        cause's emission; the order itself: from the moment the customer placed it).

        One pass over the lineage: an event's cause is in its own flow (a derived event
        copies its cause's ``correlation_id``), so causes are looked up in the flow, not in
        the whole table (joining the whole table hashed every event: 528 ms at p95 over
        10M orders)."""
        return self._q(
            """
            WITH flow AS MATERIALIZED (SELECT * FROM {events} WHERE correlation_id = ?)
            SELECT e.emitted_at, e.event_type, e.app, e.topic, e.kafka_partition,
                   e.kafka_offset, c.event_type AS caused_by,
                   date_diff('millisecond', coalesce(c.emitted_at, e.occurred_at),
                             e.emitted_at) AS hop_ms,
                   date_diff('millisecond', e.emitted_at, e.sunk_at) AS to_read_model_ms,
                   e.occurred_at, e.event_id, e.causation_id
            FROM flow e LEFT JOIN flow c ON c.event_id = e.causation_id
            ORDER BY e.emitted_at, e.kafka_offset""",
            [order_id],
            events=t.EVENTS.name,
        )

    # --- pipeline health ----------------------------------------------------------------

    def freshness(self) -> pl.DataFrame:
        """Per table fed by events: rows, the newest event time, when the newest row was
        written, and how far the newest event is behind now (seconds).

        Now (not pinned): from the statistics DuckLake keeps in its catalog with every
        commit (rows and each column's max per table), so the answer costs the same over
        any history (scanning took 218 ms at p95 over 10M orders). As of a snapshot: a
        scan of the tables at that snapshot (the statistics are the current ones)."""
        if self.as_of:
            return self._freshness_scanned()
        meta = f"__ducklake_metadata_{LAKE}"
        wanted = ", ".join(f"({i}, '{table}', '{column}')"
                           for i, (table, column) in enumerate(FRESHNESS))  # fmt: skip
        return self.sql(
            f"""
            SELECT w.name AS read_model, coalesce(s.record_count, 0)::BIGINT AS rows,
                   TRY_CAST(cs.max_value AS TIMESTAMPTZ) AS newest_event,
                   date_diff('millisecond', TRY_CAST(cs.max_value AS TIMESTAMPTZ), now())
                       / 1000.0 AS behind_s
            FROM (VALUES {wanted}) w(i, name, col)
            JOIN {meta}.ducklake_schema sc
              ON sc.schema_name = ? AND sc.end_snapshot IS NULL
            JOIN {meta}.ducklake_table tb ON tb.schema_id = sc.schema_id
              AND tb.table_name = w.name AND tb.end_snapshot IS NULL
            LEFT JOIN {meta}.ducklake_table_stats s ON s.table_id = tb.table_id
            LEFT JOIN {meta}.ducklake_column c ON c.table_id = tb.table_id
              AND c.column_name = w.col AND c.end_snapshot IS NULL
            LEFT JOIN {meta}.ducklake_table_column_stats cs
              ON cs.table_id = tb.table_id AND cs.column_id = c.column_id
            ORDER BY w.i""",
            [self.generation.schema],
        )

    def _freshness_scanned(self) -> pl.DataFrame:
        parts = [
            f"""SELECT '{name}' AS read_model, count(*)::BIGINT AS rows,
                   max({column}) AS newest_event,
                   date_diff('millisecond', max({column}), now()) / 1000.0 AS behind_s
                FROM {self.table(name)}"""
            for name, column in FRESHNESS
        ]
        return self.sql(" UNION ALL ".join(parts))

    def events_per_topic(self, seconds: int = 60) -> pl.DataFrame:
        """Events per second per topic over the last ``seconds`` the sink wrote."""
        return self._q(
            """
            SELECT topic, count(*)::BIGINT / ?::DOUBLE AS per_second, max(sunk_at) AS newest
            FROM {events} WHERE sunk_at > now() - to_seconds(?::BIGINT)
            GROUP BY ALL ORDER BY per_second DESC""",
            [seconds, seconds],
            events=t.EVENTS.name,
        )

    def dead_letters_by_kind(self) -> pl.DataFrame:
        """Dead letters per error kind and app, with one sample each."""
        return self._q(
            """
            SELECT error_kind, app, count(*)::BIGINT AS letters,
                   arg_max(error_message, recorded_at) AS last_message,
                   arg_max(value_sample, recorded_at) AS sample,
                   max(recorded_at) AS last_seen
            FROM {letters} GROUP BY ALL ORDER BY letters DESC""",
            letters=t.DEAD_LETTERS.name,
        )

    def sink_offsets(self) -> pl.DataFrame:
        """The next offset the read models expect per topic and partition."""
        return self._q(
            """
            SELECT topic, kafka_partition, max(next_offset) AS next_offset,
                   max(written_at) AS written_at
            FROM {offsets} GROUP BY ALL ORDER BY topic, kafka_partition""",
            offsets=t.OFFSETS.name,
        )
