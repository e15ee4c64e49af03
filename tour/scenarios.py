"""The five models of the course, each shown on the running stack with real events.

Each scenario acts on the system the way a user or a new service would (it places an
order, starts a consumer, stops a service), then reports what really happened - the
events, their topics, partitions and offsets, the timings - and the claims it checks,
so that the same code serves ``shopstream tour MODEL``, the dashboard's Tour page and
the tests. Every explanation gives the course's French term beside the English one.

The stack must be running (``shopstream up``): the scenarios need the broker, the apps
and the read models.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    ConsumerGroupTopicPartitions,
    KafkaError,
    TopicPartition,
)

from readmodels.queries import NoReadModels, ReadModels
from shopstream.apps import consumer_groups
from shopstream.errors import UserError
from shopstream.events import OrderLine, OrderPlaced, OrderPlacedPayload, encode, headers_for
from shopstream.kafka import fetch_metadata, make_admin, make_consumer, make_producer
from shopstream.settings import Settings
from shopstream.status import read_statuses, request_start, run_dir
from shopstream.topics import INGRESS_WEB, ORDERS, STOCK_EVENTS

WAIT_S = 90.0
PARTITION_EOF = KafkaError._PARTITION_EOF
QUIET_S = 1.5
"""Reading a topic "to the end": every partition said end-of-partition and nothing came for
this long (the embedded broker signals the end at its high watermark, which can be short
of the last record: docs/testing.md)."""


def read_to_end(settings: Settings, topic: str, group: str) -> Iterator[Any]:
    """Every record of ``topic`` from offset 0 to where it ended when the read began, as a
    new consumer group reads it.

    A partition is done once past its high watermark at the start *and* at a record newer
    than the start (or quiet at its end): the embedded broker's high watermark can fall
    short of the last record (docs/testing.md), so it alone does not say "the end".
    """
    started_ms = int(time.time() * 1000)
    partitions = sorted(fetch_metadata(settings).topics[topic].partitions)
    consumer = make_consumer(settings, group, **{"enable.partition.eof": True})
    ends = {
        p: int(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
        for p in partitions
    }
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    position = dict.fromkeys(partitions, 0)
    heard = dict.fromkeys(partitions, time.monotonic())
    eof: set[int] = set()
    done: set[int] = set()
    deadline = time.monotonic() + WAIT_S
    try:
        while len(done) < len(partitions) and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=10_000, timeout=0.3):
                err, partition = msg.error(), msg.partition()
                if err is not None:
                    if err.code() == PARTITION_EOF:
                        eof.add(partition)
                    continue
                if partition in done:
                    continue
                if msg.timestamp()[1] > started_ms and msg.offset() >= ends[partition]:
                    done.add(partition)  # newer than the read: not part of "the log then"
                    continue
                position[partition] = msg.offset() + 1
                heard[partition] = time.monotonic()
                eof.discard(partition)
                yield msg
            now = time.monotonic()
            for partition in partitions:
                quiet = now - heard[partition] >= QUIET_S
                if partition in eof and quiet and position[partition] >= ends[partition]:
                    done.add(partition)
    finally:
        consumer.close()


@dataclass
class Step:
    """One thing the scenario did or saw, with the figures that show it."""

    text: str
    rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TourResult:
    """A scenario's explanation, what it did and saw, and the claims it checked."""

    model: str
    title: str
    explanation: str
    steps: list[Step] = field(default_factory=list)
    claims: dict[str, bool] = field(default_factory=dict)

    def step(self, text: str, rows: list[dict[str, Any]] | None = None) -> None:
        self.steps.append(Step(text, rows or []))

    def claim(self, what: str, holds: bool) -> bool:
        self.claims[what] = holds
        return holds

    @property
    def ok(self) -> bool:
        return bool(self.claims) and all(self.claims.values())


def _wait(predicate: Callable[[], Any], timeout: float = WAIT_S, every: float = 0.3) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = predicate()
        except NoReadModels:
            found = None
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(every)


def _stocked_pair(rm: ReadModels) -> tuple[str, str, Decimal]:
    """A web store (distribution centre) and SKU with stock, and a price for it."""
    found = _wait(lambda: _stocked(rm), timeout=60)
    if found is None:
        raise UserError("no stocked SKU in the read models yet - let `shopstream up` run a bit")
    return found


def _stocked(rm: ReadModels) -> tuple[str, str, Decimal] | None:
    found = rm.sql(
        f"SELECT l.store_id, l.sku, coalesce(max(ol.unit_price), 9.99) AS price "
        f"FROM {rm.table('stock_levels')} l LEFT JOIN {rm.table('order_lines')} ol "
        "USING (sku) WHERE l.level >= 3 AND l.store_id LIKE 'DC-%' "
        "GROUP BY l.store_id, l.sku, l.level ORDER BY l.level DESC LIMIT 1"
    )
    if not found.height:
        return None
    row = found.row(0, named=True)
    return str(row["store_id"]), str(row["sku"]), Decimal(str(row["price"]))


def place_order(settings: Settings, rm: ReadModels, label: str) -> OrderPlaced:
    """A command: place one web order for a stocked SKU, as the web channel would."""
    store, sku, price = _stocked_pair(rm)
    order_id = f"O-tour-{label}-{uuid.uuid4().hex[:8]}"
    event = OrderPlaced(
        event_id=uuid.uuid4(),
        occurred_at=datetime.now(UTC),
        channel="web",
        store_id=store,
        correlation_id=order_id,
        payload=OrderPlacedPayload(
            order_id=order_id,
            customer_id="C-tour",
            lines=[OrderLine(sku=sku, qty=1, unit_price=price)],
            payment_method="card",
        ),
    )
    producer = make_producer(settings)
    producer.produce(INGRESS_WEB.name, encode(event), store.encode(), headers=headers_for(event))
    if producer.flush(15):
        raise UserError(f"could not send the order to {INGRESS_WEB.name}")
    return event


def _lineage(rm: ReadModels, event_id: str) -> dict[str, Any] | None:
    found = rm.sql(
        f"SELECT topic, kafka_partition, kafka_offset, app, emitted_at "
        f"FROM {rm.table('events')} WHERE event_id = ?",
        [event_id],
    )
    return found.row(0, named=True) if found.height else None


# --- pub/sub ------------------------------------------------------------------------


def pubsub(settings: Settings) -> TourResult:
    result = TourResult(
        "pubsub", "Publish/subscribe (publication/abonnement)",
        "One event published once is received independently by every subscriber: each "
        "service is its own consumer group (abonné) on the topic, reading at its own pace; "
        "the producer does not know them (découplage).",
    )  # fmt: skip
    rm = ReadModels(settings)
    order = place_order(settings, rm, "pubsub")
    result.step(f"Published order {order.payload.order_id} to `{INGRESS_WEB.name}`; the router "
                f"routes it to `{ORDERS.name}`.")  # fmt: skip
    where = _wait(lambda: _lineage(rm, str(order.event_id)))
    if not result.claim("the router published it on orders", where is not None):
        return result
    partition, offset = int(where["kafka_partition"]), int(where["kafka_offset"])
    result.step(f"It is `{ORDERS.name}[{partition}]@{offset}`. The subscribed groups:")
    subscribers = [g for g in consumer_groups() if ORDERS.name in g.reads]
    admin = make_admin(settings)
    began = time.monotonic()
    received: dict[str, float] = {}

    def everyone() -> bool:
        for group in subscribers:
            if group.name in received:
                continue
            tp = TopicPartition(ORDERS.name, partition)
            answer = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group.name, [tp])]
            )[group.name].result(10)
            committed = answer.topic_partitions[0].offset
            if committed > offset:
                received[group.name] = time.monotonic() - began
        return len(received) == len(subscribers)

    _wait(everyone)
    result.step("", [
        {"group": g.name, "app": g.app,
         "received after (s)": round(received[g.name], 2) if g.name in received else None}
        for g in subscribers
    ])  # fmt: skip
    result.claim(
        f"every subscribed group ({len(subscribers)}) received it",
        len(received) == len(subscribers) and len(subscribers) >= 3,
    )
    return result


# --- event streaming ----------------------------------------------------------------


def streaming(settings: Settings) -> TourResult:
    result = TourResult(
        "streaming", "Event streaming (flux d'événements)",
        "The log keeps every event (persistance): a consumer that arrives late - a new "
        "Analytics service - reads the stream from offset zero at its own pace, partition by "
        "partition, while the others go on; the offset is its position in the log.",
    )  # fmt: skip
    try:
        live = ReadModels(settings).totals()["orders"] or 0
    except NoReadModels:
        live = 0
    group = f"shopstream-tour-late-{uuid.uuid4().hex[:6]}"
    seen: dict[int, dict[str, int]] = {}
    began = time.monotonic()
    for msg in read_to_end(settings, ORDERS.name, group):
        stats = seen.setdefault(msg.partition(), {"first": msg.offset(), "read": 0})
        stats["read"] += 1
        stats["last"] = msg.offset()
    elapsed = time.monotonic() - began
    total = sum(s["read"] for s in seen.values())
    result.step(
        f"A new consumer group `{group}` read `{ORDERS.name}` from the beginning: {total:,} "
        f"orders in {elapsed:.1f} s ({total / elapsed if elapsed else 0:,.0f} orders/s).",
        [{"partition": p, "first offset": s["first"], "last offset": s.get("last"),
          "records read": s["read"]} for p, s in sorted(seen.items())],
    )  # fmt: skip
    result.claim("it started at offset 0 of every partition with orders",
                 bool(seen) and all(s["first"] == 0 for s in seen.values()))  # fmt: skip
    result.step(f"The live read models held {live:,} orders when it started: the late "
                "consumer saw the whole history they were built from.")  # fmt: skip
    result.claim("it read the whole history (as many orders as the live read models)",
                 total >= live > 0)  # fmt: skip
    return result


# --- event sourcing -----------------------------------------------------------------


def sourcing(settings: Settings) -> TourResult:
    result = TourResult(
        "sourcing", "Event sourcing (l'état est reconstruit à partir des événements)",
        "The stock level is not stored and updated: the stock service records every change "
        "as an event in `stock.events` (the event store, journal), and the level is what "
        "they add up to. Replaying one SKU's events from the start rebuilds it.",
    )  # fmt: skip
    rm = ReadModels(settings)
    # A SKU with some history, the one that moved least recently: its live value is the
    # likeliest to hold still while the fold reads the log (on a young stack none is quiet
    # yet, so quietness ranks rather than filters; the fold below retries if it moved).
    busiest = rm.sql(
        f"SELECT store_id, sku, count(*) AS n FROM {rm.table('stock_movements')} "
        "GROUP BY ALL HAVING count(*) BETWEEN 2 AND 20 "
        "ORDER BY max(occurred_at), n DESC LIMIT 1"
    )
    if not result.claim("a SKU with stock history exists", busiest.height > 0):
        return result
    store, sku = str(busiest["store_id"][0]), str(busiest["sku"][0])
    for _attempt in range(3):  # traffic goes on: fold again if the live level moved meanwhile
        steps, level = _fold(settings, store, sku)
        live = rm.stock_levels(store).filter(rm.stock_levels(store)["sku"] == sku)
        live_level = int(live["level"][0]) if live.height else None
        if live_level == level:
            break
        time.sleep(1.0)  # the sink lands what the fold read within about a second
    result.step(f"The events of {sku} at {store}, folded in log order from offset 0:", steps)
    result.step(f"Rebuilt level: {level} units; the live read model says {live_level}.")
    result.claim("every event's level_after follows from the one before",
                 all(s["rebuilt level"] == s["level_after"] for s in steps))  # fmt: skip
    result.claim("the rebuilt stock equals the live value", level == live_level)
    return result


def _fold(settings: Settings, store: str, sku: str) -> tuple[list[dict[str, Any]], int]:
    """Fold one store's SKU from ``stock.events``, read from offset 0 (not the read model)."""
    steps: list[dict[str, Any]] = []
    level, seen = 0, set()
    group = f"shopstream-tour-fold-{uuid.uuid4().hex[:6]}"
    for msg in read_to_end(settings, STOCK_EVENTS.name, group):
        doc = orjson.loads(msg.value() or b"{}")
        if doc.get("store_id") != store or doc.get("event_id") in seen:
            continue
        payload = doc.get("payload", {})
        moves = payload.get("movements") or (
            [payload["movement"]] if "movement" in payload else []
        )
        for move in moves:
            if move.get("sku") != sku:
                continue
            seen.add(doc["event_id"])
            level += int(move["delta"])
            steps.append({
                "offset": f"{msg.partition()}@{msg.offset()}", "event": doc["event_type"],
                "delta": move["delta"], "level_after": move["level_after"],
                "rebuilt level": level,
            })  # fmt: skip
    return steps, level


# --- CQRS ---------------------------------------------------------------------------


def cqrs(settings: Settings) -> TourResult:
    result = TourResult(
        "cqrs", "CQRS (séparation commande / requête)",
        "A command (place an order) goes to the write side, whose services turn it into "
        "events; the read side (read models in DuckDB, optimised for queries) is updated from "
        "those events, a little later: eventual consistency (cohérence éventuelle).",
    )  # fmt: skip
    rm = ReadModels(settings)
    began = time.monotonic()
    order = place_order(settings, rm, "cqrs")
    order_id = order.payload.order_id
    result.step(f"Command: place order {order_id} (sent to `{INGRESS_WEB.name}`).")
    seen: dict[str, float] = {}
    for label, table in (("the order", "orders"), ("its reservation", "stock_movements"),
                         ("its invoice", "invoices")):  # fmt: skip
        found = _wait(lambda t=table: rm.sql(
            f"SELECT 1 FROM {rm.table(t)} WHERE order_id = ? LIMIT 1", [order_id]
        ).height)  # fmt: skip
        if found:
            seen[label] = time.monotonic() - began
    rows = [{"read model shows": k, "after (s)": round(v, 2)} for k, v in seen.items()]
    result.step("Query: when the read side could see each (seconds after the command):", rows)
    result.claim("the read model shows the order", "the order" in seen)
    result.claim("... then its reservation and its invoice, later (eventually consistent)",
                 "its invoice" in seen and seen["its invoice"] >= seen["the order"])  # fmt: skip
    return result


# --- choreography -------------------------------------------------------------------


def choreography(settings: Settings) -> TourResult:
    result = TourResult(
        "choreography", "Choreography (chorégraphie, sans orchestrateur)",
        "No service tells another what to do: stock reacts to the order, finance to the "
        "reservation, notifications to the invoice. Stop one service and the others carry on; "
        "started again, it catches up from its committed offsets.",
    )  # fmt: skip
    rm = ReadModels(settings)
    first = place_order(settings, rm, "chain")
    chain = _wait(lambda: _complete(rm, first.payload.order_id))
    if chain is not None:
        result.step(f"Order {first.payload.order_id}, hop by hop (from the lineage):", chain)
    apps = {row["by"] for row in chain or []}
    result.claim("its chain crossed stock, finance and notifications",
                 {"router", "stock", "finance", "notifications"} <= apps)  # fmt: skip

    finance = read_statuses(run_dir(settings)).get("finance")
    if not result.claim("finance runs under `shopstream up`", finance is not None):
        return result
    assert finance is not None
    os.kill(finance.pid, signal.SIGTERM)
    _wait(lambda: not _alive(finance.pid), timeout=30)
    result.step(f"Stopped finance (pid {finance.pid}).")
    second = place_order(settings, rm, "stopped")
    order_id = second.payload.order_id
    reserved = _wait(lambda: rm.sql(
        f"SELECT 1 FROM {rm.table('stock_movements')} WHERE order_id = ?", [order_id]
    ).height)  # fmt: skip
    time.sleep(3)
    invoiced_while_stopped = rm.sql(
        f"SELECT 1 FROM {rm.table('invoices')} WHERE order_id = ?", [order_id]
    ).height
    result.step(f"Order {order_id} while finance is stopped: reserved by stock: "
                f"{bool(reserved)}; invoiced: {bool(invoiced_while_stopped)}.")  # fmt: skip
    result.claim("the others carry on (stock reserved it)", bool(reserved))
    result.claim("nothing invoiced it while finance was stopped", not invoiced_while_stopped)
    request_start(settings, "finance")
    began = time.monotonic()
    invoiced = _wait(lambda: rm.sql(
        f"SELECT 1 FROM {rm.table('invoices')} WHERE order_id = ?", [order_id]
    ).height)  # fmt: skip
    result.step(f"Started finance again: it caught up and invoiced {order_id} "
                f"{time.monotonic() - began:.1f} s later." if invoiced else
                "Finance did not catch up: was it started by `shopstream up`?")  # fmt: skip
    result.claim("the stopped service caught up on restart", bool(invoiced))
    return result


def _complete(rm: ReadModels, order_id: str) -> list[dict[str, Any]] | None:
    trace = rm.order_trace(order_id)
    if "NotificationSent" not in set(trace["event_type"]) or "InvoiceIssued" not in set(
        trace["event_type"]
    ):
        return None
    return [
        {"event": r["event_type"], "by": r["app"],
         "at": f"{r['topic']}[{r['kafka_partition']}]@{r['kafka_offset']}",
         "caused by": r["caused_by"] or "the customer", "hop (ms)": r["hop_ms"]}
        for r in trace.iter_rows(named=True)
    ]  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


SCENARIOS: dict[str, Callable[[Settings], TourResult]] = {
    "pubsub": pubsub,
    "streaming": streaming,
    "sourcing": sourcing,
    "cqrs": cqrs,
    "choreography": choreography,
}
"""The five models, in the order the course presents them."""
