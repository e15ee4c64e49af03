"""SIGKILL a service mid-stream and restart it (every lane): no invoice lost, none doubled.

Finance runs as a process (``python -m pipelines.services finance``, exactly-once, a
stable ``transactional.id``) over a few thousand reserved orders. It is killed twice
while it is writing invoices - each time with a transaction open - and restarted; the
restart fences its dead predecessor. Then:

* every order has its invoice, and no order has two different invoices (our guarantee:
  deterministic ids and finance's idempotency on the causing event; both lanes);
* a downstream consumer idempotent on the causing event (notifications) sends exactly one
  message per invoice, whatever the broker delivered (both lanes);
* ``read_committed`` readers see every invoice *record* exactly once - true on Apache
  Kafka, which aborts the fenced transaction; on the embedded broker the killed
  instance's uncommitted invoices are delivered next to their re-issued copies, a known
  gap asserted as a strict xfail.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from pipelines.runtime.quix import COMMIT_INTERVAL_S
from pipelines.services import stock
from pipelines.services.apps import FINANCE, NOTIFICATIONS_SERVICE
from pipelines.services.service import build_service_app
from pipelines.services.state import MemoryState
from shopstream.admin import create_topics
from shopstream.brokers import BrokerProcess
from shopstream.events import encode, headers_for, utc_ms
from shopstream.kafka import make_producer
from shopstream.settings import Settings, load_settings
from shopstream.topics import FINANCE_EVENTS, NOTIFICATIONS, ORDERS, STOCK_EVENTS, Namespace
from support import service_samples as s
from support.processes import AppProcess, TopicReader

ORDERS_N = 30_000
"""Enough that both kills land mid-stream: with 25 ms fetches and 0.25 s commits finance
invoiced 8,000 orders within a second and a half of its first output."""
STORES = 7
KILLS = 2
KILL_AFTER_S = 3 * COMMIT_INTERVAL_S
"""How long a life writes before it is killed: past at least one commit."""
EMBEDDED_ABORTED_RECORDS_GAP = (
    "Tansu hands records of aborted and fenced transactions to read_committed readers: the "
    "killed instance's uncommitted invoices are delivered next to the copies its restart "
    "issues again"
)


@dataclass
class Killed:
    settings: Settings
    ns: Namespace
    invoices: list[tuple[str, str, str]]
    """(order_id, invoice_id, event_id) of every InvoiceIssued record read_committed."""
    notifications: Counter[str]
    """NotificationSent per causing invoice event id, from an idempotent consumer."""
    outputs_at_kill: list[int]
    """Orders with an invoice written (committed or not) when each kill came."""
    log: str
    written_twice: int
    """Invoice records in the log (read_uncommitted) whose event a later life wrote again:
    what the kills left of open transactions, which read_committed must not deliver."""


def _produce_reserved_orders(settings: Settings, ns: Namespace) -> None:
    now = utc_ms(datetime.now(UTC))
    levels: dict[str, MemoryState] = defaultdict(MemoryState)
    # Partition like the Quix apps do (murmur2), so each store's order and reservation
    # share a partition number, as they would coming from the router and stock.
    producer = make_producer(settings, partitioner="murmur2_random")
    for i in range(ORDERS_N):
        store = f"store-{i % STORES:02d}"
        state = levels[store]
        if not state.exists("restock:opening"):
            stock.handle(
                s.restock("opening", "SKU-00001", 10_000, store_id=store, origin=now), state
            )
        order = s.order(f"o{i}", [("SKU-00001", 1, "2.50")], store_id=store, t=i / 100, origin=now)
        [reserved] = stock.handle(order, state)
        for spec, event in ((ORDERS, order), (STOCK_EVENTS, reserved)):
            producer.produce(
                ns.topic(spec).name, encode(event), store.encode(), headers=headers_for(event),
                timestamp=int(event.occurred_at.timestamp() * 1000),
            )  # fmt: skip
        producer.poll(0)
    producer.flush(30)


@pytest.fixture(scope="module")
def killed(broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Killed]:
    tmp = tmp_path_factory.mktemp("sigkill")
    settings = load_settings(broker_address=broker.address, data_dir=tmp / "data")
    ns = Namespace(uuid.uuid4().hex[:8])
    needed = {t.name: t for d in (FINANCE, NOTIFICATIONS_SERVICE) for t in d.topics()}
    create_topics(settings, ns.topics(needed.values()))
    _produce_reserved_orders(settings, ns)
    invoices_topic = ns.topic(FINANCE_EVENTS).name

    # Progress as it is written, committed or not: the moment to kill is while a
    # transaction is open and has invoices in it.
    watch = TopicReader(settings, [invoices_topic], isolation="read_uncommitted")
    finance = AppProcess("finance", ns, settings, tmp).start()
    outputs_at_kill: list[int] = []
    try:
        for _ in range(KILLS):
            # Kill once this life has written for a while: past a commit or two (so the
            # restart resumes from committed offsets and state) and with a transaction open.
            before = len(watch.records[invoices_topic])
            writing = lambda r, n=before: len(r.records[invoices_topic]) > n  # noqa: E731
            assert watch.wait_for(writing, timeout=120), finance.log_tail()
            watch.read_for(KILL_AFTER_S)
            finance.kill()
            outputs_at_kill.append(len({e.payload.order_id for e in watch.events(invoices_topic)}))
            finance.start()
        reader = TopicReader(settings, [invoices_topic])
        try:
            orders = lambda r: {e.payload.order_id for e in r.events(invoices_topic)}  # noqa: E731
            complete = reader.wait_for(lambda r: len(orders(r)) >= ORDERS_N, 180, settle=3.0)
            assert complete, (
                f"{len(orders(reader))} of {ORDERS_N} orders invoiced\n{finance.log_tail()}"
            )
        finally:
            reader.close()
        watch.drain(quiet=2.0, timeout=60)  # the last life's copies too
    finally:
        finance.stop()
        watch.close()
    in_log = Counter(str(e.event_id) for e in watch.events(invoices_topic))
    written_twice = sum(n - 1 for n in in_log.values() if n > 1)
    invoices = [
        (e.payload.order_id, e.payload.invoice_id, str(e.event_id))
        for e in reader.events(invoices_topic)
    ]

    # An idempotent consumer downstream: one message per invoice, duplicates or not.
    built = build_service_app(settings, NOTIFICATIONS_SERVICE, ns)
    built.app.run(timeout=3)
    sent = TopicReader(settings, [ns.topic(NOTIFICATIONS).name])
    try:
        sent.wait_for(
            lambda r: len(r.records[ns.topic(NOTIFICATIONS).name]) >= ORDERS_N, 60, settle=1.0
        )
        notifications = Counter(e.causation_id for e in sent.events(ns.topic(NOTIFICATIONS).name))
    finally:
        sent.close()
    yield Killed(settings, ns, invoices, notifications, outputs_at_kill, finance.log_tail(),
                 written_twice)  # fmt: skip


def test_the_kills_hit_mid_stream_and_the_last_life_resumed(killed: Killed) -> None:
    assert len(killed.outputs_at_kill) == KILLS
    assert all(0 < n < ORDERS_N for n in killed.outputs_at_kill), killed.outputs_at_kill
    # The last instance did not start over: it resumed from committed offsets.
    match = re.search(r"stopped; consumed=(\d+)", killed.log)
    assert match, killed.log
    assert 0 < int(match.group(1)) < 2 * ORDERS_N, killed.log


def test_no_invoice_missing_and_no_order_invoiced_twice(killed: Killed) -> None:
    per_order: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for order_id, invoice_id, event_id in killed.invoices:
        per_order[order_id].add((invoice_id, event_id))
    assert set(per_order) == {f"o{i}" for i in range(ORDERS_N)}
    twice = {o: ids for o, ids in per_order.items() if len(ids) > 1}
    assert twice == {}, f"{len(twice)} orders with two different invoices"


def test_an_idempotent_consumer_notifies_each_invoice_once(killed: Killed) -> None:
    invoice_events = {event_id for _, _, event_id in killed.invoices}
    assert set(killed.notifications) == invoice_events
    assert set(killed.notifications.values()) == {1}


@pytest.mark.known_gap("embedded", EMBEDDED_ABORTED_RECORDS_GAP)
def test_read_committed_sees_each_invoice_record_exactly_once(
    killed: Killed, claim: Callable[[bool, str], None]
) -> None:
    if killed.written_twice == 0:
        # Every kill came between two commits this time (the kills aim at an open
        # transaction, and mostly hit one): read_committed had nothing to hide.
        pytest.skip("no kill left an open transaction's invoices in the log: nothing to judge")
    records = Counter(event_id for _, _, event_id in killed.invoices)
    doubled = sum(n - 1 for n in records.values() if n > 1)
    claim(
        doubled == 0,
        f"{doubled} of {len(killed.invoices)} invoice records delivered more than once after "
        f"{KILLS} kills (uncommitted outputs at the kills: {killed.outputs_at_kill})",
    )
