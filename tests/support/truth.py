"""A ground truth for the read models, from the raw ingress records alone.

What the channels sent is read back from the ingress topics as bytes and parsed with
``json`` and ``Decimal`` here - no project parser, rule or query is used to compute what
the read models should hold. The rules the truth applies are those the docs state
(``docs/services.md``): the router dead-letters malformed records and drops resends of an
event id from the same partition; stock reserves an order all or nothing, releases at most
what it reserved; finance invoices each reservation (``INV-<order_id>``, net + tax = total
with 20 % tax included), refunds a return of an invoiced order up to what is left, raises
an alert for any other return; notifications send one message per invoice, rejection,
refund and answer; analytics counts each order once in its 1-minute window or lists it
as late.

Which records are malformed, and of which kind, comes from the fault injector's tags of
the same seeded stream (:func:`tags_of`): the test's own account of the faults it made,
checked byte for byte against what the broker holds.

:class:`Lake` loads the read models (plain SQL over the tables), :func:`compare` holds
them to a :class:`Truth` and returns a :class:`Verdict`: what is missing, what is there
that should not be, what is doubled, what has a wrong value, each per read model.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, ClassVar

from producers.record import Record
from readmodels.queries import ReadModels
from shopstream.topics import INGRESS_BY_CHANNEL, ORDERS, STOCK_EVENTS, Namespace
from support.processes import ReadRecord

SPEC_ERROR_KIND = {
    "truncated_json": "bad_json",
    "wrong_type": "wrong_type",
    "missing_field": "missing_field",
    "unknown_type": "unknown_type",
    "negative_quantity": "invalid_value",
    "oversized": "oversized",
    "non_utf8": "bad_encoding",
}
"""The dead-letter ``error.kind`` each injected fault must get (``docs/services.md``)."""
RETURN_ALERTS = ("return_for_rejected_order", "return_for_unknown_order", "refund_exceeds_invoice")
CENT = Decimal("0.01")
MINUTE_MS = 60_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Coordinates = tuple[str, int, int]


def epoch_ms(text: str | datetime) -> int:
    moment = datetime.fromisoformat(text) if isinstance(text, str) else text
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def tags_of(records: Iterable[Record]) -> dict[tuple[str, bytes], str | None]:
    """``(channel, value) -> fault tag`` of records as the fault injector made them (a
    duplicate has its original's bytes, so the original's tag stands)."""
    tags: dict[tuple[str, bytes], str | None] = {}
    for rec in records:
        tags.setdefault((rec.channel, rec.value), rec.fault if rec.fault != "duplicate" else None)
    return tags


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    event_id: str
    store_id: str
    channel: str
    customer_id: str
    occurred_ms: int
    lines: tuple[tuple[str, int, Decimal], ...]
    total: Decimal

    @property
    def wanted(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for sku, qty, _ in self.lines:
            out[sku] += qty
        return dict(out)


@dataclass(frozen=True, slots=True)
class Return:
    return_id: str
    event_id: str
    order_id: str
    store_id: str
    sku: str
    qty: int
    amount: Decimal
    occurred_ms: int


@dataclass
class Truth:
    """What the channels sent (see the module docstring)."""

    orders: dict[str, Order] = field(default_factory=dict)
    returns: dict[str, Return] = field(default_factory=dict)
    questions: dict[str, str] = field(default_factory=dict)
    """question_id -> event_id"""
    restocks: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    """restock_id -> (store_id, sku, qty)"""
    malformed: dict[Coordinates, str] = field(default_factory=dict)
    """Where each malformed record is on ingress -> the dead-letter kind it must get."""
    duplicates: Counter[str] = field(default_factory=Counter)
    """Resends of an event id from the same partition, by event type."""
    faults: Counter[str] = field(default_factory=Counter)
    """Records on ingress by fault tag (``duplicate``, ``late`` or a malformed kind)."""
    records: int = 0

    @classmethod
    def of(
        cls,
        ingress: Iterable[ReadRecord],
        tags: dict[tuple[str, bytes], str | None],
        namespace: Namespace,
    ) -> Truth:
        truth = cls()
        channel_of = {namespace.topic(spec).name: c for c, spec in INGRESS_BY_CHANNEL.items()}
        seen: dict[tuple[str, int], set[str]] = defaultdict(set)
        for rec in sorted(ingress, key=lambda r: (r.topic, r.partition, r.offset)):
            truth.records += 1
            value = rec.value or b""
            key = (channel_of[rec.topic], value)
            if key not in tags:
                raise AssertionError(
                    f"{rec.topic}[{rec.partition}]@{rec.offset} holds a record the producer "
                    f"never made: {value[:200]!r}"
                )
            tag = tags[key]
            if tag in SPEC_ERROR_KIND:
                truth.faults[tag] += 1
                truth.malformed[(rec.topic, rec.partition, rec.offset)] = SPEC_ERROR_KIND[tag]
                continue
            doc = json.loads(value, parse_float=Decimal)
            event_id = doc["event_id"]
            if event_id in seen[(rec.topic, rec.partition)]:
                truth.faults["duplicate"] += 1
                truth.duplicates[doc["event_type"]] += 1
                continue
            seen[(rec.topic, rec.partition)].add(event_id)
            if tag == "late":
                truth.faults["late"] += 1
            truth._add(doc)
        return truth

    def _add(self, doc: dict[str, Any]) -> None:
        p, kind = doc["payload"], doc["event_type"]
        when = epoch_ms(doc["occurred_at"])
        if kind == "OrderPlaced":
            lines = tuple(
                (line["sku"], int(line["qty"]), Decimal(str(line["unit_price"])))
                for line in p["lines"]
            )
            total = sum((qty * price for _, qty, price in lines), Decimal("0"))
            self.orders[p["order_id"]] = Order(
                p["order_id"], doc["event_id"], doc["store_id"], doc["channel"],
                p["customer_id"], when, lines, total.quantize(CENT),
            )  # fmt: skip
        elif kind == "ItemReturned":
            self.returns[p["return_id"]] = Return(
                p["return_id"], doc["event_id"], p["order_id"], doc["store_id"], p["sku"],
                int(p["qty"]), Decimal(str(p["amount"])).quantize(CENT), when,
            )  # fmt: skip
        elif kind == "StockQuestionAsked":
            self.questions[p["question_id"]] = doc["event_id"]
        elif kind == "Restocked":
            self.restocks[p["restock_id"]] = (doc["store_id"], p["sku"], int(p["qty"]))
        else:  # pragma: no cover - the simulator sends only these
            raise AssertionError(f"unexpected event type {kind}")

    @property
    def valid(self) -> int:
        return len(self.orders) + len(self.returns) + len(self.questions) + len(self.restocks)


def split_tax(total: Decimal) -> tuple[Decimal, Decimal]:
    """Net and tax of a total with 20 % tax included, to the cent (half to even)."""
    net = (total / Decimal("1.2")).quantize(CENT, rounding=ROUND_HALF_EVEN)
    return net, total - net


class Lake:
    """The read models, loaded with plain SQL (rows as dicts)."""

    TABLES: ClassVar[dict[str, str]] = {
        "orders": "order_id, event_id, total, lines, units, store_id, channel",
        "order_lines": "order_id, line_no, sku, qty, unit_price, amount",
        "returns": "return_id, event_id, order_id",
        "stock_questions": "question_id, event_id",
        "stock_movements": "event_id, event_type, store_id, sku, delta, level_after, order_id, "
        "return_id, restock_id",
        "stock_rejections": "event_id, order_id, store_id, sku, requested, available",
        "invoices": "invoice_id, event_id, order_id, net_amount, tax_amount, total_amount",
        "refunds": "refund_id, event_id, return_id, order_id, invoice_id, amount",
        "notifications": "notification_id, event_id, about",
        "stock_answers": "question_id, event_id",
        "alerts": "alert_id, event_id, kind, subject, details::VARCHAR AS details",
        "dead_letters": "source_topic, source_partition, source_offset, error_kind, "
        "error_message, app, kafka_partition, kafka_offset",
        "events": "event_id, event_type, causation_id, topic, kafka_partition, kafka_offset, "
        "epoch_ms(emitted_at) AS emitted_ms",
        "sales_by_channel": "epoch_ms(window_start) AS window_start, channel, orders, units, "
        "revenue",
        "late_events": "event_id, event_type, topic, epoch_ms(window_start) AS window_start",
        "sales_minute": "epoch_ms(minute) AS minute, channel, store_id, orders, units, revenue",
    }

    def __init__(self, rm: ReadModels) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {
            name: rm.sql(f"SELECT {columns} FROM {rm.table(name)}").to_dicts()
            for name, columns in self.TABLES.items()
        }

    def __getitem__(self, name: str) -> list[dict[str, Any]]:
        return self.rows[name]

    @staticmethod
    def progress(rm: ReadModels) -> dict[str, int]:
        """Distinct orders, decisions, restocks booked and questions answered so far."""
        m, j = rm.table("stock_movements"), rm.table("stock_rejections")
        row = rm.sql(f"""
            SELECT (SELECT count(DISTINCT order_id) FROM {rm.table("orders")}) AS orders,
                   (SELECT count(DISTINCT order_id) FROM (
                        SELECT order_id FROM {m} WHERE event_type = 'StockReserved'
                        UNION SELECT order_id FROM {j})) AS decisions,
                   (SELECT count(DISTINCT restock_id) FROM {m}
                    WHERE event_type = 'StockReplenished') AS restocks,
                   (SELECT count(DISTINCT question_id) FROM {rm.table("stock_answers")})
                        AS answers""").to_dicts()[0]
        return {k: int(v or 0) for k, v in row.items()}

    @staticmethod
    def counts(rm: ReadModels) -> dict[str, int]:
        """Rows per read model (for progress while the pipeline runs)."""
        parts = " UNION ALL ".join(
            f"SELECT '{name}' AS t, count(*) AS n FROM {rm.table(name)}" for name in Lake.TABLES
        )
        return {row["t"]: int(row["n"]) for row in rm.sql(parts).to_dicts()}


@dataclass
class Check:
    """One read model held to the truth."""

    name: str
    expected: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    """Entities with more rows (or more records behind them) than they should have."""
    extra_rows: int = 0
    wrong: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        def few(items: list[str]) -> str:
            return ", ".join(items[:5]) + (f" ... ({len(items)})" if len(items) > 5 else "")

        parts = [f"{self.name}: {self.expected} expected"]
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected),
                             ("doubled", self.doubled), ("wrong", self.wrong)):  # fmt: skip
            if items:
                parts.append(f"{len(items)} {label} [{few(items)}]")
        if self.extra_rows:
            parts.append(f"{self.extra_rows} extra rows")
        return "; ".join(parts)


@dataclass
class Verdict:
    """Every read model held to the truth: loss and wrong values (what at-least-once and
    idempotency guarantee) apart from doubles and broken sequences (exactly-once)."""

    checks: dict[str, Check]
    stock_log: list[str]
    """Where the stock log contradicts itself or the stock rule (in log order)."""
    windows: list[str]
    """Analytics windows whose counts differ from the truth (or appear twice)."""
    minutes: list[str]
    """sales_minute pre-aggregates that differ from the truth."""

    @property
    def lost(self) -> int:
        return sum(len(c.missing) for c in self.checks.values())

    @property
    def doubled(self) -> int:
        return sum(len(c.doubled) for c in self.checks.values())

    @property
    def extra_rows(self) -> int:
        return sum(c.extra_rows for c in self.checks.values())

    def at_least_once(self) -> list[str]:
        """Problems no broker gap excuses: loss, strangers, wrong values."""
        return [str(c) for c in self.checks.values() if c.missing or c.unexpected or c.wrong]

    def exactly_once(self) -> list[str]:
        """Doubles, a stock log that does not add up, windows counted twice."""
        out = [str(c) for c in self.checks.values() if c.doubled or c.extra_rows]
        out += [f"stock log: {p}" for p in self.stock_log[:10]]
        out += [f"analytics window: {p}" for p in self.windows[:10]]
        out += [f"sales_minute: {p}" for p in self.minutes[:10]]
        return out


def _ids(check: Check, found: Counter[str], expected: Iterable[str], rows_each: Any = 1) -> None:
    """Fill ``check`` from row counts per id against the expected ids (``rows_each``: rows
    one entity should have, an int or a function of the id)."""
    wanted = set(expected)
    check.expected = len(wanted)
    check.missing += sorted(wanted - set(found))
    check.unexpected += sorted(set(found) - wanted)
    for entity, n in found.items():
        should = rows_each(entity) if callable(rows_each) else rows_each
        if entity in wanted and n > should:
            check.doubled.append(entity)
            check.extra_rows += n - should


def compare(truth: Truth, lake: Lake, namespace: Namespace) -> Verdict:
    """Hold the read models to ``truth`` (see the module docstring)."""
    checks: dict[str, Check] = {}

    def check(name: str) -> Check:
        checks[name] = Check(name)
        return checks[name]

    # --- what the router routed -----------------------------------------------------
    c = check("orders")
    _ids(c, Counter(r["order_id"] for r in lake["orders"]), truth.orders)
    for r in lake["orders"]:
        order = truth.orders.get(r["order_id"])
        if order is not None and (r["total"], r["event_id"], r["lines"], r["store_id"]) != (
            order.total, order.event_id, len(order.lines), order.store_id,
        ):  # fmt: skip
            c.wrong.append(f"{r['order_id']} total {r['total']} (sent {order.total})")
    c = check("order_lines")
    per_order: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in lake["order_lines"]:
        per_order[r["order_id"]].append(r)
    _ids(c, Counter({o: len(rows) for o, rows in per_order.items()}), truth.orders,
         lambda o: len(truth.orders[o].lines))  # fmt: skip
    for order_id, rows in per_order.items():
        order = truth.orders.get(order_id)
        if order is None:
            continue
        got = {(r["line_no"], r["sku"], r["qty"], r["unit_price"], r["amount"]) for r in rows}
        sent = {(i + 1, sku, qty, price, (qty * price).quantize(CENT))
                for i, (sku, qty, price) in enumerate(order.lines)}  # fmt: skip
        if got != sent:
            c.wrong.append(f"{order_id} lines {sorted(got)} (sent {sorted(sent)})")
    _ids(check("returns"), Counter(r["return_id"] for r in lake["returns"]), truth.returns)
    _ids(
        check("stock_questions"),
        Counter(r["question_id"] for r in lake["stock_questions"]),
        truth.questions,
    )

    # --- dead letters: every malformed record once, with its kind ------------------------
    c = check("dead_letters")
    letters = Counter(
        f"{r['source_topic']}[{r['source_partition']}]@{r['source_offset']}"
        for r in lake["dead_letters"]
    )
    expected_letters = {f"{t}[{p}]@{o}": kind for (t, p, o), kind in truth.malformed.items()}
    _ids(c, letters, expected_letters)
    router = namespace.app("router")
    for r in lake["dead_letters"]:
        where = f"{r['source_topic']}[{r['source_partition']}]@{r['source_offset']}"
        kind = expected_letters.get(where)
        if kind is not None and (r["error_kind"], r["app"]) != (kind, router):
            c.wrong.append(f"{where}: {r['error_kind']} by {r['app']} (expected {kind})")
        if kind is not None and not r["error_message"]:
            c.wrong.append(f"{where}: no reason given")

    # --- stock: each order decided once, each restock booked once ------------------------
    reserved_rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    released_rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    replenished: Counter[str] = Counter()
    for r in lake["stock_movements"]:
        if r["event_type"] == "StockReserved":
            reserved_rows[r["order_id"]].append(r)
        elif r["event_type"] == "StockReleased":
            released_rows[r["return_id"]].append(r)
        elif r["event_type"] == "StockReplenished":
            replenished[r["restock_id"]] += 1
            store, sku, qty = truth.restocks.get(r["restock_id"], (None, None, None))
            if store is not None and (r["store_id"], r["sku"], r["delta"]) != (store, sku, qty):
                checks.setdefault("restocks", Check("restocks")).wrong.append(r["restock_id"])
    rejected_rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in lake["stock_rejections"]:
        rejected_rows[r["order_id"]].append(r)
    c = checks.setdefault("restocks", Check("restocks"))
    _ids(c, replenished, truth.restocks)

    c = check("stock decisions")
    decisions = Counter(
        {o: len({r["event_id"] for r in rows}) for o, rows in reserved_rows.items()}
    )
    decisions.update({o: len({r["event_id"] for r in rows}) for o, rows in rejected_rows.items()})
    _ids(c, decisions, truth.orders)
    for order_id, rows in reserved_rows.items():
        order = truth.orders.get(order_id)
        if order is None:
            continue
        got = {(r["sku"], -r["delta"]) for r in rows}
        if got != set(order.wanted.items()) or any(r["store_id"] != order.store_id for r in rows):
            c.wrong.append(f"{order_id} reserved {sorted(got)} (ordered {order.wanted})")
    for order_id, rows in rejected_rows.items():
        order = truth.orders.get(order_id)
        if order is None:
            continue
        wanted = order.wanted
        for r in rows:
            if r["requested"] != wanted.get(r["sku"]) or r["requested"] <= r["available"]:
                c.wrong.append(f"{order_id} rejected {r['sku']}: {r['requested']} "
                               f"wanted, {r['available']} there (ordered {wanted})")  # fmt: skip

    # The same stock event written twice (same event id and SKU): a record delivered twice.
    copies = Counter((r["event_id"], r["sku"]) for r in lake["stock_movements"])
    copies.update((r["event_id"], r["sku"]) for r in lake["stock_rejections"])
    c.extra_rows += sum(n - 1 for n in copies.values() if n > 1)
    reserved = set(reserved_rows)
    rejected = set(rejected_rows) - reserved

    # --- releases and refunds: per order, returns in event-time order ----------------------
    # A return can come before its order or the order's decision (the services read several
    # topics, each at its own pace; a restarted one lags): the services hold it and decide
    # it with the order. Finance alerts on a return of an order it has not heard of at all
    # (it may never come), so that alert is allowed - never required - where the lineage
    # shows the race: the order decided after the return was routed.
    emitted: dict[str, int] = {}
    for r in lake["events"]:
        emitted[r["event_id"]] = min(r["emitted_ms"], emitted.get(r["event_id"], r["emitted_ms"]))
    decided_at = {o: min(emitted.get(r["event_id"], 0) for r in rows)
                  for o, rows in (*reserved_rows.items(), *rejected_rows.items())}  # fmt: skip
    expected_release: dict[str, int] = {}
    expected_refund: dict[str, Decimal] = {}
    required_alert: dict[str, set[str]] = {}
    allowed_alert: dict[str, set[str]] = defaultdict(set)
    by_order: dict[str, list[Return]] = defaultdict(list)
    for ret in truth.returns.values():
        by_order[ret.order_id].append(ret)
    for order_id, returns in by_order.items():
        order = truth.orders.get(order_id)
        released: Counter[str] = Counter()
        refunded = Decimal("0.00")
        for ret in sorted(returns, key=lambda x: (x.occurred_ms, x.return_id)):
            rid = ret.return_id
            if decided_at.get(order_id, 0) > emitted.get(ret.event_id, 0):
                allowed_alert[rid].add("return_for_unknown_order")
            if order is None or order_id not in reserved:
                required_alert[rid] = {"return_for_rejected_order" if order_id in rejected
                                       else "return_for_unknown_order"}  # fmt: skip
                continue
            qty = min(ret.qty, order.wanted.get(ret.sku, 0) - released[ret.sku])
            if qty > 0:
                expected_release[rid] = qty
                released[ret.sku] += qty
            amount = min(ret.amount, order.total - refunded)
            if amount > 0:
                expected_refund[rid] = amount
                refunded += amount
            else:
                required_alert[rid] = {"refund_exceeds_invoice"}
    c = check("stock releases")
    _ids(c, Counter({k: len(v) for k, v in released_rows.items()}), expected_release)
    for return_id, rows in released_rows.items():
        if return_id in expected_release and any(
            r["delta"] != expected_release[return_id] for r in rows
        ):
            c.wrong.append(f"{return_id} released {[r['delta'] for r in rows]} "
                           f"(expected {expected_release[return_id]})")  # fmt: skip

    # --- finance ---------------------------------------------------------------------------
    c = check("invoices")
    _ids(c, Counter(r["order_id"] for r in lake["invoices"]), reserved)
    for r in lake["invoices"]:
        order = truth.orders.get(r["order_id"])
        if order is None:
            continue
        net, tax = split_tax(order.total)
        got = (r["invoice_id"], r["total_amount"], r["net_amount"], r["tax_amount"])
        if got != (f"INV-{order.order_id}", order.total, net, tax) or (
            r["net_amount"] + r["tax_amount"] != r["total_amount"]
        ):
            c.wrong.append(f"{order.order_id}: {got} (sent total {order.total})")
    c = check("refunds")
    _ids(c, Counter(r["return_id"] for r in lake["refunds"]), expected_refund)
    for r in lake["refunds"]:
        want = expected_refund.get(r["return_id"])
        if want is not None and (r["amount"], r["invoice_id"]) != (want, f"INV-{r['order_id']}"):
            c.wrong.append(f"{r['return_id']}: {r['amount']} (expected {want})")
    c = check("return alerts")
    alert_kinds: dict[str, Counter[str]] = defaultdict(Counter)
    for r in lake["alerts"]:
        if r["kind"] in RETURN_ALERTS:
            alert_kinds[json.loads(r["details"]).get("return_id")][r["kind"]] += 1
    c.expected = len(required_alert)
    c.missing += sorted(rid for rid, kinds in required_alert.items()
                        if not kinds <= set(alert_kinds.get(rid, ())))  # fmt: skip
    for rid, kinds in alert_kinds.items():
        stray = set(kinds) - required_alert.get(rid, set()) - allowed_alert.get(rid, set())
        if stray:
            c.unexpected.append(f"{rid}: {sorted(stray)}")
        if any(n > 1 for n in kinds.values()):
            c.doubled.append(rid)
            c.extra_rows += sum(n - 1 for n in kinds.values())

    # --- answers and notifications: one per cause -----------------------------------------
    _ids(
        check("stock_answers"),
        Counter(r["question_id"] for r in lake["stock_answers"]),
        truth.questions,
    )
    causes = {r["event_id"] for r in lake["invoices"]}
    causes |= {r["event_id"] for r in lake["stock_rejections"]}
    causes |= {r["event_id"] for r in lake["refunds"]}
    causes |= {r["event_id"] for r in lake["stock_answers"]}
    caused_by = {
        r["event_id"]: r["causation_id"]
        for r in lake["events"]
        if r["event_type"] == "NotificationSent"
    }
    c = check("notifications")
    _ids(c, Counter(caused_by.get(r["event_id"], "?") for r in lake["notifications"]), causes)

    return Verdict(
        checks,
        stock_log=list(_stock_log_problems(lake, truth, namespace)),
        windows=_window_problems(lake, truth, namespace),
        minutes=_minute_problems(lake, truth),
    )


def _stock_log_problems(lake: Lake, truth: Truth, namespace: Namespace) -> Iterator[str]:
    """Replay the stock log in its own order (per store, by offset): each movement's level
    follows from the one before, never below zero; each reservation had every unit
    there, each rejection lists exactly the SKUs that were short."""
    topic = namespace.topic(STOCK_EVENTS).name
    where = {
        r["event_id"]: (r["kafka_partition"], r["kafka_offset"])
        for r in lake["events"]
        if r["topic"] == topic
    }
    entries: list[tuple[tuple[int, int], str, dict[str, Any]]] = []
    for r in lake["stock_movements"]:
        entries.append((where.get(r["event_id"], (-1, -1)), "move", r))
    for r in lake["stock_rejections"]:
        entries.append((where.get(r["event_id"], (-1, -1)), "reject", r))
    if any(pos == (-1, -1) for pos, _, _ in entries):
        yield "a stock event has no lineage row (topic, partition, offset)"
        return
    levels: dict[tuple[str, str], int] = defaultdict(int)
    by_event: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    order_of: list[str] = []
    for _, kind, r in sorted(entries, key=lambda e: e[0]):
        if r["event_id"] not in by_event:
            order_of.append(r["event_id"])
        by_event[r["event_id"]].append((kind, r))
    for event_id in order_of:
        rows = by_event[event_id]
        if rows[0][0] == "reject":
            order = truth.orders.get(rows[0][1]["order_id"])
            store = rows[0][1]["store_id"]
            short = {r["sku"]: (r["requested"], r["available"]) for _, r in rows}
            if order is not None:
                should = {
                    sku: (qty, levels[(store, sku)])
                    for sku, qty in order.wanted.items()
                    if qty > levels[(store, sku)]
                }
                if short != should:
                    yield f"rejection {event_id} of {order.order_id}: {short}, levels say {should}"
            continue
        for _, r in rows:
            key = (r["store_id"], r["sku"])
            if r["level_after"] != levels[key] + r["delta"] or r["level_after"] < 0:
                yield (f"{r['event_type']} {event_id} {key}: {levels[key]} {r['delta']:+d} "
                       f"-> {r['level_after']}")  # fmt: skip
            levels[key] = r["level_after"]


def _window_problems(lake: Lake, truth: Truth, namespace: Namespace) -> list[str]:
    """Each emitted 1-minute channel window holds exactly the orders of its minute that
    analytics did not list as late; no window is emitted twice."""
    late_topic = namespace.topic(ORDERS).name
    late = {r["event_id"] for r in lake["late_events"] if r["topic"] == late_topic}
    expected: dict[tuple[int, str], list[Order]] = defaultdict(list)
    for order in truth.orders.values():
        if order.event_id not in late:
            expected[(order.occurred_ms // MINUTE_MS * MINUTE_MS, order.channel)].append(order)
    problems = []
    seen = Counter((r["window_start"], r["channel"]) for r in lake["sales_by_channel"])
    problems += [f"{w} emitted {n} times" for w, n in seen.items() if n > 1]
    for r in lake["sales_by_channel"]:
        orders = expected.get((r["window_start"], r["channel"]), [])
        want = (len(orders), sum(sum(q for _, q, _ in o.lines) for o in orders),
                sum((o.total for o in orders), Decimal("0.00")))  # fmt: skip
        got = (r["orders"], r["units"], r["revenue"])
        if got != want:
            problems.append(f"{r['window_start']}/{r['channel']}: {got}, truth {want}")
    return problems


def _minute_problems(lake: Lake, truth: Truth) -> list[str]:
    """``sales_minute`` (the sink's live pre-aggregate) sums to the truth per minute,
    channel and store."""
    got: dict[tuple[int, str, str], list[Any]] = defaultdict(lambda: [0, 0, Decimal("0.00")])
    for r in lake["sales_minute"]:
        cell = got[(r["minute"], r["channel"], r["store_id"])]
        cell[0] += r["orders"]
        cell[1] += r["units"]
        cell[2] += r["revenue"]
    want: dict[tuple[int, str, str], list[Any]] = defaultdict(lambda: [0, 0, Decimal("0.00")])
    for o in truth.orders.values():
        cell = want[(o.occurred_ms // MINUTE_MS * MINUTE_MS, o.channel, o.store_id)]
        cell[0] += 1
        cell[1] += sum(q for _, q, _ in o.lines)
        cell[2] += o.total
    return [
        f"{key}: {got.get(key)}, truth {want.get(key)}"
        for key in sorted(set(got) | set(want))
        if got.get(key) != want.get(key)
    ]
