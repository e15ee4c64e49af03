"""The sink's contract with DuckLake, on a real lake (no broker): exactly once, exact money,
one generation per broker, readers in another process never blocked or shown half a batch."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import threading
from decimal import Decimal
from pathlib import Path

import duckdb
import orjson
import pytest
from quixstreams.sinks import SinkBackpressureError

from pipelines.sink.app import LakeSink, data_files, housekeeping
from pipelines.sink.writer import Record
from readmodels.generations import generations
from readmodels.lake import connect
from readmodels.queries import NoReadModels, ReadModels
from shopstream.events import encode, headers_for
from shopstream.settings import Settings, load_settings
from shopstream.topics import STOCK_LEVELS
from support import service_samples as s
from support.lake import START_MS, STOCK_KEYS, feed, order_records, sink_for, stock_level


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data")


def expected_revenue(records: list[Record]) -> Decimal:
    total = Decimal("0")
    for *_, value, _ in records:
        for line in orjson.loads(value)["payload"]["lines"]:
            total += Decimal(str(line["unit_price"])) * line["qty"]
    return total


def test_the_same_batch_written_twice_leaves_the_same_rows(settings: Settings) -> None:
    records = order_records(500)
    sink = sink_for(settings)
    feed(sink, records)
    feed(sink, records)  # a replayed checkpoint: every record already written
    fresh = sink_for(settings)  # a restarted sink reads the stored offsets
    feed(fresh, records[:300])
    rm = ReadModels(settings)
    orders = rm.sql(f"SELECT count(*), count(DISTINCT order_id) FROM {rm.table('orders')}")
    assert orders.row(0) == (500, 500)
    lines = sum(len(orjson.loads(r[5])["payload"]["lines"]) for r in records)
    assert rm.sql(f"SELECT count(*) FROM {rm.table('order_lines')}").item() == lines
    assert sink.skipped == 500 and fresh.skipped == 300
    assert rm.sink_offsets().row(0, named=True)["next_offset"] == 500


def test_money_is_exact_and_the_minute_aggregates_add_up(settings: Settings) -> None:
    records = order_records(2000)
    sink = sink_for(settings)
    for start in range(0, 2000, 250):  # many small checkpoints: many aggregate parts
        feed(sink, records[start : start + 250])
    rm = ReadModels(settings)
    revenue = rm.sql(f"SELECT sum(total) FROM {rm.table('orders')}").item()
    assert revenue == expected_revenue(records)
    assert rm.totals()["revenue"] == revenue and rm.totals()["orders"] == 2000
    lines = rm.sql(f"SELECT sum(amount) FROM {rm.table('order_lines')}").item()
    assert lines == revenue


def test_lineage_and_service_tables_from_every_event_topic(settings: Settings) -> None:
    order = s.order("o1", [("SKU-00001", 2, "9.99")])
    question = s.question("q1", "SKU-00002")

    def rec(topic: str, offset: int, event: object, app: str) -> Record:
        headers = [*headers_for(event), ("app", app.encode()), ("emitted_at", b"1764590400123")]  # type: ignore[arg-type]
        return (topic, 0, offset, 0, b"store-01", encode(event), headers)  # type: ignore[arg-type]

    sink = sink_for(settings)
    unsigned = ("orders", 0, 1, 1764590400999, b"store-01",
                encode(s.order("o2", [("SKU-00003", 1, "1.00")])), headers_for(order))
    feed(sink, [
        rec("orders", 0, order, "router"), rec("stock-questions", 0, question, "router"),
        unsigned,  # no app and no emitted_at header: the feed's emitter, the record's time
        ("deadletters", 0, 0, 5, b"k", b"\xff garbage", [
            ("error.kind", b"bad_encoding"), ("error.message", b"not UTF-8"),
            ("error.topic", b"ingress.web"), ("error.partition", b"1"),
            ("error.offset", b"7"), ("error.app", b"router"),
        ]),
        ("returns", 0, 0, 5, b"k", b"{not json", []),  # written past the router
    ])  # fmt: skip
    rm = ReadModels(settings)
    events = rm.sql(
        f"SELECT event_type, app, epoch_ms(emitted_at) AS emitted_ms FROM {rm.table('events')} "
        "ORDER BY 1, 3"
    )
    assert events["event_type"].to_list() == ["OrderPlaced", "OrderPlaced", "StockQuestionAsked"]
    assert set(events["app"]) == {"router"}
    assert events["emitted_ms"].to_list() == [1764590400123, 1764590400999, 1764590400123]
    assert rm.order_trace("o1")["event_type"].to_list() == ["OrderPlaced"]
    letters = rm.dead_letters_by_kind()
    assert set(zip(letters["error_kind"], letters["app"], strict=True)) == {
        ("bad_encoding", "router"), ("unreadable", "sink"),
    }  # fmt: skip
    assert rm.questions_and_answers()["sku"].to_list() == ["SKU-00002"]


def test_a_new_broker_gets_a_new_generation_and_readers_follow(settings: Settings) -> None:
    feed(sink_for(settings, "broker-a"), order_records(100))
    feed(sink_for(settings, "broker-a"), order_records(150))  # same broker: resumed
    feed(sink_for(settings, "broker-b"), order_records(10, seed=9))  # new broker: new models
    con = connect(settings, read_only=False)
    assert [(g.number, g.broker_id) for g in generations(con)] == [(1, "broker-a"), (2, "broker-b")]
    rm = ReadModels(settings)
    assert rm.totals()["orders"] == 10
    old = rm.sql("SELECT count(*) FROM lake.gen_0001.orders").item()
    assert old == 150  # kept for analysis


def test_a_reader_sees_no_models_before_the_sink_wrote_any(settings: Settings) -> None:
    with pytest.raises(NoReadModels, match="start the sink"):
        ReadModels(settings).totals()


def test_a_lake_that_cannot_be_written_pauses_the_sink_and_loses_nothing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = sink_for(settings)
    records = order_records(50)
    real_write = sink.writer.write_batch

    def disk_full(batch: object) -> object:
        raise duckdb.IOException("could not write file: No space left on device")

    monkeypatch.setattr(sink.writer, "write_batch", disk_full)
    with pytest.raises(SinkBackpressureError) as info:
        feed(sink, records)
    assert info.value.retry_after > 0
    assert sink.paused_reason and "No space left" in sink.paused_reason
    assert sink.counters.errors == 1 and sink.writer.next_offsets == {}
    sink.on_paused()  # Quix pauses, seeks back and delivers the same records again
    monkeypatch.setattr(sink.writer, "write_batch", real_write)
    feed(sink, records)
    assert sink.paused_reason is None
    assert ReadModels(settings).totals()["orders"] == 50


def test_readers_in_another_process_never_block_and_never_see_half_a_batch(
    settings: Settings, tmp_path: Path
) -> None:
    feed(sink_for(settings), order_records(10))
    writer = textwrap.dedent(f"""
        import sys
        sys.path[:0] = {sys.path!r}
        from support.lake import START_MS, STOCK_KEYS, feed, order_records, sink_for, stock_level
        from shopstream.settings import load_settings
        sink = sink_for(load_settings(data_dir={str(settings.data_dir)!r}))
        records = order_records(3000, first_offset=10, seed=4)
        for start in range(0, 3000, 100):
            feed(sink, records[start:start + 100])
        print("written")
    """)
    child = subprocess.Popen(
        [sys.executable, "-c", writer], cwd=Path(__file__).parent,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    rm = ReadModels(settings)
    polls = 0
    while child.poll() is None or polls == 0:
        consistent = rm.sql(f"""
            SELECT (SELECT sum(lines) FROM {rm.table('orders')}) AS lines,
                   (SELECT count(*) FROM {rm.table('order_lines')}) AS rows,
                   (SELECT sum(orders) FROM {rm.table('sales_minute')}) AS counted,
                   (SELECT count(*) FROM {rm.table('orders')}) AS orders""").row(0)
        assert consistent[0] == consistent[1] and consistent[2] == consistent[3], consistent
        polls += 1
    out, err = child.communicate()
    assert child.returncode == 0 and "written" in out, err
    assert polls > 5
    assert rm.totals()["orders"] == 3010


def test_housekeeping_merges_files_and_readers_carry_on(settings: Settings) -> None:
    sink = sink_for(settings)
    records = order_records(600)
    for start in range(0, 600, 20):
        feed(sink, records[start : start + 20])
    con = sink.writer.con
    rm = ReadModels(settings)
    before, files = rm.totals(), data_files(con)
    housekeeping(con)
    assert files >= 30 * 5  # 30 writes of 5 tables: orders, lines, events, the 2 aggregates
    assert data_files(con) <= 12
    assert rm.totals() == before
    offsets = rm.sql(f"SELECT count(*) FROM {rm.table('sink_offsets')}").item()
    assert offsets == 1  # one row per partition left
    # Recent snapshots are kept for "as of" views: the shop as it was half-way through.
    snapshots = rm.snapshots()
    assert len(snapshots) >= 30
    earlier = rm.pinned(snapshots[len(snapshots) // 2].version).totals()["orders"]
    assert 0 < earlier < before["orders"]


def test_housekeeping_keeps_the_lake_bounded(settings: Settings) -> None:
    """Stock levels replaced checkpoint after checkpoint leave mostly deleted files; merged
    files leave files nobody needs. Housekeeping rewrites the first and, one round later,
    deletes the second, while every kept snapshot stays readable."""
    sink = sink_for(settings)
    offset, rng = 0, random.Random(5)
    for checkpoint in range(40):  # each replaces a few levels, as stock moves, and some orders
        batch: list[Record] = []
        keys = STOCK_KEYS if checkpoint == 0 else rng.sample(STOCK_KEYS, 12)
        for j, (store, sku) in enumerate(keys):
            key, value = stock_level(store, sku, (checkpoint + j) % 30, f"lv-{checkpoint}-{j}")
            batch.append((STOCK_LEVELS.name, 0, offset, START_MS, key, value, []))
            offset += 1
        feed(sink, batch + order_records(20, first_offset=20 * checkpoint, seed=checkpoint))
    con = sink.writer.con
    meta = "__ducklake_metadata_lake"
    rm = ReadModels(settings)
    levels, snapshots = rm.stock_levels(), rm.snapshots()
    mid = snapshots[len(snapshots) // 2].version
    mid_levels, mid_totals = rm.pinned(mid).stock_levels(), rm.pinned(mid).totals()

    def level_files() -> int:
        return int(con.execute(
            f"SELECT count(*) FROM {meta}.ducklake_data_file f JOIN {meta}.ducklake_table t "
            "USING (table_id) WHERE f.end_snapshot IS NULL AND t.end_snapshot IS NULL "
            "AND t.table_name = 'stock_levels'"
        ).fetchone()[0])  # type: ignore[index]  # fmt: skip

    def unknown_files() -> int:
        """Parquet files on disk that no snapshot refers to."""
        known = {Path(p).name for (p,) in con.execute(
            f"SELECT path FROM {meta}.ducklake_data_file UNION ALL "
            f"SELECT path FROM {meta}.ducklake_delete_file"
        ).fetchall()}  # fmt: skip
        on_disk = {p.name for p in (settings.data_dir / "lake").rglob("*.parquet")}
        return len(on_disk - known)

    before = level_files()
    housekeeping(con)
    assert unknown_files() > 0  # merged away this round: deleted the next
    housekeeping(con)
    assert before >= 30 and level_files() <= before // 3, (before, level_files())
    assert unknown_files() == 0
    assert rm.stock_levels().sort(["store_id", "sku"]).equals(levels.sort(["store_id", "sku"]))
    # "As of" an earlier snapshot reads what it read before: rewritten and merged files
    # keep every kept snapshot's rows.
    assert rm.pinned(mid).stock_levels().equals(mid_levels) and mid_levels.height > 0
    assert rm.pinned(mid).totals() == mid_totals != rm.totals()


def test_every_query_works_as_of_an_earlier_snapshot(settings: Settings) -> None:
    sink = sink_for(settings)
    records = order_records(200)
    feed(sink, records[:100])
    feed(sink, records[100:])
    rm = ReadModels(settings)
    pinned = rm.pinned(rm.snapshots()[1].version)  # before the second write
    assert pinned.totals()["orders"] == 100 and rm.totals()["orders"] == 200
    order_id = pinned.recent_orders(1)["order_id"][0]
    for query in ("sales_per_minute", "channel_summary", "alerts", "top_skus", "stock_levels",
                  "low_stock", "rejected_orders", "stockouts_with_questions",
                  "questions_and_answers", "notifications_by_channel", "freshness",
                  "events_per_topic", "dead_letters_by_kind", "sink_offsets"):  # fmt: skip
        getattr(pinned, query)()
    assert pinned.order_trace(order_id)["event_type"].to_list() == ["OrderPlaced"]


def test_the_sink_swaps_in_a_fresh_connection_after_housekeeping(settings: Settings) -> None:
    """What keeps its memory flat: a long-lived DuckLake attach grows with every snapshot it
    commits. Housekeeping runs through a fresh connection, and the sink writes on through
    it, no record lost or doubled across the swap."""
    kept = sink_for(settings)
    opened: list[duckdb.DuckDBPyConnection] = []

    def reopen() -> duckdb.DuckDBPyConnection:
        opened.append(connect(settings, read_only=False))
        return opened[-1]

    sink = LakeSink(kept.writer, kept.counters, reopen=reopen)
    first = sink.writer.con
    records = order_records(90)
    feed(sink, records[:30])
    sink.keep_house()  # a round, as its thread runs one every minute
    feed(sink, records[30:60])
    assert len(opened) == 1 and sink.writer.con is opened[0]
    with pytest.raises(duckdb.ConnectionException):
        first.execute("SELECT 1")  # the old one is closed
    feed(sink, records[60:])
    feed(sink, records[:30])  # a redelivery after the swap: skipped, not doubled
    count = sink.writer.con.execute(
        f"SELECT count(*), count(DISTINCT order_id) FROM {sink.writer.generation.table('orders')}"
    ).fetchone()
    assert count == (90, 90)


@pytest.mark.parametrize(
    "bad", [b"\xff\xfe not utf-8", b"{not json", b"null"], ids=["not-utf8", "not-json", "null"]
)
def test_an_unreadable_value_costs_only_itself(settings: Settings, bad: bytes) -> None:
    """The batch is parsed fast without TRY first; an unreadable value makes the writer
    parse it value by value: the good orders are all written, the bad one is a dead letter
    that quotes it, and the offsets cover both."""
    records = order_records(50)
    topic, partition, offset, ts, key, _, headers = records[20]
    records[20] = (topic, partition, offset, ts, key, bad, headers)
    sink = sink_for(settings)
    feed(sink, records)
    rm = ReadModels(settings)
    assert rm.sql(f"SELECT count(*) FROM {rm.table('orders')}").item() == 49
    dead = rm.sql(f"SELECT error_kind, kafka_offset, value_bytes FROM {rm.table('dead_letters')}")
    assert dead.rows() == [("unreadable", offset, len(bad))]
    assert rm.sink_offsets()["next_offset"].max() == max(r[2] for r in records) + 1
    revenue = rm.sql(f"SELECT sum(revenue) FROM {rm.table('sales_minute')}").item()
    assert revenue == expected_revenue(records[:20] + records[21:])


def test_freshness_from_the_catalog_statistics_equals_a_scan(settings: Settings) -> None:
    """The health page's freshness comes from DuckLake's catalog statistics: the same rows
    and newest times as a scan, for batches kept in the catalog (at most 10 rows: data
    inlining) and batches in Parquet files alike, and for tables still empty."""
    records = order_records(300)
    sink = sink_for(settings)
    feed(sink, records[:5])  # inlined
    rm = ReadModels(settings)
    assert rm.freshness().drop("behind_s").equals(rm._freshness_scanned().drop("behind_s"))
    feed(sink, records[5:200])  # a Parquet file
    feed(sink, records[200:204])  # inlined again, newer
    feed(sink, records[204:])
    stats, scanned = rm.freshness(), rm._freshness_scanned()
    assert stats.drop("behind_s").equals(scanned.drop("behind_s"))
    assert stats.filter(read_model="orders")["rows"].item() == 300
    assert stats.filter(read_model="returns")["rows"].item() == 0
    assert (stats["behind_s"] - scanned["behind_s"]).abs().max() < 5  # type: ignore[operator]


def test_writes_go_on_while_housekeeping_runs_beside_them(settings: Settings) -> None:
    """Housekeeping runs in its own thread through its own connection: the sink's writes
    and its compaction commit beside each other (a conflict is written again), and the
    read models end exact."""
    kept = sink_for(settings)
    sink = LakeSink(kept.writer, kept.counters,
                    reopen=lambda: connect(settings, read_only=False))  # fmt: skip
    records = order_records(600)
    levels = [("stock.levels", 0, i, START_MS, *stock_level(store, sku, i % 9, f"e{i}"), [])
              for i, (store, sku) in enumerate(STOCK_KEYS * 5)]  # fmt: skip
    for start in range(0, 300, 10):  # many small files for housekeeping to merge
        feed(sink, records[start : start + 10] + levels[start : start + 10])
    rounds = threading.Thread(target=lambda: [sink.keep_house() for _ in range(3)])
    rounds.start()
    for start in range(300, 600, 10):
        feed(sink, records[start : start + 10])
    rounds.join()
    feed(sink, records[:50])  # a redelivery: skipped
    sink.close()
    rm = ReadModels(settings)
    orders = rm.sql(f"SELECT count(*), count(DISTINCT order_id) FROM {rm.table('orders')}")
    assert orders.row(0) == (600, 600)
    assert rm.totals()["revenue"] == expected_revenue(records)
    assert sink.counters.errors == 0
    assert rm.stock_levels().height == len(STOCK_KEYS)
