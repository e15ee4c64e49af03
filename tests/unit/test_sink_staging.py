"""The sink's consumer side, without a broker: what a staged record keeps, how the sink
tells a backlog from live traffic, and the process tuning ``shopstream run sink`` does.

The consumer here is a fake (it answers positions and the last offsets its fetches saw);
the broker-backed runs are tests/integration/test_sink.py and the benchmark."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from pipelines.sink.app import BACKLOG_RECORDS
from pipelines.sink.writer import Staging, to_batch
from shopstream.settings import Settings, load_settings
from support.lake import sink_for

HEADERS = [("event_type", b"OrderPlaced"), ("app", b"router"), ("emitted_at", b"1764590400123"),
           ("correlation_id", b"O-1")]  # fmt: skip


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data")


def test_a_staged_record_keeps_the_lineage_headers_and_all_of_them_only_where_read() -> None:
    staging = Staging(all_headers={"deadletters"})
    staging.add("orders", 2, 7, 1000, b"k", b"{}", HEADERS)
    staging.add("orders", 2, 8, 1001, None, None, None)  # a tombstone without headers
    staging.add("deadletters", 0, 0, 1002, b"k", b"x", [("error.kind", b"bad_json")])
    batch = to_batch(staging)
    orders = batch["orders"].to_pydict()
    assert orders["app_header"] == [b"router", None]
    assert orders["emitted_at_header"] == [b"1764590400123", None]
    assert orders["headers"] == [None, None]  # not kept: the orders' rows read two of them
    assert orders["kafka_offset"] == [7, 8] and orders["value"] == [b"{}", None]
    letters = batch["deadletters"].to_pydict()
    assert letters["headers"] == [[{"k": "error.kind", "v": b"bad_json"}]]
    assert letters["app_header"] == [None]


@pytest.mark.parametrize(
    "headers",
    [
        # as every app emits them (pipelines.runtime.outputs): the two last
        [("event_type", b"OrderPlaced"), ("app", b"router"), ("emitted_at", b"9")],
        # anywhere else
        [("emitted_at", b"9"), ("app", b"router"), ("event_type", b"OrderPlaced")],
        [("app", b"router"), ("event_type", b"OrderPlaced"), ("emitted_at", b"9")],
        # twice: the last one counts, wherever they are
        [("app", b"simulator"), ("emitted_at", b"1"), ("app", b"router"), ("emitted_at", b"9")],
        [("app", b"simulator"), ("app", b"router"), ("emitted_at", b"1"), ("emitted_at", b"9")],
    ],
)
def test_the_lineage_headers_are_found_wherever_they_are(headers: list[Any]) -> None:
    staging = Staging()
    staging.add("orders", 0, 0, 0, b"k", b"{}", headers)
    orders = to_batch(staging)["orders"].to_pydict()
    assert (orders["app_header"], orders["emitted_at_header"]) == ([b"router"], [b"9"])


def test_a_record_with_one_lineage_header_or_none_keeps_what_it_has() -> None:
    staging = Staging()
    staging.add("orders", 0, 0, 0, b"k", b"{}", [("emitted_at", b"9")])
    staging.add("orders", 0, 1, 0, b"k", b"{}", [("app", b"router")])
    staging.add("orders", 0, 2, 0, b"k", b"{}", [])
    orders = to_batch(staging)["orders"].to_pydict()
    assert orders["app_header"] == [None, b"router", None]
    assert orders["emitted_at_header"] == [b"9", None, None]


def test_the_writer_keeps_all_headers_of_the_dead_letters_only(settings: Settings) -> None:
    sink = sink_for(settings)
    staging = sink.writer.staging()
    for topic in ("orders", "deadletters", "stock.levels"):
        staging.add(topic, 0, 0, 0, b"k", b"{}", HEADERS)
    kept = {topic: table["headers"].null_count == 0 for topic, table in to_batch(staging).items()}
    assert kept == {"orders": False, "deadletters": True, "stock.levels": False}
    sink.close()


class Consumer:
    """Answers like confluent-kafka's: positions (-1001 before the first record) and the
    last offsets its fetches saw, or raises like a closed consumer."""

    def __init__(self, positions: dict[tuple[str, int], int], last: dict[tuple[str, int], int]):
        self.positions, self.last, self.closed = positions, last, False

    def assignment(self) -> list[TopicPartition]:
        self._check()
        return [TopicPartition(t, p) for t, p in self.positions]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        self._check()
        return [TopicPartition(tp.topic, tp.partition, self.positions[(tp.topic, tp.partition)])
                for tp in partitions]  # fmt: skip

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False) -> tuple[int, int]:
        assert cached, "the sink asks what the fetches saw, not the broker"
        return 0, self.last.get((tp.topic, tp.partition), -1001)

    def _check(self) -> None:
        if self.closed:
            raise RuntimeError("Consumer closed")


def test_lag_adds_up_what_the_fetches_saw_beyond_the_positions(settings: Settings) -> None:
    sink = sink_for(settings)
    assert sink.lag() == 0  # no partitions yet
    sink.consumer = Consumer(
        positions={("orders", 0): 100, ("orders", 1): -1001, ("returns", 0): 50},
        last={("orders", 0): 12_100, ("orders", 1): 900, ("returns", 0): 40},
    )
    assert sink.lag() == 12_000  # no position yet, or a position past what was seen: 0
    sink.consumer.closed = True  # at the end of a run the sink drains after Quix closed it
    assert sink.lag() == 0
    sink.close()


def test_a_checkpoint_tells_the_writer_whether_the_sink_reads_a_backlog(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = sink_for(settings)
    said: list[bool] = []
    put = sink._behind.put

    def spy(batch: Any, behind: bool = False) -> None:
        said.append(behind)
        put(batch, behind=behind)

    monkeypatch.setattr(sink._behind, "put", spy)
    sink.consumer = Consumer({("orders", 0): 0}, {("orders", 0): BACKLOG_RECORDS})
    sink.add(b"{}", b"k", 0, HEADERS, "orders", 0, 0)
    sink.flush()
    sink.consumer.last[("orders", 0)] = 10  # caught up
    sink.add(b"{}", b"k", 0, HEADERS, "orders", 0, 1)
    sink.flush()
    sink.drain()  # waiting for the writes: never a backlog's wait
    assert said == [True, False, False]
    assert sink.counters.consumed == 2
    sink.close()


def test_shopstream_run_sink_tunes_its_process() -> None:
    probe = textwrap.dedent("""
        import gc
        import pyarrow as pa
        from pipelines.sink.app import GC_YOUNG_THRESHOLD, tune_process
        tune_process()
        print(pa.default_memory_pool().backend_name, gc.get_threshold()[0] == GC_YOUNG_THRESHOLD)
    """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).parents[2])  # fmt: skip
    assert done.stdout.split() == ["jemalloc", "True"]
