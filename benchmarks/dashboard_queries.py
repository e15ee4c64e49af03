"""Dashboard query latency over big read models (issue 12: p95 <= 50 ms over 10M orders).

    python benchmarks/dashboard_queries.py [--orders 1000000,10000000] [--reps 30]

Each lake is written without Kafka through the sink's own writer
(:class:`pipelines.sink.writer.LakeWriter`, lineage on, as the sink writes): ``--base``
simulated orders (:mod:`producers.simulator`) once, then as many copies as the size
needs, each a write of its own, shifted in time (copy *k* starts where copy *k - 1*
ended) with fresh order and event ids, so the lake holds that many distinct orders over
that many days. Then the sink's housekeeping (:func:`pipelines.sink.app.housekeeping`)
merges the files, and the dashboard's queries (:class:`readmodels.queries.ReadModels`,
one kept read-only attach, as the dashboard holds it) run ``--reps`` times each.

Each query's baseline is the same query over the smallest lake (the ratio is how it
scales with history); ``query floor`` is ``SELECT 1`` through the same connection.
Only orders are written: ``low_stock`` and the other inventory queries read empty tables.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the benchmarks package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import time
from collections.abc import Callable
from typing import Any

import duckdb
import pyarrow as pa

from benchmarks.common import (
    Bench,
    Figure,
    QuietReporter,
    Reporter,
    StageResult,
    Target,
    percentiles,
)
from benchmarks.inputs import START_MS, order_records
from shopstream.settings import Settings, load_settings

QUERIES: dict[str, Callable[[Any, str], Any]] = {
    "sales_per_minute": lambda m, _o: m.sales_per_minute(),
    "channel_summary": lambda m, _o: m.channel_summary(),
    "top_skus": lambda m, _o: m.top_skus(),
    "totals": lambda m, _o: m.totals(),
    "low_stock": lambda m, _o: m.low_stock(),
    "recent_orders": lambda m, _o: m.recent_orders(),
    "order_trace": lambda m, order_id: m.order_trace(order_id),
    "freshness": lambda m, _o: m.freshness(),
}
GOAL_MS = 50.0

COPY_SQL = """
    SELECT kafka_partition, kafka_offset + $offset::BIGINT AS kafka_offset,
           kafka_ts + $shift::BIGINT AS kafka_ts, key,
           encode(replace(
               regexp_replace(regexp_replace(decode(value), '"O-', '"O' || $k || '-', 'g'),
                              '"event_id":"[0-9a-f]{8}', '"event_id":"' || $hex),
               '"occurred_at":"' || occurred || '"',
               '"occurred_at":"' || strftime(make_timestamp((epoch_us(occurred::TIMESTAMP)
                   + $shift::BIGINT * 1000)::BIGINT), '%Y-%m-%dT%H:%M:%S.%gZ') || '"')) AS value,
           app_header, emitted_at_header, headers
    FROM (SELECT *, regexp_extract(decode(value), '"occurred_at":"([^"]+)"', 1) AS occurred
          FROM base)"""
"""Copy ``k`` of the base orders: ids made unique, event times and offsets moved on."""


def base_table(orders: int) -> tuple[pa.Table, int, int]:
    """The base orders as the sink's Arrow table of the ``orders`` topic; its time span (ms)
    and offset span."""
    from pipelines.sink.writer import Staging, to_batch

    records = order_records(orders, start_ms=START_MS)
    span_ms = max(r[3] for r in records) - min(r[3] for r in records) + 60_000
    offsets = max(r[2] for r in records) + 1
    return to_batch(Staging().extend(records))["orders"], span_ms, offsets


def build_lake(
    settings: Settings, base: pa.Table, span_ms: int, offsets: int, orders: int,
    reporter: Reporter,
) -> dict[str, Any]:  # fmt: skip
    """Write ``orders`` orders (copies of ``base``) into a fresh lake, then housekeeping."""
    from pipelines.sink.app import data_files, feeds_for, housekeeping
    from pipelines.sink.writer import LakeWriter
    from readmodels.generations import open_for
    from readmodels.lake import connect
    from shopstream.topics import CATALOG

    con = connect(settings, read_only=False)
    try:
        generation, _ = open_for(con, "bench")
        writer = LakeWriter(con, generation, feeds_for(CATALOG))
        copies = max(1, orders // base.num_rows)
        scratch = duckdb.connect()
        scratch.register("base", base)
        started = time.perf_counter()
        write_s = 0.0
        for k in range(copies):
            reporter.step(f"queries: writing {orders:,} orders, batch {k + 1} of {copies}")
            raw = scratch.execute(COPY_SQL, {"offset": k * offsets, "shift": k * span_ms,
                                             "k": str(k), "hex": f"{k:08x}"}).arrow()  # fmt: skip
            if isinstance(raw, pa.RecordBatchReader):
                raw = raw.read_all()
            t = time.perf_counter()
            writer.write_batch({"orders": raw.cast(base.schema)})
            write_s += time.perf_counter() - t
        built_s = time.perf_counter() - started
        files = data_files(con)
        reporter.step(f"queries: housekeeping over {orders:,} orders ({files} data files)")
        t = time.perf_counter()
        housekeeping(con)
        return {"orders": copies * base.num_rows, "writes": copies, "write_s": write_s,
                "build_s": built_s, "write_rate": copies * base.num_rows / write_s,
                "data_files": files, "data_files_after_housekeeping": data_files(con),
                "housekeeping_s": time.perf_counter() - t}  # fmt: skip
    finally:
        con.close()


def time_queries(settings: Settings, reps: int) -> dict[str, dict[str, float]]:
    """p50/p95 ms of each dashboard query through one kept ReadModels."""
    from readmodels.queries import ReadModels

    models = ReadModels(settings)
    try:
        order_id = str(models.recent_orders(1)["order_id"][0])
        out: dict[str, dict[str, float]] = {}
        for name, query in {"query floor": lambda m, _o: m.sql("SELECT 1"), **QUERIES}.items():
            query(models, order_id)  # warm: the first run reads the catalog
            times = []
            for _ in range(reps):
                started = time.perf_counter()
                query(models, order_id)
                times.append((time.perf_counter() - started) * 1000)
            out[name] = percentiles(times, (50, 95))
        return out
    finally:
        models.close()


def measure(
    base_settings: Settings, work: Path, sizes: list[int], base_orders: int, reps: int,
    reporter: Reporter,
) -> dict[int, dict[str, Any]]:  # fmt: skip
    reporter.step(f"queries: simulating {base_orders:,} orders")
    base, span_ms, offsets = base_table(base_orders)
    out: dict[int, dict[str, Any]] = {}
    for orders in sizes:
        settings = load_settings(base=base_settings, data_dir=work / f"lake-{orders}")
        lake = build_lake(settings, base, span_ms, offsets, orders, reporter)
        reporter.step(f"queries: {len(QUERIES)} dashboard queries x {reps} over {orders:,} orders")
        out[orders] = {"lake": lake, "queries_ms": time_queries(settings, reps)}
    return out


def stage(bench: Bench) -> StageResult:
    """``shopstream bench``: dashboard query latency over the sizes of the mode."""
    result = StageResult("queries", "Dashboard query latency over big read models")
    sizes = bench.sizes
    m = measure(bench.settings("queries"), bench.work / "queries", list(sizes.query_orders),
                sizes.query_base, sizes.query_reps, bench.reporter)  # fmt: skip
    smallest, largest = min(m), max(m)
    for orders, data in m.items():
        held = data["lake"]["orders"]
        for name, ms in data["queries_ms"].items():
            base_ms = m[smallest]["queries_ms"][name]["p95"] if orders != smallest else None
            result.add(Figure(
                f"queries.{orders}.{name}", f"{name} p95, {held:,} orders", ms["p95"], "ms",
                f"same query, {m[smallest]['lake']['orders']:,} orders" if base_ms else None,
                base_ms,
                Target("value", "<=", GOAL_MS, "issue 12, over 10M orders")
                if orders == largest and name != "query floor" else None,
                note=f"p50 {ms['p50']:.1f} ms" + (
                    f"; lake: {data['lake']['writes']} writes at "
                    f"{data['lake']['write_rate']:,.0f} orders/s, "
                    f"{data['lake']['data_files']} -> "
                    f"{data['lake']['data_files_after_housekeeping']} data files after "
                    f"housekeeping ({data['lake']['housekeeping_s']:.1f} s)"
                    if name == "query floor" else ""),
            ))  # fmt: skip
    result.details = {str(k): v for k, v in m.items()}
    result.notes.append(
        "lakes written through the sink's writer (lineage on) in batches of "
        f"{sizes.query_base:,} orders, then the sink's housekeeping; one kept read-only "
        "attach (ReadModels); only orders are written, so the inventory queries read "
        "empty tables"
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", default="1000000,10000000")
    parser.add_argument("--base", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        m = measure(load_settings(data_dir=Path(tmp)), Path(tmp),
                    [int(x) for x in args.orders.split(",")], args.base, args.reps,
                    QuietReporter())  # fmt: skip
    for data in m.values():
        print(f"{data['lake']['orders']:,} orders:")
        for name, ms in data["queries_ms"].items():
            print(f"  {name:<18} p50 {ms['p50']:>7.1f} ms  p95 {ms['p95']:>7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
