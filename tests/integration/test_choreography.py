"""The whole choreography on a real broker (every lane): five apps, no orchestrator.

The router and the four services run as separate processes (``python -m
pipelines.services NAME --namespace ...``), each its own consumer group, exactly-once.
One scenario is driven through the channels' ingress topics in phases (deliveries,
then orders, then returns and questions), each phase waiting for the effects of the
previous one, as a shop would; then duplicates are slipped past the router straight into
the typed and service topics, the way a channel resend after the dedupe TTL or a broker
committing a record twice would deliver them. The tests then read what every app wrote.
"""

from __future__ import annotations

import glob
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from rocksdict import AccessType, Rdict

from pipelines import deadletter
from pipelines.services import stock
from pipelines.services.apps import SERVICES
from shopstream.admin import create_topics
from shopstream.brokers import BrokerProcess
from shopstream.events import DecodeError, Envelope, decode, encode, headers_for, utc_ms
from shopstream.kafka import make_consumer, make_producer
from shopstream.settings import Settings, load_settings
from shopstream.topics import (
    ALERTS,
    ALL_TOPICS,
    ANSWERS,
    DEAD_LETTERS,
    FINANCE_EVENTS,
    INGRESS_BY_CHANNEL,
    NOTIFICATIONS,
    ORDERS,
    RETURNS,
    STOCK_EVENTS,
    STOCK_LEVELS,
    Namespace,
    TopicSpec,
)
from support import service_samples as s
from support.processes import AppProcess, ReadRecord, TopicReader

APPS = ("stock", "finance", "customer-relations", "notifications", "router")
PHASE_TIMEOUT = 90.0


@dataclass
class Run:
    """What the scenario sent and what every app wrote, for one broker lane."""

    ns: Namespace
    settings: Settings
    events: dict[str, Envelope]
    malformed: bytes
    out: TopicReader
    exit_codes: dict[str, int]
    logs: dict[str, str]
    state_dir: Path
    injected: set[tuple[str, int, int]] = field(default_factory=set)
    """Coordinates of the duplicates the test itself wrote into service topics."""

    def topic(self, spec: TopicSpec) -> str:
        return self.ns.topic(spec).name

    def of(self, spec: TopicSpec, event_type: str | None = None) -> list[Any]:
        """What the apps wrote to ``spec`` (not the test's injected copies), in order."""
        return [
            r.event
            for r in self.out.records.get(self.topic(spec), [])
            if r.event is not None
            and (r.topic, r.partition, r.offset) not in self.injected
            and (event_type is None or r.event.event_type == event_type)
        ]

    def caused_by(self, cause: Envelope, spec: TopicSpec) -> list[Any]:
        return [e for e in self.of(spec) if e.causation_id == str(cause.event_id)]


def _send(
    settings: Settings, ns: Namespace, items: list[tuple[TopicSpec, Envelope | bytes, str]]
) -> set[tuple[str, int, int]]:
    """Produce ``items`` (event or raw bytes, key); return where they landed."""
    landed: set[tuple[str, int, int]] = set()

    def delivered(err: Any, msg: Any) -> None:
        assert err is None, err
        landed.add((msg.topic(), msg.partition(), msg.offset()))

    # Quix producers partition with murmur2 (Java's partitioner); a plain librdkafka producer
    # hashes keys with CRC32. Records written past the router must land where the services'
    # state for their key lives, so this producer partitions like Quix.
    producer = make_producer(settings, partitioner="murmur2_random")
    for spec, item, store in items:
        if isinstance(item, bytes):
            producer.produce(ns.topic(spec).name, item, store.encode(), on_delivery=delivered)
        else:
            ts = int(item.occurred_at.timestamp() * 1000)
            producer.produce(
                ns.topic(spec).name, encode(item), item.store_id.encode(),
                headers=headers_for(item), timestamp=ts, on_delivery=delivered,
            )  # fmt: skip
    producer.flush(30)
    return landed


def _ingress(event: Envelope) -> TopicSpec:
    return INGRESS_BY_CHANNEL["warehouse" if event.channel == "system" else event.channel]


@pytest.fixture(scope="module")
def run(broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("choreography")
    settings = load_settings(broker_address=broker.address, data_dir=tmp / "data")
    ns = Namespace(uuid.uuid4().hex[:8])
    create_topics(settings, ns.topics(ALL_TOPICS))
    apps = {name: AppProcess(name, ns, settings, tmp).start() for name in APPS}
    now = utc_ms(datetime.now(UTC))
    outputs = (
        STOCK_EVENTS,
        FINANCE_EVENTS,
        ANSWERS,
        NOTIFICATIONS,
        ALERTS,
        DEAD_LETTERS,
        STOCK_LEVELS,
    )
    out = TopicReader(settings, [ns.topic(t).name for t in outputs])
    ev: dict[str, Envelope] = {}
    try:
        # Phase 1: deliveries. Stock must know them before the first order.
        for rid, sku, qty, store in (
            ("d1", "SKU-00001", 10, "store-01"),
            ("d2", "SKU-00002", 2, "store-01"),
            ("d3", "SKU-00001", 5, "store-02"),
            ("d4", "SKU-00003", 6, "store-03"),
        ):
            ev[rid] = s.restock(rid, sku, qty, store_id=store, t=0, origin=now)
        _send(settings, ns, [(_ingress(e), e, e.store_id) for e in ev.values()])
        assert out.wait_for(
            lambda r: len(r.events(ns.topic(STOCK_EVENTS).name)) >= 4, PHASE_TIMEOUT
        ), _logs(apps)

        # Phase 2: orders, one resent by its channel, one garbled.
        ev["happy"] = s.order(
            "o-happy", [("SKU-00001", 2, "10.00")], channel="web", t=10, origin=now
        )
        ev["short"] = s.order(
            "o-short", [("SKU-00002", 5, "3.00")], channel="mobile", t=11, origin=now
        )
        ev["kept"] = s.order(
            "o-kept",
            [("SKU-00001", 3, "4.00")],
            store_id="store-02",
            channel="pos",
            t=12,
            origin=now,
        )
        ev["last"] = s.order(
            "o-last",
            [("SKU-00003", 6, "99.90")],
            store_id="store-03",
            channel="web",
            t=13,
            origin=now,
        )
        malformed = b'{"event_type": "OrderPlaced", "payload": {"order_id": "o-garbled'
        orders = ["happy", "short", "kept", "last"]
        again = [(_ingress(ev["happy"]), ev["happy"], "store-01")]
        garbled = [(INGRESS_BY_CHANNEL["web"], malformed, "store-01")]
        first = [(_ingress(ev[k]), ev[k], ev[k].store_id) for k in orders]
        _send(settings, ns, [*first, *again, *garbled])
        assert out.wait_for(
            lambda r: len(r.events(ns.topic(NOTIFICATIONS).name)) >= 4, PHASE_TIMEOUT
        ), _logs(apps)

        # Phase 3: returns (one of a kept order, one of a rejected order, one of an order
        # nobody knows) and questions; one return resent by its channel.
        ev["ret"] = s.return_of(ev["kept"], "ret-kept", "SKU-00001", 1, "4.00", t=20, origin=now)
        ev["ret-short"] = s.return_of(
            ev["short"], "ret-short", "SKU-00002", 1, "3.00", t=21, origin=now
        )
        ev["ret-ghost"] = s.returned(
            "ret-ghost", "o-ghost", "SKU-00001", 1, "1.00", channel="web", t=22, origin=now
        )
        ev["q1"] = s.question("q1", "SKU-00001", channel="mobile", t=23, origin=now)
        ev["q2"] = s.question("q2", "SKU-00002", channel="web", t=24, origin=now)
        phase3 = ["ret", "ret-short", "ret-ghost", "q1", "q2"]
        again = [(_ingress(ev["ret"]), ev["ret"], ev["ret"].store_id)]
        _send(settings, ns, [(_ingress(ev[k]), ev[k], ev[k].store_id) for k in phase3] + again)
        # 4 order notifications + refund + 2 answers = 7.
        assert out.wait_for(
            lambda r: len(r.events(ns.topic(NOTIFICATIONS).name)) >= 7, PHASE_TIMEOUT
        ), _logs(apps)

        # Phase 4: duplicates past the router, then a sentinel order whose notification
        # says everything before it (same store, same partitions) has been handled.
        reserved = next(
            e for e in out.events(ns.topic(STOCK_EVENTS).name) if e.correlation_id == "o-happy"
        )
        invoice = next(
            e for e in out.events(ns.topic(FINANCE_EVENTS).name) if e.correlation_id == "o-happy"
        )
        resend = ev["ret"].model_copy(update={"event_id": s.sample_id("resend", "ret-kept")})
        bypass = [
            (ORDERS, ev["happy"]),
            (RETURNS, ev["ret"]),
            (RETURNS, resend),
            (STOCK_EVENTS, reserved),
            (FINANCE_EVENTS, invoice),
        ]
        injected = _send(settings, ns, [(spec, e, e.store_id) for spec, e in bypass])
        ev["sentinel"] = s.order(
            "o-sentinel", [("SKU-00001", 1, "1.00")], channel="web", t=40, origin=now
        )
        ev["sentinel-2"] = s.order(
            "o-sentinel-2",
            [("SKU-00001", 1, "1.00")],
            store_id="store-02",
            channel="web",
            t=41,
            origin=now,
        )
        _send(
            settings,
            ns,
            [(_ingress(ev[k]), ev[k], ev[k].store_id) for k in ("sentinel", "sentinel-2")],
        )
        assert out.wait_for(
            lambda r: len(r.events(ns.topic(NOTIFICATIONS).name)) >= 9, PHASE_TIMEOUT, settle=3.0
        ), _logs(apps)
    finally:
        exit_codes = {name: app.stop() for name, app in apps.items()}
        out.poll(1.0)
    yield Run(
        ns, settings, ev, malformed, out, exit_codes,
        {name: app.log_tail(5) for name, app in apps.items()}, settings.data_dir / "state",
        injected,
    )  # fmt: skip
    out.close()


def _logs(apps: dict[str, AppProcess]) -> str:
    return "\n".join(f"--- {name}\n{app.log_tail()}" for name, app in apps.items())


def test_every_app_stops_cleanly_on_sigterm(run: Run) -> None:
    assert run.exit_codes == dict.fromkeys(APPS, 0), run.logs


def test_happy_chain_order_reserved_invoiced_notified_with_causation(run: Run) -> None:
    order = run.events["happy"]
    [reserved] = run.caused_by(order, STOCK_EVENTS)
    assert reserved.event_type == "StockReserved"
    assert [(m.sku, m.delta, m.level_after) for m in reserved.payload.movements] == [
        ("SKU-00001", -2, 8)
    ]
    [invoice] = run.caused_by(reserved, FINANCE_EVENTS)
    assert invoice.event_type == "InvoiceIssued"
    assert invoice.payload.invoice_id == "INV-o-happy"
    assert invoice.payload.total_amount == Decimal("20.00")
    [note] = run.caused_by(invoice, NOTIFICATIONS)
    assert (note.payload.medium, note.payload.about) == ("email", "InvoiceIssued")
    for hop in (reserved, invoice, note):
        assert hop.correlation_id == "o-happy"
        assert hop.store_id == "store-01"


def test_out_of_stock_chain_rejected_and_told_never_invoiced(run: Run) -> None:
    order = run.events["short"]
    [rejected] = run.caused_by(order, STOCK_EVENTS)
    assert rejected.event_type == "StockRejected"
    assert [(x.sku, x.requested, x.available) for x in rejected.payload.shortages] == [
        ("SKU-00002", 5, 2)
    ]
    [note] = run.caused_by(rejected, NOTIFICATIONS)
    assert note.payload.medium == "push"
    assert [e for e in run.of(FINANCE_EVENTS) if e.correlation_id == "o-short"] == []


def test_return_chain_released_refunded_told_and_bad_returns_alerted(run: Run) -> None:
    ret = run.events["ret"]
    [released] = run.caused_by(ret, STOCK_EVENTS)
    assert released.event_type == "StockReleased"
    assert (released.payload.movement.delta, released.payload.movement.level_after) == (1, 3)
    [refund] = run.caused_by(ret, FINANCE_EVENTS)
    assert refund.event_type == "RefundIssued"
    assert (refund.payload.invoice_id, refund.payload.amount) == ("INV-o-kept", Decimal("4.00"))
    [note] = run.caused_by(refund, NOTIFICATIONS)
    assert note.payload.medium == "receipt"
    assert note.correlation_id == "ret-kept"
    kinds = {
        a.correlation_id: a.payload.kind
        for a in run.of(ALERTS)
        if a.payload.kind.startswith("return")
    }
    assert kinds == {
        "ret-short": "return_for_rejected_order",
        "ret-ghost": "return_for_unknown_order",
    }
    refunded = {e.payload.order_id for e in run.of(FINANCE_EVENTS, "RefundIssued")}
    assert refunded == {"o-kept"}


def test_question_chain_answered_from_the_stock_log_and_told(run: Run) -> None:
    answers = {a.payload.question_id: a for a in run.of(ANSWERS)}
    assert answers["q1"].payload.available_qty == 8
    assert answers["q2"].payload.available_qty == 2
    for qid, medium in (("q1", "push"), ("q2", "email")):
        assert answers[qid].causation_id == str(run.events[qid].event_id)
        [note] = run.caused_by(answers[qid], NOTIFICATIONS)
        assert note.payload.medium == medium


def test_low_stock_alert_when_a_sku_runs_out(run: Run) -> None:
    [alert] = [
        a for a in run.of(ALERTS) if a.payload.kind == "low_stock" and a.store_id == "store-03"
    ]
    assert (alert.payload.subject, alert.payload.severity) == ("store-03/SKU-00003", "critical")
    assert alert.causation_id == str(run.events["last"].event_id)


def test_duplicates_never_make_a_second_invoice_refund_or_notification(run: Run) -> None:
    invoices = Counter(e.payload.order_id for e in run.of(FINANCE_EVENTS, "InvoiceIssued"))
    assert invoices == dict.fromkeys(
        ["o-happy", "o-kept", "o-last", "o-sentinel", "o-sentinel-2"], 1
    )
    refunds = Counter(e.payload.return_id for e in run.of(FINANCE_EVENTS, "RefundIssued"))
    assert refunds == {"ret-kept": 1}
    notified = Counter(e.causation_id for e in run.of(NOTIFICATIONS))
    assert set(notified.values()) == {1}
    assert len(notified) == 9
    reservations = Counter(e.payload.order_id for e in run.of(STOCK_EVENTS, "StockReserved"))
    assert set(reservations.values()) == {1}
    released = [e for e in run.of(STOCK_EVENTS, "StockReleased")]
    assert len(released) == 1


def test_garbled_record_is_dead_lettered_and_its_neighbours_flow(run: Run) -> None:
    [letter] = [
        deadletter.DeadLetter.from_message(_Msg(r))
        for r in run.out.records[run.topic(DEAD_LETTERS)]
    ]
    assert letter.value == run.malformed
    assert (letter.failure.kind, letter.app) == ("bad_json", f"router-{run.ns.suffix}")
    assert letter.source.topic == run.topic(INGRESS_BY_CHANNEL["web"])
    assert run.caused_by(run.events["happy"], STOCK_EVENTS)  # sent right before it


def test_folding_the_stock_log_in_a_fresh_group_rebuilds_exactly_the_live_state(run: Run) -> None:
    log = _read_with_fresh_group(run.settings, run.topic(STOCK_EVENTS), f"rebuild-{run.ns.suffix}")
    rebuilt = stock.rebuild_levels(log)
    assert rebuilt == _live_levels(run.state_dir, run.ns), "fold != the stock service's state store"
    published: dict[tuple[str, str], int] = {}
    for r in run.out.records[run.topic(STOCK_LEVELS)]:
        value = json.loads(r.value or b"{}")
        published[(value["store_id"], value["sku"])] = value["level"]
    assert rebuilt == published, "fold != the last stock.levels record per key"
    assert rebuilt[("store-01", "SKU-00001")] == 10 - 2 - 1  # happy, sentinel
    assert rebuilt[("store-02", "SKU-00001")] == 5 - 3 + 1 - 1  # kept, its return, sentinel-2


def test_every_service_consumed_every_record_of_its_inputs(run: Run) -> None:
    """Nothing silently skipped: each service's own count matches its inputs' records."""
    inputs = {t.name: t for d in SERVICES.values() for t in d.inputs}.values()
    reader = TopicReader(run.settings, [run.topic(t) for t in inputs])
    try:
        reader.drain()
    finally:
        reader.close()
    for name, definition in SERVICES.items():
        inputs = sum(len(reader.records.get(run.topic(t), [])) for t in definition.inputs)
        assert f"consumed={inputs} " in run.logs[name], (name, inputs, run.logs[name])


def _read_with_fresh_group(settings: Settings, topic: str, group: str) -> list[Envelope]:
    """The whole topic through a new consumer group (offset reset: earliest), in log order."""
    consumer = make_consumer(settings, group)
    consumer.subscribe([topic])
    events: list[Envelope] = []
    try:
        deadline = time.monotonic() + 60
        quiet_since = time.monotonic()
        # Until the group has joined and then nothing more arrives for 3 s.
        while time.monotonic() < deadline and (not events or time.monotonic() - quiet_since < 3):
            batch = [
                m for m in consumer.consume(num_messages=1000, timeout=0.5) if m.error() is None
            ]
            if batch:
                quiet_since = time.monotonic()
            for msg in batch:
                event = decode(msg.value())
                assert not isinstance(event, DecodeError), event
                events.append(event)
    finally:
        consumer.close()
    return events


def _live_levels(state_dir: Path, ns: Namespace) -> dict[tuple[str, str], int]:
    """``level:<sku>`` keys of the stock app's RocksDB store, read after it stopped.

    Quix lays the store out as ``<store key>|<JSON of the state key>`` -> JSON value;
    reading it directly checks the live state itself, not a projection of it.
    """
    levels: dict[tuple[str, str], int] = {}
    paths = glob.glob(str(state_dir / ns.app("stock") / "*" / "default" / "*" / "*"))
    assert paths, f"no stock state under {state_dir}"
    for path in paths:
        db = Rdict(path, access_type=AccessType.read_only())
        try:
            for key, value in db.items():
                prefix, sep, name = bytes(key).partition(b"|")
                if sep and name.startswith(b'"level:'):
                    levels[(prefix.decode(), json.loads(name)[len("level:") :])] = json.loads(value)
        finally:
            db.close()
    return levels


class _Msg:
    def __init__(self, r: ReadRecord) -> None:
        self._r = r

    def key(self) -> bytes | None:
        return self._r.key

    def value(self) -> bytes | None:
        return self._r.value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._r.headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._r.timestamp)
