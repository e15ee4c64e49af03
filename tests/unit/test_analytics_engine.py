"""The streaming engines against the independent polars computation, window by window.

The input is shuffled (jitter within grace) with a share of events held back beyond
grace; partitions interleave their digests in random order at the combiner. Every
aggregate and the set of late records must equal :class:`BatchAnalytics` exactly.
Then the same with crashes: engines persisted at checkpoints and rebuilt from
their chunks, input replayed from the last checkpoint, as Kafka would.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pipelines.analytics.catalog import category_lookup
from pipelines.analytics.combine import GlobalCombiner
from pipelines.analytics.config import AnalyticsConfig
from pipelines.analytics.local import PartitionAggregator
from pipelines.analytics.records import Coordinates, Output, parse_time_ms
from shopstream.events import DecodeError, decode
from shopstream.records import (
    ChannelSales,
    DemandWindow,
    LateEvent,
    ReturnsWindow,
    StoreSales,
    TopSku,
)
from support.analytics_oracle import BatchAnalytics, InputRecord
from support.analytics_samples import Sample, SampleSpec, generate

PARTITIONS = 3
DAY_MS = 86_400_000
CATEGORY_OF = category_lookup({f"SKU-{10001 + i:05d}": f"cat-{i % 4}" for i in range(40)})


def partition_of(store: str) -> int:
    return int(store[3:]) % PARTITIONS


@dataclass
class Run:
    """What one simulated run of the app produced, and what it consumed."""

    outputs: dict[str, list[Output]] = field(default_factory=lambda: defaultdict(list))
    records: list[InputRecord] = field(default_factory=list)

    def frame(self, role: str, columns: list[str]) -> pl.DataFrame:
        return pl.DataFrame([e.value for e in self.outputs[role]]).select(columns)

    def late(self) -> pl.DataFrame:
        kinds = {
            "orders": "orders",
            "returns": "returns",
            "questions": "questions",
            "stock": "stock",
        }
        return pl.DataFrame(
            [
                {
                    "kind": kinds[e.value["input"]],
                    "partition": e.value["partition"],
                    "offset": e.value["offset"],
                }
                for e in self.outputs["late"]
            ],
            schema={"kind": pl.String, "partition": pl.Int64, "offset": pl.Int64},
        ).sort(pl.all())


def arrivals(samples: list[Sample]) -> Iterator[InputRecord]:
    """Each sample with its partition, per-topic offset and per-partition arrival order."""
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    seqs: dict[int, int] = defaultdict(int)
    for s in samples:
        p = partition_of(s.key)
        yield InputRecord(s.kind, p, offsets[s.kind, p], seqs[p], s.value)
        offsets[s.kind, p] += 1
        seqs[p] += 1


def with_ticks(records: list[InputRecord], seed: int) -> list[InputRecord]:
    """Sprinkle ticks for single inputs among the events, as the ticker sends for idle
    inputs: each raises one input to its partition's latest event time, so events of
    that input arriving after it are late if they are more than grace behind."""
    rng = random.Random(seed)
    out: list[InputRecord] = []
    latest: dict[int, int] = {}
    seqs: dict[int, int] = defaultdict(int)
    for r in records:
        t = parse_time_ms(r.value["occurred_at"]) if r.value else 0
        latest[r.partition] = max(latest.get(r.partition, t), t)
        if rng.random() < 0.01:
            kind = rng.choice(["returns", "questions", "stock"])
            out.append(
                InputRecord(
                    "tick",
                    r.partition,
                    0,
                    seqs[r.partition],
                    watermark=latest[r.partition],
                    inputs=(kind,),
                )
            )
            seqs[r.partition] += 1
        out.append(InputRecord(r.kind, r.partition, r.offset, seqs[r.partition], r.value))
        seqs[r.partition] += 1
    return out


def with_final_ticks(records: list[InputRecord], samples: list[Sample]) -> list[InputRecord]:
    end = max(s.time_ms for s in samples) + DAY_MS
    seq = len(records)
    return records + [InputRecord("tick", p, 0, seq + p, watermark=end) for p in range(PARTITIONS)]


class Pipeline:
    """Both stages in one process, with checkpoints like the app's (state + outputs)."""

    def __init__(self, config: AnalyticsConfig, digest_seed: int) -> None:
        self.config = config
        self.store: dict[int | str, dict[str, Any]] = defaultdict(dict)
        self.rng = random.Random(digest_seed)
        self.restore()

    def restore(self) -> None:
        def read(name: int | str) -> dict[str, Any]:  # fresh objects, as a store read gives
            return orjson.loads(orjson.dumps(self.store[name]))

        self.aggs = [
            PartitionAggregator.restore(p, self.config, read(p)) for p in range(PARTITIONS)
        ]
        self.combiner = GlobalCombiner.restore(
            self.config, PARTITIONS, read("combiner"), CATEGORY_OF
        )
        self.pending: list[Output] = []  # digests in flight to the combiner
        self.uncommitted: list[Output] = []

    def feed(self, record: InputRecord) -> None:
        agg = self.aggs[record.partition]
        if record.kind == "tick":
            out = agg.on_tick(record.watermark, record.inputs)  # type: ignore[arg-type]
        else:
            where = Coordinates(record.kind, record.partition, record.offset)
            out = agg.on_event(record.kind, record.value, where)  # type: ignore[arg-type]
        for e in out:
            (self.pending if e.role == "digest" else self.uncommitted).append(e)
        # Digests from different partitions reach the combiner in any interleaving,
        # but each partition's digests stay in order (one producer, one partition).
        while self.pending and self.rng.random() < 0.5:
            self.uncommitted += self.combiner.on_digest(self.pending.pop(0).value)

    def drain(self) -> None:
        while self.pending:
            self.uncommitted += self.combiner.on_digest(self.pending.pop(0).value)

    def checkpoint(self, run: Run) -> None:
        self.drain()
        for name, engine in [*enumerate(self.aggs), ("combiner", self.combiner)]:
            upserts, deleted = engine.take_changes()
            chunks = self.store[name]
            # Through JSON, as the Quix store keeps them: no object shared with the engine.
            chunks.update(orjson.loads(orjson.dumps(upserts)))
            for chunk in deleted:
                chunks.pop(chunk, None)
            assert set(chunks) == set(engine.chunk_names())
        for e in self.uncommitted:
            run.outputs[e.role].append(e)
        self.uncommitted = []


def simulate(
    records: list[InputRecord],
    config: AnalyticsConfig,
    *,
    digest_seed: int = 0,
    checkpoint_every: int = 97,
    crash_at: frozenset[int] = frozenset(),
) -> Run:
    run = Run(records=records)
    pipeline = Pipeline(config, digest_seed)
    committed = 0
    i = 0
    while i < len(records):
        if i in crash_at:
            crash_at = crash_at - {i}
            pipeline.restore()  # lose everything since the last checkpoint ...
            i = committed  # ... and re-read the input from there
            continue
        pipeline.feed(records[i])
        i += 1
        if i % checkpoint_every == 0 or i == len(records):
            pipeline.checkpoint(run)
            committed = i
    return run


def assert_all_equal(run: Run, config: AnalyticsConfig) -> BatchAnalytics:
    ref = BatchAnalytics(run.records, config, CATEGORY_OF)
    assert_frame_equal(run.late(), ref.late_records())
    for role, expected, order in (
        ("sales_by_channel", ref.sales_by("channel"), ["window_start", "channel"]),
        ("sales_by_store", ref.sales_by("store_id"), ["window_start", "store_id"]),
        ("top_skus", ref.top_skus(), ["window_end", "rank"]),
        ("returns", ref.returns_stats(), ["window_start", "dimension", "key"]),
        ("demand", ref.demand(), ["window_start", "sku"]),
    ):
        got = run.frame(role, expected.columns).sort(order)
        assert_same(got, expected, role)
    return ref


def assert_same(got: pl.DataFrame, expected: pl.DataFrame, what: str) -> None:
    """Equal row for row: keys and counts exactly; euros and rates to the last bit but one
    (polars may divide by 100 as a multiplication by 0.01, one ulp away)."""
    assert got.height == expected.height, f"{what}: {got.height} rows, expected {expected.height}"
    assert_frame_equal(got, expected, check_dtypes=False, rel_tol=1e-12, abs_tol=0.0)


def test_samples_are_valid_contract_events() -> None:
    for sample in generate(SampleSpec(minutes=10), seed=1):
        assert not isinstance(decode(orjson.dumps(sample.value)), DecodeError)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_every_aggregate_equals_polars_on_shuffled_input_with_late_events(seed: int) -> None:
    samples = generate(SampleSpec(minutes=40, late_ratio=0.03), seed=seed)
    config = AnalyticsConfig(grace_ms=60_000, top_n=5)
    records = with_ticks(list(arrivals(samples)), seed)
    records = with_final_ticks(records, samples)
    run = simulate(records, config, digest_seed=seed)
    ref = assert_all_equal(run, config)
    # The input exercises what it claims to: late events, stock-outs, returns.
    assert ref.late_records().height >= 10
    assert ref.demand()["oos_questions"].sum() > 0
    assert ref.returns_stats().height > 0


def test_every_top_seller_when_top_n_is_unbounded() -> None:
    samples = generate(SampleSpec(minutes=20), seed=5)
    config = AnalyticsConfig(grace_ms=60_000, top_n=None)
    run = simulate(with_final_ticks(list(arrivals(samples)), samples), config)
    assert_all_equal(run, config)


@pytest.mark.parametrize("seed", [11, 12])
def test_crash_and_restore_from_chunks_gives_the_same_windows(seed: int) -> None:
    samples = generate(SampleSpec(minutes=30), seed=seed)
    config = AnalyticsConfig(grace_ms=60_000)
    records = with_final_ticks(list(arrivals(samples)), samples)
    rng = random.Random(seed)
    crashes = frozenset(rng.sample(range(1, len(records)), 6))
    run = simulate(records, config, digest_seed=seed, checkpoint_every=53, crash_at=crashes)
    assert_all_equal(run, config)


def test_replayed_digests_are_merged_once() -> None:
    samples = generate(SampleSpec(minutes=15), seed=21)
    config = AnalyticsConfig(grace_ms=60_000)
    records = with_final_ticks(list(arrivals(samples)), samples)
    aggs = [PartitionAggregator(p, config) for p in range(PARTITIONS)]
    digests: list[dict[str, Any]] = []
    for r in records:
        agg = aggs[r.partition]
        out = (
            agg.on_tick(r.watermark)
            if r.kind == "tick"
            else agg.on_event(r.kind, r.value, Coordinates(r.kind, r.partition, r.offset))  # type: ignore[arg-type]
        )
        digests += [e.value for e in out if e.role == "digest"]

    def outputs(stream: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        combiner = GlobalCombiner(config, PARTITIONS, CATEGORY_OF)
        return [(e.role, e.value) for d in stream for e in combiner.on_digest(d)]

    once = outputs(digests)
    # At-least-once: every digest delivered twice ...
    assert outputs([d for d in digests for _ in (0, 1)]) == once
    # ... or a replay that re-covers panes already merged along with new ones.
    sales = [d for d in digests if d["family"] == "sales" and d["source"] == 0]
    first, second = sales[1], sales[2]
    wider = first | {"through": second["through"], "panes": first["panes"] | second["panes"]}
    replay = [d for d in digests if d is not second]
    replay.insert(replay.index(first) + 1, wider)
    assert outputs(replay) == once


def test_every_output_follows_its_published_contract() -> None:
    # The sink and the dashboard read these records by the contracts in shopstream.records.
    contract = {
        "sales_by_channel": ChannelSales, "sales_by_store": StoreSales, "top_skus": TopSku,
        "returns": ReturnsWindow, "demand": DemandWindow, "late": LateEvent,
    }  # fmt: skip
    samples = generate(SampleSpec(minutes=40, late_ratio=0.03), seed=7)
    records = with_final_ticks(with_ticks(list(arrivals(samples)), 7), samples)
    bad = InputRecord("orders", 0, 10**6, 10**6, {"event_type": "OrderPlaced"})  # unreadable
    run = simulate([*records, bad], AnalyticsConfig(grace_ms=60_000, top_n=5))
    seen = {role for role, outputs in run.outputs.items() if outputs}
    assert set(contract) <= seen
    for role, outputs in run.outputs.items():
        for output in outputs:
            if role == "alert":
                assert not isinstance(decode(orjson.dumps(output.value)), DecodeError)
            else:
                contract[role].model_validate(orjson.loads(orjson.dumps(output.value)))
    assert any(o.value["reason"] == "unreadable" for o in run.outputs["late"])
