"""Composition root of ``shopstream produce``: simulator -> faults -> pacing -> Kafka.

:func:`run_produce` is what the CLI calls and what integration tests and the
benchmark call directly. It checks the broker, creates missing ingress topics
from the catalog, sends the opening stock load (unpaced, not counted by
``count``) and then the paced traffic, and always flushes before returning.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from rich.console import Console

from producers.faults import FaultConfig, inject_faults
from producers.live import LiveLine
from producers.pacing import Pacer
from producers.record import INGRESS_CHANNELS, IngressChannel, Record
from producers.sender import ProducerLike, ProduceStats, Sender, Stop
from producers.simulator import ShopSimulator, SimConfig
from shopstream.admin import create_topics
from shopstream.identity import facts, record_fact
from shopstream.kafka import fetch_metadata, make_producer
from shopstream.settings import Settings
from shopstream.shop.traffic import FlashSale, TrafficModel
from shopstream.status import ProcessStatus, StatusPublisher
from shopstream.topics import INGRESS_BY_CHANNEL, TopicSpec

OPENING_STOCK = "opening-stock"
"""Identity fact written once the opening stock reached a broker (see :func:`run_produce`)."""
HOUR_MS = 3_600_000
REALTIME_BURST = 4.0
"""With ``realtime``, the token bucket allows this many times the mean rate (peaks)."""


def realtime_scale(start_ms: int, rate: float) -> float:
    """The traffic scale at which the hour after ``start_ms`` averages ``rate`` records/s.

    A record is about one customer action (returns and restocks add a few percent).
    """
    actions = sum(TrafficModel(start_ms).expected_actions(start_ms, start_ms + HOUR_MS))
    return rate / max(actions / 3600.0, 1e-6)


DEFAULT_TOPICS: dict[IngressChannel, str] = {
    c: INGRESS_BY_CHANNEL[c].name for c in INGRESS_CHANNELS
}


@dataclass(frozen=True)
class ProduceOptions:
    """One ``produce`` run. Only ``seed``, ``start_ms``, ``channels``, ``scale``,
    ``flash_sale`` and ``faults`` shape the records; the rest shapes the sending."""

    start_ms: int
    channels: frozenset[IngressChannel] = frozenset(INGRESS_CHANNELS)
    seed: int = 1
    scale: float = 1.0
    flash_sale: bool = False
    faults: FaultConfig = field(default_factory=FaultConfig)
    opening: bool = True
    """Send the opening stock load first (only if the warehouse channel is selected)."""
    rate: float = 1000.0
    """Records per second (token bucket); 0 means as fast as the broker takes them."""
    speedup: float | None = None
    """If set, event time runs at most this many times faster than wall time."""
    count: int | None = None
    """Stop after this many traffic records (opening stock not included)."""
    duration: float | None = None
    """Stop after this many wall-clock seconds."""
    realtime: bool = False
    """Event time follows the wall clock (speedup 1) and the traffic is scaled so that the
    next hour averages ``rate`` records per second (what ``shopstream up`` runs)."""
    topics: Mapping[IngressChannel, str] = field(default_factory=lambda: dict(DEFAULT_TOPICS))

    @property
    def effective_scale(self) -> float:
        return realtime_scale(self.start_ms, self.rate) if self.realtime else self.scale

    def sim_config(self) -> SimConfig:
        return SimConfig(
            start_ms=self.start_ms,
            seed=self.seed,
            channels=self.channels,
            scale=self.effective_scale,
            flash_sale=FlashSale() if self.flash_sale else None,
        )


def record_streams(options: ProduceOptions) -> tuple[Iterator[Record], Iterator[Record]]:
    """The opening load and the (infinite) traffic with faults, exactly as they are sent."""
    sim = ShopSimulator(options.sim_config())
    opening: Iterator[Record] = sim.opening() if options.opening else iter(())
    traffic = inject_faults(sim.records(), options.faults, options.seed)
    return opening, traffic


def ingress_specs(options: ProduceOptions) -> list[TopicSpec]:
    """The selected channels' ingress topics (catalog layout, under the names chosen)."""
    specs: list[TopicSpec] = []
    for channel in sorted(options.channels):
        spec = INGRESS_BY_CHANNEL[channel]
        name = options.topics[channel]
        specs.append(spec if name == spec.name else spec.renamed(name))
    return specs


def opening_already_sent(settings: Settings, options: ProduceOptions) -> dict[str, object] | None:
    """The record of an earlier opening-stock load to the same warehouse topic, if any.

    The opening stock is the shop's starting inventory: sent once per broker, not once
    per start, or a durable broker would see the stock doubled by a second ``up``.
    """
    topic = options.topics.get("warehouse")
    for fact in facts(settings, OPENING_STOCK):
        if fact.get("topic") == topic:
            return fact
    return None


def run_produce(
    settings: Settings,
    options: ProduceOptions,
    *,
    console: Console | None = None,
    stop: Stop | None = None,
    producer: ProducerLike | None = None,
    flush_timeout: float = 30.0,
    producer_overrides: Mapping[str, Any] | None = None,
    status_name: str | None = None,
) -> ProduceStats:
    """Run one producer to completion (count, duration, stop or signal) and flush.

    With a real broker (no ``producer`` given) the opening stock is sent only if no
    earlier run sent it to the same warehouse topic on this broker (an identity fact,
    :mod:`shopstream.identity`, written once the load is flushed). ``status_name``
    publishes the counters as that process (:mod:`shopstream.status`).

    Raises :class:`shopstream.errors.BrokerUnreachable` (a ``UserError``) if no
    broker answers. Delivery failures do not raise: they are counted in the
    returned stats.
    """
    stop = stop or Stop()
    # From the start: a stop asked for while the broker is checked ends the run cleanly
    # (flushed, summarised) instead of killing the process.
    with stop.on_signals():
        return _run_produce(settings, options, console or Console(stderr=True), stop,
                            producer, flush_timeout, producer_overrides, status_name)  # fmt: skip


def _run_produce(
    settings: Settings,
    options: ProduceOptions,
    console: Console,
    stop: Stop,
    producer: ProducerLike | None,
    flush_timeout: float,
    producer_overrides: Mapping[str, Any] | None,
    status_name: str | None,
) -> ProduceStats:
    stats = ProduceStats()
    record_opening = False
    if producer is None:
        fetch_metadata(settings)
        create_topics(settings, ingress_specs(options))
        if options.opening and "warehouse" in options.channels:
            earlier = opening_already_sent(settings, options)
            if earlier:
                console.print(
                    f"opening stock already sent to {options.topics['warehouse']} on this "
                    f"broker ({earlier.get('records')} records at {earlier.get('at')}); "
                    "not sending it again"
                )
                options = replace(options, opening=False)
            else:
                record_opening = True

        def on_error(err: Any) -> None:
            stats.last_error = str(err)

        producer = make_producer(
            settings, **{"client.id": "shopstream-producer", "error_cb": on_error},
            **dict(producer_overrides or {}),
        )  # fmt: skip
    sender = Sender(producer, options.topics, stats=stats, stop=stop)
    opening, traffic = record_streams(options)
    deadline = time.monotonic() + options.duration if options.duration else None
    rate, speedup = options.rate, options.speedup
    if options.realtime:
        rate, speedup = options.rate * REALTIME_BURST, 1.0
    with LiveLine(stats, console), _published(settings, stats, status_name):
        stats.started = time.monotonic()  # rates measure sending, not the broker check
        try:
            sender.send(opening, deadline=deadline, opening=True)
            # The fact follows the records (flushed), never precedes them.
            flushed = record_opening and stats.opening and sender.flush(flush_timeout) == 0
            if flushed and not stats.failed:
                record_fact(
                    settings, OPENING_STOCK, topic=options.topics["warehouse"],
                    records=stats.opening, seed=options.seed,
                )  # fmt: skip
            stats.traffic_started = time.monotonic()
            sender.send(
                traffic,
                pacer=Pacer.of(rate, speedup),
                limit=options.count,
                deadline=deadline,
            )
        finally:
            stats.stopped_by = stop.reason
            sender.close(flush_timeout)
    return stats


def _published(
    settings: Settings, stats: ProduceStats, name: str | None
) -> contextlib.AbstractContextManager[object]:
    """The producer's counters published for ``shopstream up`` (when it has a name)."""
    if name is None:
        return contextlib.nullcontext()

    def refresh(status: ProcessStatus) -> None:
        status.produced = stats.acked
        status.errors = stats.failed
        status.last_error = stats.last_error if stats.failed else None

    return StatusPublisher(settings, name, refresh)
