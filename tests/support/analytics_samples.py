"""Deterministic synthetic input for the analytics: for tests and the benchmark.

One call gives a shop's worth of the four inputs, as the typed topics would carry
them (contract-conformant JSON values, keyed by ``store_id``): orders; the stock
service's log for them (reserved, or rejected when a store runs out; released on
returns; replenished now and then, so SKUs go out of stock and come back);
returns of earlier orders; stock questions, many about SKUs a store has run out
of. Event times are simulated; the *arrival* order is event-time order with a
little disorder (``jitter_ms``) and a share of events held back long enough
(``late_ratio``) to arrive after their window's grace period.

The generator is not the simulators of :mod:`producers`: those model customers,
not the stock service, and the analytics tests need control over disorder,
lateness and stock-outs. Same spec and seed, same records.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from random import Random
from typing import Any

from pipelines.analytics.records import InputKind, format_time_ms


@dataclass(frozen=True, slots=True)
class SampleSpec:
    """Shape of the synthetic input."""

    start_ms: int = 1_717_200_000_000
    """2024-06-01 00:00 UTC (a Saturday)."""
    minutes: int = 30
    orders_per_minute: int = 20
    stores: int = 6
    skus: int = 40
    returns_per_order: float = 0.15
    questions_per_order: float = 0.3
    replenish_every_minutes: int = 7
    opening_stock: tuple[int, int] = (0, 12)
    jitter_ms: int = 20_000
    """Arrival disorder for on-time events (keep below grace to keep them on time)."""
    late_ratio: float = 0.02
    late_by_ms: int = 6 * 60_000
    """How long a held-back event arrives after its event time."""
    channels: tuple[str, ...] = ("mobile", "pos", "web")


@dataclass(frozen=True, slots=True)
class Sample:
    """One input record: which input, its key, its JSON value, its event time."""

    kind: InputKind
    key: str
    value: dict[str, Any]
    time_ms: int


def _uuid(rng: Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _envelope(
    rng: Random, etype: str, t: int, channel: str, store: str, corr: str, cause: str = ""
) -> dict[str, Any]:
    return {
        "event_id": _uuid(rng),
        "event_type": etype,
        "schema_version": 1,
        "occurred_at": format_time_ms(t),
        "channel": channel,
        "store_id": store,
        "correlation_id": corr,
        "causation_id": cause,
    }


def generate(spec: SampleSpec, seed: int = 7) -> list[Sample]:
    """The records, in arrival order (see the module docstring)."""
    rng = Random(seed)
    stores = [f"ST-{i + 1:03d}" for i in range(spec.stores)]
    skus = [f"SKU-{10001 + i:05d}" for i in range(spec.skus)]
    prices = {sku: round(round(rng.uniform(1, 120)) - 0.01, 2) for sku in skus}
    weights = [1 / (i + 1) for i in range(spec.skus)]  # a few SKUs sell most
    level = {(s, k): rng.randint(*spec.opening_stock) for s in stores for k in skus}
    empty = {s: {k for k in skus if level[s, k] == 0} for s in stores}

    timed: list[tuple[int, int, Sample]] = []  # (event time, tie-break, record)
    seq = 0

    def add(kind: InputKind, value: dict[str, Any], t: int) -> None:
        nonlocal seq
        timed.append((t, seq, Sample(kind, value["store_id"], value, t)))
        seq += 1

    order_times = sorted(
        spec.start_ms + rng.randrange(spec.minutes * 60_000)
        for _ in range(spec.minutes * spec.orders_per_minute)
    )
    replenish_at = spec.start_ms
    returnable: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
    for n, t in enumerate(order_times):
        while replenish_at <= t:  # stores restock what they ran out of
            for store in stores:
                for sku in sorted(empty[store]):
                    if rng.random() < 0.5:
                        empty[store].discard(sku)
                        qty = rng.randint(3, 10)
                        level[store, sku] = qty
                        env = _envelope(
                            rng,
                            "StockReplenished",
                            replenish_at,
                            "system",
                            store,
                            f"R-{store}-{sku}-{replenish_at}",
                        )
                        move = {"sku": sku, "delta": qty, "level_after": qty}
                        add(
                            "stock",
                            env
                            | {"payload": {"restock_id": env["correlation_id"], "movement": move}},
                            replenish_at,
                        )
            replenish_at += spec.replenish_every_minutes * 60_000
        store = rng.choice(stores)
        channel = rng.choice(spec.channels)
        order_id = f"O-{seed}-{n:06d}"
        customer = f"C-{rng.randrange(1, 500):05d}"
        chosen = rng.choices(skus, weights, k=rng.randint(1, 4))
        lines = [
            {"sku": sku, "qty": rng.randint(1, 3), "unit_price": prices[sku]} for sku in chosen
        ]
        order = _envelope(rng, "OrderPlaced", t, channel, store, order_id) | {
            "payload": {
                "order_id": order_id,
                "customer_id": customer,
                "lines": lines,
                "currency": "EUR",
                "payment_method": "card",
            }
        }
        add("orders", order, t)
        need: dict[str, int] = {}
        for line in lines:
            need[line["sku"]] = need.get(line["sku"], 0) + line["qty"]
        short = [(sku, q) for sku, q in need.items() if level[store, sku] < q]
        stock = _envelope(rng, "", t, channel, store, order_id, order["event_id"])
        if short:
            stock["event_type"] = "StockRejected"
            stock["payload"] = {
                "order_id": order_id,
                "customer_id": customer,
                "shortages": [
                    {"sku": sku, "requested": q, "available": level[store, sku]} for sku, q in short
                ],
            }
        else:
            moves = []
            for sku, q in need.items():
                level[store, sku] -= q
                if level[store, sku] == 0:
                    empty[store].add(sku)
                moves.append({"sku": sku, "delta": -q, "level_after": level[store, sku]})
            stock["event_type"] = "StockReserved"
            stock["payload"] = {"order_id": order_id, "customer_id": customer, "movements": moves}
            returnable.append((t, order, lines[0]))
        add("stock", stock, t)
        if returnable and rng.random() < spec.returns_per_order:
            placed, past, line = returnable.pop(rng.randrange(len(returnable)))
            rt = max(t, placed + rng.randrange(60_000, 10 * 60_000))
            if rt < spec.start_ms + spec.minutes * 60_000:
                qty = rng.randint(1, line["qty"])
                pstore = past["store_id"]
                rid = f"RT-{past['payload']['order_id']}"
                ret = _envelope(rng, "ItemReturned", rt, past["channel"], pstore, rid)
                ret["payload"] = {
                    "return_id": rid,
                    "order_id": past["payload"]["order_id"],
                    "customer_id": past["payload"]["customer_id"],
                    "sku": line["sku"],
                    "qty": qty,
                    "reason": rng.choice(["damaged", "wrong_size", "changed_mind"]),
                    "amount": round(qty * line["unit_price"], 2),
                }
                add("returns", ret, rt)
                level[pstore, line["sku"]] += qty
                empty[pstore].discard(line["sku"])
                rel = _envelope(
                    rng, "StockReleased", rt, past["channel"], pstore, rid, ret["event_id"]
                )
                rel["payload"] = {
                    "return_id": rid,
                    "order_id": past["payload"]["order_id"],
                    "movement": {
                        "sku": line["sku"],
                        "delta": qty,
                        "level_after": level[pstore, line["sku"]],
                    },
                }
                add("stock", rel, rt)
        if rng.random() < spec.questions_per_order:
            qstore = rng.choice(stores)
            out = empty[qstore]
            sku = rng.choice(sorted(out)) if out and rng.random() < 0.7 else rng.choice(skus)
            qt = t + rng.randrange(0, 5_000)
            qid = f"Q-{seed}-{n:06d}"
            question = _envelope(
                rng, "StockQuestionAsked", qt, rng.choice(spec.channels), qstore, qid
            )
            question["payload"] = {
                "question_id": qid,
                "customer_id": customer,
                "sku": sku,
                "store_id": qstore,
                "text": f"Is {sku} in stock?",
            }
            add("questions", question, qt)

    arrivals = []
    for t, tie, record in timed:
        if rng.random() < spec.late_ratio:
            arrive = t + spec.late_by_ms
        else:
            arrive = t + rng.randrange(spec.jitter_ms + 1)
        arrivals.append((arrive, tie, record))
    arrivals.sort(key=lambda a: (a[0], a[1]))
    return [record for _, _, record in arrivals]
