"""The producer against a real broker (every lane): everything sent is read back.

The simulator is deterministic, so each test regenerates locally what the
command must have sent and compares it, record by record, with what a consumer
reads from the topics: per key in order (the key keeps a store's events in
one partition, in order), with headers and the event time as Kafka timestamp.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_CREATE_TIME, TopicPartition

from producers.app import ProduceOptions, record_streams
from producers.faults import EXPECTED_ERROR, FaultConfig
from producers.record import INGRESS_CHANNELS, Record, to_ms
from shopstream.cli.main import main
from shopstream.events import DecodeError, decode
from shopstream.kafka import make_consumer
from shopstream.settings import Settings
from shopstream.status import read_statuses
from shopstream.topics import INGRESS_BY_CHANNEL, TopicSpec

Wire = tuple[bytes, bytes, tuple[tuple[str, bytes], ...], int]


def ingress_topics(isolated_topics: Callable[..., list[TopicSpec]]) -> dict[str, str]:
    specs = isolated_topics(*(INGRESS_BY_CHANNEL[c] for c in INGRESS_CHANNELS))
    return {c: s.name for c, s in zip(INGRESS_CHANNELS, specs, strict=True)}


def read_all(
    settings: Settings, topics: list[str], expected: int, timeout: float = 60.0
) -> list[Any]:
    """Every record of ``topics`` from the beginning (assign, no group join)."""
    consumer = make_consumer(settings, "shopstream-test-readback")
    try:
        metadata = consumer.list_topics(timeout=10)
        consumer.assign(
            [
                TopicPartition(t, p, OFFSET_BEGINNING)
                for t in topics
                for p in metadata.topics[t].partitions
            ]
        )
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                assert msg.error() is None, msg.error()
                out.append(msg)
        # Anything beyond the expected count would be a duplicate the producer made.
        out.extend(consumer.consume(num_messages=10_000, timeout=1.0))
        return out
    finally:
        consumer.close()


def by_topic_and_key(items: list[tuple[str, Wire]]) -> dict[tuple[str, bytes], list[Wire]]:
    groups: dict[tuple[str, bytes], list[Wire]] = defaultdict(list)
    for topic, wire in items:
        groups[(topic, wire[0])].append(wire)
    return dict(groups)


def expected_wire(records: list[Record], topics: dict[str, str]) -> list[tuple[str, Wire]]:
    return [
        (topics[r.channel], (r.key, r.value, tuple(r.headers), r.timestamp_ms)) for r in records
    ]


def consumed_wire(messages: list[Any]) -> list[tuple[str, Wire]]:
    out = []
    for m in messages:
        ts_type, ts = m.timestamp()
        assert ts_type == TIMESTAMP_CREATE_TIME
        out.append((m.topic(), (m.key(), m.value(), tuple(m.headers() or ()), ts)))
    return out


EARLIER = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=6)
"""Where the simulated shop's clock starts: unpaced or at 2,000/s its event time runs ahead
of the wall clock (far ahead at night, when the shop is quiet), and Apache Kafka refuses
record times over an hour ahead of its own (``log.message.timestamp.after.max.ms``)."""


def test_everything_sent_is_read_back_in_order_per_store(
    settings: Settings,
    isolated_topics: Callable[..., list[TopicSpec]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    topics = ingress_topics(isolated_topics)
    start = EARLIER
    count = 4000
    args = [
        "produce", "--broker", settings.broker_address, "--rate", "0", "--count", str(count),
        "--seed", "17", "--start-time", start.isoformat(), "--invalid-ratio", "0.03",
        "--duplicate-ratio", "0.03", "--late-ratio", "0.03",
        *(f"--topic={c}={t}" for c, t in topics.items()),
    ]  # fmt: skip
    assert main(args) == 0
    summary = capsys.readouterr().out
    assert "stopped by" in summary and "count" in summary

    options = ProduceOptions(
        start_ms=to_ms(start),
        seed=17,
        faults=FaultConfig(invalid_ratio=0.03, duplicate_ratio=0.03, late_ratio=0.03),
        topics=topics,  # type: ignore[arg-type]
    )
    opening, traffic = record_streams(options)
    records = [*opening, *islice(traffic, count)]
    messages = read_all(settings, list(topics.values()), len(records))
    assert len(messages) == len(records), "nothing lost, nothing duplicated by the producer"

    # Same records, and for every store (key) in the same order as sent.
    assert by_topic_and_key(consumed_wire(messages)) == by_topic_and_key(
        expected_wire(records, topics)
    )
    # A key lives in one partition: a store's events stay in order.
    partitions: dict[tuple[str, bytes], set[int]] = defaultdict(set)
    for m in messages:
        partitions[(m.topic(), m.key())].add(m.partition())
    assert all(len(p) == 1 for p in partitions.values())

    # What a router will see: valid events, and malformed ones of the claimed kinds.
    kinds = {r.value: r.fault for r in records}
    for m in messages:
        result = decode(m.value())
        fault = kinds[m.value()]
        if fault in EXPECTED_ERROR:
            assert isinstance(result, DecodeError) and result.kind == EXPECTED_ERROR[fault]
        else:
            assert not isinstance(result, DecodeError)
            assert m.key() == result.store_id.encode()


def test_sigterm_flushes_and_summarises(
    settings: Settings, isolated_topics: Callable[..., list[TopicSpec]], tmp_path: Path
) -> None:
    topics = ingress_topics(isolated_topics)
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "shopstream", "produce", "--broker", settings.broker_address,
            "--rate", "2000", "--start-time", EARLIER.isoformat(), "--status-name", "producer",
            *(f"--topic={c}={t}" for c, t in topics.items()),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "200", "SHOPSTREAM_DATA_DIR": str(data)},
    )  # fmt: skip
    # SIGTERM while the paced traffic flows: once the opening stock and some traffic are
    # acknowledged (its published counters say so; a busy machine starts it later).
    deadline = time.monotonic() + 60
    while True:
        status = read_statuses(data / "run").get("producer")
        if status is not None and status.produced > 16_800 + 1_000:
            break
        assert proc.poll() is None and time.monotonic() < deadline, "the producer never sent"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert re.search(r"stopped by\s+signal", out), out
    sent = int(re.search(r"sent\s+([\d,]+) records", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    acked = int(re.search(r"acked\s+([\d,]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert re.search(r"failed\s+0\b", out), out
    assert sent == acked > 16_800 + 1_000, "the opening stock and some traffic, all acknowledged"
    # The paced rate itself is a benchmark figure (no timing asserted here): it is reported.
    assert re.search(r"traffic\s+[\d,]+ in [\d.]+ s \(([\d,]+)/s\)", out), out
    assert len(read_all(settings, list(topics.values()), sent)) == sent
