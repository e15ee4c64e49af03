"""Router throughput against a plain Quix Streams stateless app, same input, same run.

    python benchmarks/router_throughput.py [--events 200000] [--rounds 3]
        [--broker HOST:PORT | --broker-kind embedded|kafka]

Without ``--broker`` it starts a broker on a free port: the embedded one, or the Apache
Kafka reference (``--broker-kind kafka``, needs Java). It writes one input
set into the four ingress topics (the channel simulators' traffic: orders, returns,
questions, restocks in the channel mix, plus 1% duplicates and 1% malformed records,
:mod:`producers.faults`), then runs, each with a fresh consumer group over that same
input and in the same processing guarantee:

* ``quix pass-through``: the floor - a stateless Quix app, bytes in, ``apply`` of the
  identity, bytes out to one topic;
* ``quix json apply``: a plain stateless app as Quix's docs write it (JSON
  deserializer, ``apply``, JSON serializer, one output topic);
* ``router, no dedupe``: validation against the contracts, routing to the typed topics,
  dead letters (``build_router(dedupe_ttl=None)``);
* ``router``: the same plus dedupe of event ids (the default: a window per partition,
  persisted per checkpoint, see ``pipelines/dedupe.py``).

Throughput counts input records between the first and the last one processed (group
join and start-up excluded). Each app runs ``--rounds`` times, alternating; the table
reports each app's best round, and the last lines the router's rate over the json
apply's round by round (the two ran back to back, so they saw the same neighbours) with
the median, the figure to judge by on a noisy machine. The table gives each
rate against both baselines; issue 5's target is router >= 0.8x a plain stateless Quix
app (``quix json apply``). ``shopstream bench`` runs it as its router stage (:func:`stage`).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the benchmarks package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import logging
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks.common import Bench, Figure, Meter, StageResult, Target
from benchmarks.inputs import channel_records
from pipelines.router import build_router, router_topics
from pipelines.runtime.quix import quix_app
from producers.faults import FaultConfig
from shopstream.admin import create_topics
from shopstream.brokers import make_broker
from shopstream.kafka import make_producer
from shopstream.settings import Settings, load_settings
from shopstream.topics import INGRESS_BY_CHANNEL, Namespace, TopicSpec

BASELINE_OUT = TopicSpec("bench.baseline-out", "analytics", "benchmark baseline output")
FAULTS = FaultConfig(invalid_ratio=0.01, duplicate_ratio=0.01)
IDLE_S = 3.0
"""How long an app waits for more input before it stops (``Application.run(timeout=)``)."""


def make_input(n: int, seed: int = 7) -> list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]:
    """``(channel, key, value, headers)`` records: the simulators' traffic with 1%
    duplicates and 1% malformed records."""
    return [(r.channel, r.key, r.value, r.headers)
            for r in channel_records(n, seed=seed, faults=FAULTS)]  # fmt: skip


def produce(settings: Settings, ns: Namespace, records: list[Any]) -> None:
    producer = make_producer(settings)
    for channel, key, value, headers in records:
        topic = ns.topic(INGRESS_BY_CHANNEL[channel]).name
        while True:
            try:
                producer.produce(topic, key=key, value=value, headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)


def run_passthrough(
    settings: Settings, ns: Namespace, group: str, meter: Meter, idle_s: float
) -> None:
    app = quix_app(settings, f"bench-pass-{group}", group, on_message_processed=meter)
    out = app.topic(ns.topic(BASELINE_OUT).name, key_serializer="bytes", value_serializer="bytes")
    for spec in INGRESS_BY_CHANNEL.values():
        topic = app.topic(ns.topic(spec).name, key_deserializer="bytes", value_deserializer="bytes")
        app.dataframe(topic).apply(lambda v: v).to_topic(out)
    app.run(timeout=idle_s)


def run_json_apply(
    settings: Settings, ns: Namespace, group: str, meter: Meter, idle_s: float
) -> None:
    app = quix_app(settings, f"bench-json-{group}", group, on_message_processed=meter)
    out = app.topic(ns.topic(BASELINE_OUT).name, value_serializer="json")
    # A malformed record must not stop the baseline: skip what the deserializer rejects.
    app._consumer._on_error = lambda *_: True
    for spec in INGRESS_BY_CHANNEL.values():
        topic = app.topic(ns.topic(spec).name, value_deserializer="json")
        app.dataframe(topic).apply(lambda v: v).to_topic(out)
    app.run(timeout=idle_s)


def run_router(settings: Settings, ns: Namespace, group: str, meter: Meter, idle_s: float) -> None:
    built = build_router(settings, ns, on_message_processed=meter, consumer_group=group)
    built.app.run(timeout=idle_s)
    assert built.processor.stats.balanced, built.processor.stats.summary()


def run_router_no_dedupe(
    settings: Settings, ns: Namespace, group: str, meter: Meter, idle_s: float
) -> None:
    built = build_router(
        settings, ns, dedupe_ttl=None, on_message_processed=meter, consumer_group=group
    )
    built.app.run(timeout=idle_s)


APPS: dict[str, Callable[[Settings, Namespace, str, Meter, float], None]] = {
    "quix pass-through": run_passthrough,
    "quix json apply": run_json_apply,
    "router, no dedupe": run_router_no_dedupe,
    "router": run_router,
}

Row = tuple[str, str, int, float]
"""``(guarantee, app, records, best events/s)``."""


def measure(
    base: Settings,
    events: int,
    rounds: int,
    guarantees: list[str],
    apps: list[str] | None = None,
    idle_s: float = IDLE_S,
    on_progress: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> tuple[list[Row], dict[str, list[float]], dict[str, dict[str, list[float]]]]:
    """Produce the input once, then run each app ``rounds`` times per guarantee,
    alternating. Returns the best round per app, the router / json apply ratio round by
    round, and every rate."""
    chosen = {name: APPS[name] for name in (apps or list(APPS))}
    ns = Namespace(uuid.uuid4().hex[:8])
    create_topics(base, ns.topics([*router_topics(), BASELINE_OUT]))
    records = make_input(events)
    t = time.perf_counter()
    produce(base, ns, records)
    on_progress(f"input: {len(records):,} records produced in {time.perf_counter() - t:.1f}s")
    rows: list[Row] = []
    paired: dict[str, list[float]] = {}
    every: dict[str, dict[str, list[float]]] = {}
    for guarantee in guarantees:
        settings = load_settings(base=base, processing_guarantee=guarantee)
        rates: dict[str, list[float]] = {name: [] for name in chosen}
        counts: dict[str, int] = {}
        for round_no in range(rounds):
            for name, run in chosen.items():
                meter = Meter()
                group = f"bench-{name.replace(' ', '-').replace(',', '')}-{guarantee}-{round_no}"
                run(settings, ns, f"{group}-{ns.suffix}", meter, idle_s)
                rates[name].append(meter.rate)
                counts[name] = meter.count
                on_progress(f"{guarantee} {name} round {round_no}: {meter.rate:,.0f}/s")
        for name in chosen:
            rows.append((guarantee, name, counts[name], max(rates[name])))
        if "router" in rates and "quix json apply" in rates:
            paired[guarantee] = [
                r / j if j else 0.0
                for r, j in zip(rates["router"], rates["quix json apply"], strict=True)
            ]
        every[guarantee] = rates
    return rows, paired, every


def stage(bench: Bench) -> StageResult:
    """``shopstream bench``: the router against plain Quix apps."""
    result = StageResult("router", "Router vs a plain Quix Streams json apply")
    sizes = bench.sizes
    logging.getLogger("pipelines").setLevel(logging.ERROR)
    rows, paired, every = measure(
        bench.settings("router"), sizes.router_events, sizes.router_rounds,
        list(sizes.router_guarantees), list(sizes.router_apps), sizes.quix_idle_s,
        on_progress=bench.reporter.step,
    )  # fmt: skip
    best = {(g, n): rate for g, n, _, rate in rows}
    for guarantee in sizes.router_guarantees:
        plain = best.get((guarantee, "quix json apply"))
        floor = best.get((guarantee, "quix pass-through"))
        for name in sizes.router_apps:
            if name == "quix json apply":
                continue
            rate = best[(guarantee, name)]
            if name == "quix pass-through":
                result.add(Figure(f"router.{guarantee}.pass_through", f"quix pass-through "
                                  f"({guarantee})", rate, "events/s"))  # fmt: skip
                continue
            ratios = paired.get(guarantee, [])
            result.add(Figure(
                f"router.{guarantee}.{name.replace(', ', '_').replace(' ', '_')}",
                f"{name} ({guarantee})", rate, "events/s", f"quix json apply ({guarantee})",
                plain, Target("ratio", ">=", 0.8, "issue 5") if name == "router" else None,
                note=(f"paired rounds: {', '.join(f'{r:.2f}x' for r in ratios)}, median "
                      f"{statistics.median(ratios):.2f}x" if name == "router" and ratios else "")
                + (f"; vs pass-through {rate / floor:.2f}x" if floor else ""),
            ))  # fmt: skip
        if plain is not None:
            result.add(Figure(f"router.{guarantee}.json_apply", f"quix json apply ({guarantee})",
                              plain, "events/s"))  # fmt: skip
    result.details = {"events": sizes.router_events, "rounds": sizes.router_rounds,
                      "rates": every, "paired": paired}  # fmt: skip
    result.notes.append("input: the channel simulators' traffic with 1% duplicates and 1% "
                        "malformed records; best round per app, start-up and group join "
                        "excluded")  # fmt: skip
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--broker", help="HOST:PORT of a running broker")
    where.add_argument("--broker-kind", choices=["embedded", "kafka"], default="embedded")
    parser.add_argument(
        "--guarantees", default="exactly-once,at-least-once", help="comma-separated"
    )
    args = parser.parse_args()
    # The input's malformed 1% would otherwise log a warning each (throttled, still noise).
    logging.getLogger("pipelines").setLevel(logging.ERROR)

    broker = None
    if args.broker:
        address = args.broker
    else:
        broker = make_broker(args.broker_kind).start()
        address = broker.address
    try:
        return _bench(address, args)
    finally:
        if broker is not None:
            broker.stop()


def _bench(address: str, args: argparse.Namespace) -> int:
    base = load_settings(broker_address=address, data_dir=Path(tempfile.mkdtemp(prefix="router-")))
    rows, paired, _ = measure(base, args.events, args.rounds, args.guarantees.split(","))
    floor = {g: r for g, n, _, r in rows if n == "quix pass-through"}
    plain = {g: r for g, n, _, r in rows if n == "quix json apply"}
    print()
    header = f"{'guarantee':<14} {'app':<18} {'records':>9} {'events/s':>10}"
    print(f"{header} {'vs pass-through':>16} {'vs json apply':>14}")
    print("-" * 86)
    for guarantee, name, count, rate in rows:
        r1 = rate / floor[guarantee] if floor[guarantee] else 0.0
        r2 = rate / plain[guarantee] if plain[guarantee] else 0.0
        print(f"{guarantee:<14} {name:<18} {count:>9,} {rate:>10,.0f} {r1:>15.2f}x {r2:>13.2f}x")
    print()
    print("router / quix json apply, round by round (each pair ran back to back):")
    for guarantee, ratios in paired.items():
        listed = ", ".join(f"{r:.2f}x" for r in ratios)
        print(f"  {guarantee:<14} {listed}   median {statistics.median(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
