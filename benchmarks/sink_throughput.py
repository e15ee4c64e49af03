"""Sink throughput: the DuckLake sink against a plain Quix app and a raw Arrow insert, and
data inlining against plain files for the sink's small per-table batches.

    python benchmarks/sink_throughput.py [--events 60000] [--rounds 3]

One input - the simulated shop through the real router and services' rules
(:func:`benchmarks.inputs.shop_run`), every topic the sink reads - is produced once into
a namespace's topics. Then, each in a child process of its own, from offset zero, and
``--rounds`` times, alternating (as the router's benchmark: the figure is each one's best
round, and the note gives the sink's rate over the baseline's round by round, the pairs
that saw the same neighbours, with their median, the figure to judge by on a noisy machine):

* **sink** - :func:`pipelines.sink.app.build_sink` as ``shopstream run sink`` builds it
  (at-least-once, a checkpoint every :data:`pipelines.sink.app.COMMIT_INTERVAL_S`),
  timed from the first record handed to it to the end of the checkpoint that wrote the
  last; each write's phases are timed too (records to Arrow, parsing into temp tables,
  the transaction);
* **quix discard** - a plain Quix app reading the same topics as raw bytes with the same
  guarantee and commit interval, discarding each record: issue 12's baseline (the sink
  should reach 0.8x of it).

And in this process, without Kafka, into fresh lakes: **raw Arrow insert** - the same
records as one Arrow table into one DuckLake table in one transaction (the ceiling), and
the sink's own writer with every record in one batch (parsing and fan-out, no Kafka).

**Data inlining**: DuckLake keeps inserts of at most ``DATA_INLINING_ROW_LIMIT`` rows in
its catalog instead of a Parquet file (DuckDB 1.5.5's default is 10 rows, and
``readmodels/lake.py`` attaches without the option, so that is what the sink runs with).
The sink's checkpoints are small per table, so the stage writes the same stream of
checkpoints with the limit at 0 (plain files), the default and a larger one, and measures
the time per checkpoint write, the dashboard's queries after N checkpoints, and the same
queries after the sink's housekeeping (file merging).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the benchmarks package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import cProfile
import io
import json
import logging
import pstats
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb

from benchmarks.common import (
    Bench,
    Figure,
    QuietReporter,
    Reporter,
    StageResult,
    Target,
    median,
    percentiles,
    run_child,
)
from benchmarks.inputs import Record, ShopRun, produce_raw, shared_shop_run
from pipelines.sink.feeds import FEEDS
from readmodels.lake import LAKE, LakeLocation, extension_dir, load_extensions
from shopstream.admin import create_topics
from shopstream.brokers import make_broker
from shopstream.settings import Settings, load_settings
from shopstream.topics import Namespace

log = logging.getLogger("benchmarks.sink")

INLINING_LIMITS: dict[str, int | None] = {
    "plain files (limit 0)": 0,
    "inlining, default (10 rows)": None,
    "inlining, 1,000 rows": 1000,
}
DASHBOARD_QUERIES = ("sales_per_minute", "channel_summary", "top_skus", "totals", "low_stock",
                     "recent_orders")  # fmt: skip


# --- inputs -----------------------------------------------------------------------------


def sink_records(run: ShopRun) -> list[Record]:
    """The shop run's records of every topic the sink reads (its traffic: the opening
    stock load before it is left out)."""
    read = {feed.topic.name for feed in FEEDS}
    return [r for r in run.traffic() if r[0] in read]


def produce_input(settings: Settings, ns: Namespace, records: list[Record]) -> None:
    create_topics(settings, ns.topics(feed.topic for feed in FEEDS))
    names = {feed.topic.name: ns.topic(feed.topic).name for feed in FEEDS}
    produce_raw(settings, records, rename=names, keep_partition=True)


# --- child processes ----------------------------------------------------------------------


@dataclass
class Phases:
    """Where the sink's time goes (seconds, summed over the run)."""

    writes: int = 0
    write_s: float = 0.0
    """The writer thread's ``write_batch`` calls (Arrow tables to committed rows)."""
    to_arrow_s: float = 0.0
    """``LakeWriter.batch_of``: the staged records into Arrow tables (consumer's thread)."""
    parse_s: float = 0.0
    """``_prepare``: each topic's JSON parsed into a temp table."""
    stage_s: float = 0.0
    """``_stage``: the rows pre-aggregates read, into temp tables."""
    write_once_s: float = 0.0
    """``_write_once`` in all (``parse`` and ``stage`` included)."""
    flush_s: float = 0.0
    """The consumer's thread in ``flush``: the checkpoint's records into Arrow, and waiting
    when the writer is :data:`pipelines.sink.app.MAX_GATHERED` records behind."""
    sizes: list[int] = field(default_factory=list)


def _timed(target: Callable[..., Any], into: Phases, attr: str) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return target(*args, **kwargs)
        finally:
            setattr(into, attr, getattr(into, attr) + time.perf_counter() - started)

    return wrapper


def child_sink(settings: Settings, ns: Namespace, total: int, profile: Path | None) -> dict:
    """Run the sink over the namespace's topics until it wrote ``total`` records."""
    from pipelines.sink.app import build_sink, tune_process

    tune_process()  # as `shopstream run sink` does
    built = build_sink(
        settings, ns, consumer_group=f"bench-sink-{ns.suffix}-{uuid.uuid4().hex[:4]}"
    )
    sink = built.processor
    phases = Phases()
    writer = sink.writer
    writer.batch_of = _timed(writer.batch_of, phases, "to_arrow_s")  # type: ignore[method-assign]
    writer._prepare = _timed(writer._prepare, phases, "parse_s")  # type: ignore[method-assign]
    writer._stage = _timed(writer._stage, phases, "stage_s")  # type: ignore[method-assign]
    writer._write_once = _timed(writer._write_once, phases, "write_once_s")  # type: ignore[method-assign]
    marks = {"first": 0.0, "consumed": 0.0, "done": 0.0, "written": 0}
    write, flush = writer.write_batch, sink.flush

    def first_add(**record: Any) -> None:
        # The first record starts the clock, then the sink's own add takes over: the
        # records are counted per checkpoint, not timed one by one (nor are the
        # baseline's: child_discard).
        marks["first"] = time.perf_counter()
        marks["cpu_first"] = time.thread_time()
        del sink.add
        sink.add(**record)

    def timed_write(batch: Any) -> Any:  # in the writer thread
        started = time.perf_counter()
        result = write(batch)
        phases.write_s += time.perf_counter() - started
        phases.writes += 1
        phases.sizes.append(result.records)
        marks["written"] += result.records + result.skipped
        if marks["written"] >= total and not marks["done"]:
            marks["done"] = time.perf_counter()
            built.app.stop()
        return result

    sink.add = first_add  # type: ignore[method-assign]
    writer.write_batch = timed_write  # type: ignore[method-assign]
    timed_flush = _timed(flush, phases, "flush_s")

    def flush_and_clock() -> None:  # in the consumer's thread
        consumed = sink.counters.consumed
        timed_flush()
        if sink.counters.consumed > consumed:  # the last records handed over, so far
            marks["consumed"] = time.perf_counter()
            marks["cpu_last"] = time.thread_time()

    sink.flush = flush_and_clock  # type: ignore[method-assign]
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    built.app.run()
    sink.close()
    if profiler and profile:
        profiler.disable()
        profiler.dump_stats(str(profile))
    seconds = marks["done"] - marks["first"]
    sizes = phases.sizes
    out = asdict(phases) | {
        "records": marks["written"], "seconds": seconds,
        "rate": marks["written"] / seconds if seconds > 0 else 0.0,
        "write_records_median": median(sizes), "sizes": None,
        "consumed_s": marks["consumed"] - marks["first"],
        "consumer_cpu_s": marks.get("cpu_last", 0.0) - marks.get("cpu_first", 0.0),
    }  # fmt: skip
    if profiler and profile:
        out["profile"] = top_functions(profile)
    return out


def child_discard(settings: Settings, ns: Namespace, total: int) -> dict:
    """A plain Quix app over the same topics that discards every record."""
    from pipelines.runtime.quix import input_topic, quix_app
    from pipelines.sink.app import COMMIT_INTERVAL_S

    app: Any = None
    count, first, last = 0, 0.0, 0.0

    def processed(*_: Any) -> None:
        # Clock reads at the first and the last record only, as the sink's (child_sink).
        nonlocal count, first, last
        count += 1
        if count == 1:
            first = time.perf_counter()
        elif count == total:
            last = time.perf_counter()
            app.stop()

    app = quix_app(
        settings, f"bench-discard-{ns.suffix}", f"bench-discard-{ns.suffix}-{uuid.uuid4().hex[:4]}",
        processing_guarantee="at-least-once", commit_interval=COMMIT_INTERVAL_S,
        on_message_processed=processed,
    )  # fmt: skip
    for feed in FEEDS:
        app.dataframe(input_topic(app, ns.topic(feed.topic))).update(lambda _v: None)
    app.run()
    seconds = last - first
    return {"records": count, "seconds": seconds,
            "rate": (count - 1) / seconds if seconds > 0 else 0.0}  # fmt: skip


def top_functions(profile: Path, limit: int = 18) -> dict[str, list[str]]:
    """The profile's heaviest functions, by own time and by cumulative time."""
    out: dict[str, list[str]] = {}
    for key in ("tottime", "cumulative"):
        buffer = io.StringIO()
        stats = pstats.Stats(str(profile), stream=buffer)
        stats.strip_dirs().sort_stats(key).print_stats(limit)
        lines = [line for line in buffer.getvalue().splitlines() if line.strip()]
        start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
        out[key] = lines[start:]
    return out


# --- no Kafka: raw Arrow insert, the writer in one batch ---------------------------------


def lake_connection(settings: Settings, inlining: int | None = None) -> duckdb.DuckDBPyConnection:
    """A writer connection like :func:`readmodels.lake.connect` (SQLite catalog in WAL
    mode), with ``DATA_INLINING_ROW_LIMIT`` set if ``inlining`` is not ``None``."""
    location = LakeLocation.of(settings)
    catalog = Path(location.catalog.removeprefix("sqlite:"))
    catalog.parent.mkdir(parents=True, exist_ok=True)
    Path(location.data_path).mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"extension_directory": str(extension_dir())})
    load_extensions(con, ("sqlite", "ducklake"))
    options = [f"DATA_PATH '{location.data_path}'", "META_JOURNAL_MODE 'WAL'"]
    if inlining is not None:
        options.append(f"DATA_INLINING_ROW_LIMIT {inlining}")
    con.execute(f"ATTACH 'ducklake:{location.catalog}' AS {LAKE} ({', '.join(options)})")
    con.execute("SET TimeZone = 'UTC'")
    return con


def raw_arrow_insert(settings: Settings, records: list[Record]) -> float:
    """Records/s of the records as Arrow tables (one per topic, as the sink makes them)
    into DuckLake tables of the same columns, in one transaction: the ceiling."""
    from pipelines.sink.writer import THREADS, Staging, to_batch

    con = lake_connection(settings)
    con.execute(f"SET threads = {THREADS}")
    try:
        started = time.perf_counter()
        batch = to_batch(Staging().extend(records))  # type: ignore[arg-type]
        con.execute("BEGIN")
        for i, table in enumerate(batch.values()):
            con.register(f"raw_{i}", table)
            con.execute(f"CREATE TABLE {LAKE}.raw_{i} AS SELECT * FROM raw_{i}")
        con.execute("COMMIT")
        return len(records) / (time.perf_counter() - started)
    finally:
        con.close()


def writer_one_batch(
    settings: Settings, records: list[Record], ns: Namespace
) -> tuple[float, dict]:
    """Records/s of the sink's writer with every record in one write (one transaction)."""
    from pipelines.sink.app import feeds_for
    from pipelines.sink.writer import LakeWriter
    from readmodels.generations import open_for

    con = lake_connection(settings)
    try:
        generation, _ = open_for(con, "bench")
        writer = LakeWriter(con, generation, feeds_for(ns))
        renamed = [(ns.name(r[0]), *r[1:]) for r in records]
        started = time.perf_counter()
        result = writer.write(renamed)  # type: ignore[arg-type]
        return len(records) / (time.perf_counter() - started), result.rows
    finally:
        con.close()


# --- data inlining vs plain files ----------------------------------------------------------


def checkpoints(traffic: list[Record], size: int, count: int) -> list[list[Record]]:
    """``count`` checkpoints of ``size`` records of ``traffic``, cycled with fresh offsets
    if there are not enough."""
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    out: list[list[Record]] = []
    i = 0
    for _ in range(count):
        batch: list[Record] = []
        for _ in range(size):
            topic, partition, _, ts, key, value, headers = traffic[i % len(traffic)]
            i += 1
            offset = offsets[(topic, partition)]
            offsets[(topic, partition)] += 1
            batch.append((topic, partition, offset, ts, key, value, headers))
        out.append(batch)
    return out


def query_times(settings: Settings, reps: int) -> dict[str, float]:
    """Median ms of each dashboard query through :class:`readmodels.queries.ReadModels`."""
    from readmodels.queries import ReadModels

    models = ReadModels(settings)
    try:
        models.generation  # noqa: B018 - attach and find the generation before timing
        out: dict[str, float] = {}
        for name in DASHBOARD_QUERIES:
            times = []
            for _ in range(reps):
                started = time.perf_counter()
                getattr(models, name)()
                times.append((time.perf_counter() - started) * 1000)
            out[name] = median(times)
        return out
    finally:
        models.close()


def inlining(
    base: Settings, work: Path, records: list[Record], commits: int, size: int, reps: int,
    reporter: Reporter,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Each inlining setting over the same checkpoints: write times, query times before
    and after housekeeping, data files and catalog size."""
    from pipelines.sink.app import data_files, feeds_for, housekeeping
    from pipelines.sink.writer import LakeWriter
    from readmodels.generations import open_for
    from shopstream.topics import CATALOG

    batches = checkpoints(records, size, commits)
    out: dict[str, dict[str, Any]] = {}
    for label, limit in INLINING_LIMITS.items():
        reporter.step(f"sink: {commits} checkpoints of {size} records, {label}")
        settings = load_settings(base=base, data_dir=work / f"inlining-{limit}")
        con = lake_connection(settings, limit)
        generation, _ = open_for(con, "bench")
        writer = LakeWriter(con, generation, feeds_for(CATALOG))
        times = [writer.write(batch).seconds * 1000 for batch in batches]  # type: ignore[arg-type]
        files = data_files(con)
        con.close()
        catalog = Path(LakeLocation.of(settings).catalog.removeprefix("sqlite:"))
        before = query_times(settings, reps)
        con = lake_connection(settings, limit)
        started = time.perf_counter()
        housekeeping(con)
        housekeeping_s = time.perf_counter() - started
        files_after = data_files(con)
        con.close()
        after = query_times(settings, reps)
        out[label] = {
            "limit": limit, "write_ms": percentiles(times),
            "write_ms_mean": sum(times) / len(times),
            "queries_ms": before, "queries_ms_total": sum(before.values()),
            "queries_after_housekeeping_ms": after,
            "queries_after_housekeeping_ms_total": sum(after.values()),
            "housekeeping_s": housekeeping_s, "data_files": files,
            "data_files_after_housekeeping": files_after,
            "catalog_mib": catalog.stat().st_size / 2**20 if catalog.exists() else None,
        }  # fmt: skip
    return out


# --- the stage -------------------------------------------------------------------------------


def stage(bench: Bench) -> StageResult:
    """``shopstream bench``: the sink against a plain Quix app and a raw Arrow insert."""
    result = StageResult("sink", "Sink (DuckLake) vs a plain Quix app and a raw Arrow insert")
    sizes = bench.sizes
    reporter = bench.reporter
    reporter.step("sink: simulating the shop (router + services rules)")
    records = sink_records(shared_shop_run(bench.cache, sizes.sink_events))
    settings = bench.settings("sink")
    ns = Namespace(f"s{uuid.uuid4().hex[:6]}")
    reporter.step(f"sink: producing {len(records):,} records into {len(FEEDS)} topics")
    produce_input(settings, ns, records)
    total = len(records)
    log_path = bench.log_path("sink")
    common = ["--ns", ns.suffix, "--total", str(total)]
    sinks: list[dict] = []
    discards: list[dict] = []
    for round_no in range(sizes.sink_rounds):
        # Alternating, so that each pair of runs saw the same neighbours on this machine.
        reporter.step(f"sink: round {round_no + 1}, the sink over {total:,} records")
        sinks.append(run_child(
            "benchmarks.sink_throughput",
            ["--child", "sink", "--data-dir", str(bench.work / f"sink-{round_no}"), *common],
            settings, log_path,
        ))  # fmt: skip
        reporter.step(f"sink: round {round_no + 1}, a plain Quix app discarding them")
        discards.append(run_child(
            "benchmarks.sink_throughput",
            ["--child", "discard", "--data-dir", str(bench.work / f"discard-{round_no}"), *common],
            settings, log_path,
        ))  # fmt: skip
    paired = [
        s["rate"] / d["rate"] if d["rate"] else 0.0 for s, d in zip(sinks, discards, strict=True)
    ]
    sink = max(sinks, key=lambda run: run["rate"])
    discard = max(discards, key=lambda run: run["rate"])
    reporter.step("sink: raw Arrow insert and the writer in one batch (no Kafka)")
    raw_rate = raw_arrow_insert(load_settings(base=settings, data_dir=bench.work / "raw"), records)
    one_rate, rows = writer_one_batch(
        load_settings(base=settings, data_dir=bench.work / "one"), records, ns
    )
    ratio = median(paired)
    profile = None
    if ratio < 0.8 and bench.mode == "full":
        reporter.step("sink: below 0.8x - profiling a second run (cProfile)")
        prof = bench.out / "sink.prof"
        again = run_child(
            "benchmarks.sink_throughput",
            ["--child", "sink", "--data-dir", str(bench.work / "sink-prof"), "--profile",
             str(prof), *common],
            settings, log_path,
        )  # fmt: skip
        profile = again.get("profile")
        (bench.out / "sink-profile.txt").write_text(
            "\n".join(["by own time:", *profile["tottime"], "", "by cumulative time:",
                       *profile["cumulative"]]) if profile else ""
        )  # fmt: skip
    result.add(Figure(
        "sink.sink", "sink (shopstream run sink's app)", sink["rate"], "records/s",
        "quix app consuming the same topics, discarding", discard["rate"],
        Target("ratio", ">=", 0.8, "issue 12"),
        note=f"{sink['records']:,} records in {sink['writes']} writes (median "
        f"{sink['write_records_median']:.0f} records each); best of {len(sinks)} rounds each; "
        f"paired rounds: {', '.join(f'{r:.2f}x' for r in paired)}, median {median(paired):.2f}x",
    ))  # fmt: skip
    result.add(Figure("sink.discard", "quix app, same topics, discarding", discard["rate"],
                      "records/s"))  # fmt: skip
    result.add(Figure(
        "sink.vs_raw_arrow", "sink vs a raw Arrow insert", sink["rate"], "records/s",
        "raw Arrow insert into DuckLake (one transaction, no Kafka)", raw_rate,
    ))  # fmt: skip
    result.add(Figure(
        "sink.writer_one_batch", "the sink's writer, every record in one batch (no Kafka)",
        one_rate, "records/s", "raw Arrow insert into DuckLake (one transaction, no Kafka)",
        raw_rate,
    ))  # fmt: skip
    wall = sink["seconds"]
    breakdown = {
        "JSON parse into temp tables (_prepare)": sink["parse_s"],
        "pre-aggregates' rows into temp tables (_stage)": sink["stage_s"],
        "transaction: inserts + offsets + commit": sink["write_once_s"] - sink["parse_s"]
        - sink["stage_s"],
        "rest of the writes (offset checks, retries)": sink["write_s"] - sink["write_once_s"],
    }  # fmt: skip
    result.details = {
        "records": total, "sink": sink, "discard": discard, "paired": paired,
        "sink_rates": [run["rate"] for run in sinks],
        "discard_rates": [run["rate"] for run in discards], "raw_arrow_rate": raw_rate,
        "writer_one_batch_rate": one_rate, "writer_one_batch_rows": rows,
        "time_split_s": breakdown, "profile": profile,
    }  # fmt: skip
    split = ", ".join(f"{k} {v / wall:.0%}" for k, v in breakdown.items()) if wall else ""
    if wall:
        result.notes.append(
            f"the sink's {wall:.2f} s: the consumer handed over its last record after "
            f"{sink['consumed_s']:.2f} s, and spent {sink['flush_s']:.2f} s of it in "
            f"checkpoints (records into Arrow {sink['to_arrow_s']:.2f} s); beside it the "
            f"writer thread was busy {sink['write_s'] / wall:.0%} of the run: {split}"
        )
    if profile is None and ratio < 0.8:
        result.notes.append("below target; the cProfile run happens in full runs only "
                            "(`shopstream bench --only sink`)")  # fmt: skip

    reporter.step("sink: data inlining vs plain files")
    modes = inlining(settings, bench.work / "inlining", records, sizes.inlining_commits,
                     sizes.inlining_batch, max(3, sizes.query_reps // 2), reporter)  # fmt: skip
    result.details["inlining"] = modes
    files = modes["plain files (limit 0)"]
    for label, m in modes.items():
        key = label.split(" ")[0].strip(",") + (
            f"_{m['limit']}" if m["limit"] is not None else "_default"
        )
        result.add(Figure(
            f"sink.inlining.{key}.write_p50", f"checkpoint write p50, {label}",
            m["write_ms"]["p50"], "ms", "plain files (limit 0)", files["write_ms"]["p50"],
            note=f"p95 {m['write_ms']['p95']:.0f} ms; {m['data_files']} data files after "
            f"{sizes.inlining_commits} checkpoints, {m['data_files_after_housekeeping']} after "
            f"housekeeping; catalog {m['catalog_mib'] or 0:.1f} MiB",
        ))  # fmt: skip
        result.add(Figure(
            f"sink.inlining.{key}.queries", f"dashboard queries after {sizes.inlining_commits} "
            f"checkpoints, {label}", m["queries_ms_total"], "ms", "plain files (limit 0)",
            files["queries_ms_total"],
            note=f"after housekeeping {m['queries_after_housekeeping_ms_total']:.0f} ms "
            f"(sum of the medians of {', '.join(DASHBOARD_QUERIES)})",
        ))  # fmt: skip
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=["sink", "discard"], help=argparse.SUPPRESS)
    parser.add_argument("--ns", help=argparse.SUPPRESS)
    parser.add_argument("--total", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--profile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        logging.basicConfig(level=logging.WARNING)
        settings = load_settings(data_dir=Path(args.data_dir))
        ns = Namespace(args.ns)
        if args.child == "sink":
            doc = child_sink(settings, ns, args.total, Path(args.profile) if args.profile else None)
        else:
            doc = child_discard(settings, ns, args.total)
        print(json.dumps(doc, default=str))
        return 0
    import dataclasses
    import tempfile

    from benchmarks.common import FULL

    sizes = dataclasses.replace(FULL, sink_events=args.events, sink_rounds=args.rounds)
    with make_broker("embedded") as broker, tempfile.TemporaryDirectory() as tmp:
        bench = Bench("full", sizes, Path(tmp), Path("artifacts/bench/sink"), broker.address,
                      "embedded", "embedded", QuietReporter())  # fmt: skip
        bench.out.mkdir(parents=True, exist_ok=True)
        result = stage(bench)
    for f in result.figures:
        ratio = f" = {f.ratio:.2f}x {f.baseline_label}" if f.ratio is not None else ""
        print(f"{f.label}: {f.value:,.1f} {f.unit}{ratio}")
    for note in result.notes:
        print(f"- {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
