"""The sink on a real broker (every lane): SIGKILLed at random moments while orders stream
in, restarted each time, it ends with every order in the read models exactly once - checked
against an independent computation from the topic itself (Python's Decimal over the JSON).
A reader in this process queries the read models all along."""

from __future__ import annotations

import random
import time
from decimal import Decimal
from pathlib import Path

import orjson
import psutil
from confluent_kafka import TopicPartition

from pipelines.sink.app import GROUP as SINK_GROUP
from pipelines.sink.feeds import FEEDS
from readmodels.lake import LakeLocation
from readmodels.queries import NoReadModels, ReadModels
from shopstream.admin import create_topics
from shopstream.kafka import make_consumer, make_producer
from shopstream.settings import Settings
from shopstream.topics import ORDERS, Namespace
from support.lake import simulated_orders
from support.processes import AppProcess, TopicReader

ORDERS_N = 6000
KILLS = 3


def keepers_of(catalog: Path) -> list[psutil.Process]:
    """The catalog keepers (readmodels.keeper) holding ``catalog`` open."""
    return [
        p for p in psutil.process_iter(["cmdline"])
        if str(catalog) in (p.info["cmdline"] or []) and "-c" in (p.info["cmdline"] or [])
    ]  # fmt: skip


def wait_for_keepers(catalog: Path, count: int) -> list[psutil.Process]:
    deadline = time.monotonic() + 15
    while len(found := keepers_of(catalog)) != count and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def test_a_sink_killed_again_and_again_writes_every_order_exactly_once(
    settings: Settings, namespace: Namespace, tmp_path: Path
) -> None:
    create_topics(settings, namespace.topics(feed.topic for feed in FEEDS))
    topic = namespace.topic(ORDERS).name
    orders = simulated_orders(ORDERS_N)
    producer = make_producer(settings)
    sink = AppProcess("sink", namespace, settings, tmp_path).start()
    rm = ReadModels(settings)
    rng = random.Random(7)
    kill_at = set(rng.sample(range(5, ORDERS_N // 200 - 3), KILLS))
    seen_while_writing: list[int] = []

    def written() -> int:
        try:
            count = rm.totals()["orders"] or 0
        except NoReadModels:
            count = 0
        seen_while_writing.append(count)
        return count

    try:
        for chunk in range(ORDERS_N // 200):
            for key, value, ts in orders[chunk * 200 : (chunk + 1) * 200]:
                producer.produce(topic, value, key, timestamp=ts)
            producer.flush(30)
            time.sleep(0.3)
            if chunk in kill_at:
                # Kill a sink that is writing: once it wrote more since it started, at a
                # random moment of its checkpoints (commits every 0.3 s).
                before = written()
                deadline = time.monotonic() + 60
                while written() <= before and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(rng.uniform(0.0, 0.6))
                sink.kill()
                sink.start()

        def caught_up() -> bool:
            try:
                seen_while_writing.append(rm.totals()["orders"] or 0)
            except NoReadModels:
                return False
            return seen_while_writing[-1] >= ORDERS_N

        deadline = time.monotonic() + 120
        while not caught_up() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # anything beyond the last order (a double) would show by now
        # Each SIGKILLed sink's keeper went with it; the running sink's holds the catalog.
        catalog = LakeLocation.of(settings).sqlite_file
        if catalog is not None:
            assert len(wait_for_keepers(catalog, 1)) == 1, keepers_of(catalog)
    finally:
        code = sink.stop()
    assert code == 0, sink.log_tail(40)
    if catalog is not None:
        assert wait_for_keepers(catalog, 0) == []

    # Independent computation: read the topic and add the money up with Decimal.
    reader = TopicReader(settings, [topic])
    try:
        # Every order sent, then a little more (a double would show): a quiet spell
        # alone also comes from a slow first fetch on a busy machine.
        reader.wait_for(lambda r: len(r.records[topic]) >= ORDERS_N, 120, settle=2.0)
    finally:
        reader.close()
    truth: dict[str, Decimal] = {}
    for record in reader.records[topic]:
        doc = orjson.loads(record.value or b"")
        lines = doc["payload"]["lines"]
        truth[doc["payload"]["order_id"]] = sum(
            (Decimal(str(line["unit_price"])) * line["qty"] for line in lines), Decimal("0")
        )
    assert len(truth) == ORDERS_N

    written = rm.sql(f"SELECT order_id, total FROM {rm.table('orders')}")
    ids = written["order_id"].to_list()
    assert len(ids) == len(set(ids)) == ORDERS_N, "an order is missing or doubled"
    assert dict(zip(ids, written["total"].to_list(), strict=True)) == truth
    assert rm.totals() == {**rm.totals(), "orders": ORDERS_N, "revenue": sum(truth.values())}
    # Read all along while the sink wrote: partial counts, never more than were sent.
    assert any(0 < n < ORDERS_N for n in seen_while_writing), seen_while_writing
    assert max(seen_while_writing) == ORDERS_N
    log = sink.log_path.read_text()
    assert log.count("read models: resuming generation 1") == KILLS  # never a new one
    assert "Traceback" not in log


def test_the_read_models_offsets_win_over_kafkas_committed_ones(
    settings: Settings, namespace: Namespace, tmp_path: Path
) -> None:
    """The sink writes behind its Kafka commits: a crash can leave the group's committed
    offsets past what the read models hold. Here the whole topic is committed and the
    read models are empty: the sink must still write every order, starting from the
    read models' own offsets (zero), not from Kafka's."""
    create_topics(settings, namespace.topics(feed.topic for feed in FEEDS))
    topic = namespace.topic(ORDERS).name
    producer = make_producer(settings)
    for key, value, ts in simulated_orders(300):
        producer.produce(topic, value, key, timestamp=ts)
    assert producer.flush(30) == 0
    reader = TopicReader(settings, [topic])
    try:
        reader.wait_for(lambda r: len(r.records[topic]) >= 300, 60, settle=1.0)
    finally:
        reader.close()
    ends: dict[int, int] = {}
    for record in reader.records[topic]:
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    group = make_consumer(settings, namespace.group(SINK_GROUP))
    try:
        group.commit(offsets=[TopicPartition(topic, p, end) for p, end in ends.items()],
                     asynchronous=False)  # fmt: skip
    finally:
        group.close()

    sink = AppProcess("sink", namespace, settings, tmp_path).start()
    rm = ReadModels(settings)

    def orders() -> int:
        try:
            return rm.totals()["orders"] or 0
        except NoReadModels:
            return 0

    try:
        deadline = time.monotonic() + 90
        while orders() < 300 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        assert sink.stop() == 0, sink.log_tail(40)
    assert orders() == 300, sink.log_tail(40)
