"""Composition root of ``shopstream produce``: simulator -> faults -> pacing -> Kafka.

:func:`run_produce` is what the CLI calls and what integration tests and the
benchmark call directly. It checks the broker, creates missing ingress topics
from the catalog, sends the opening stock load (unpaced, not counted by
``count``) and then the paced traffic, and always flushes before returning.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from producers.faults import FaultConfig, inject_faults
from producers.live import LiveLine
from producers.pacing import Pacer
from producers.record import INGRESS_CHANNELS, IngressChannel, Record
from producers.sender import ProducerLike, ProduceStats, Sender, Stop
from producers.simulator import ShopSimulator, SimConfig
from shopstream.admin import create_topics
from shopstream.kafka import fetch_metadata, make_producer
from shopstream.settings import Settings
from shopstream.shop.traffic import FlashSale
from shopstream.topics import INGRESS_BY_CHANNEL, TopicSpec

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
    topics: Mapping[IngressChannel, str] = field(default_factory=lambda: dict(DEFAULT_TOPICS))

    def sim_config(self) -> SimConfig:
        return SimConfig(
            start_ms=self.start_ms,
            seed=self.seed,
            channels=self.channels,
            scale=self.scale,
            flash_sale=FlashSale() if self.flash_sale else None,
        )


def record_streams(options: ProduceOptions) -> tuple[Iterator[Record], Iterator[Record]]:
    """The opening load and the (infinite) traffic with faults, exactly as they are sent."""
    sim = ShopSimulator(options.sim_config())
    opening: Iterator[Record] = sim.opening() if options.opening else iter(())
    traffic = inject_faults(sim.records(), options.faults, options.seed)
    return opening, traffic


def ensure_topics(settings: Settings, options: ProduceOptions) -> list[str]:
    """Create the selected channels' ingress topics if missing (catalog layout, any name)."""
    specs: list[TopicSpec] = []
    for channel in sorted(options.channels):
        spec = INGRESS_BY_CHANNEL[channel]
        name = options.topics[channel]
        specs.append(spec if name == spec.name else spec.renamed(name))
    return create_topics(settings, specs)


def run_produce(
    settings: Settings,
    options: ProduceOptions,
    *,
    console: Console | None = None,
    stop: Stop | None = None,
    producer: ProducerLike | None = None,
    flush_timeout: float = 30.0,
    producer_overrides: Mapping[str, Any] | None = None,
) -> ProduceStats:
    """Run one producer to completion (count, duration, stop or signal) and flush.

    Raises :class:`shopstream.errors.BrokerUnreachable` (a ``UserError``) if no
    broker answers. Delivery failures do not raise: they are counted in the
    returned stats.
    """
    stats = ProduceStats()
    stop = stop or Stop()
    if producer is None:
        fetch_metadata(settings)
        ensure_topics(settings, options)

        def on_error(err: Any) -> None:
            stats.last_error = str(err)

        producer = make_producer(
            settings, **{"client.id": "shopstream-producer", "error_cb": on_error},
            **dict(producer_overrides or {}),
        )  # fmt: skip
    sender = Sender(producer, options.topics, stats=stats, stop=stop)
    opening, traffic = record_streams(options)
    deadline = time.monotonic() + options.duration if options.duration else None
    console = console or Console(stderr=True)
    with stop.on_signals(), LiveLine(stats, console):
        stats.started = time.monotonic()  # rates measure sending, not the broker check
        try:
            sender.send(opening, deadline=deadline, opening=True)
            stats.traffic_started = time.monotonic()
            sender.send(
                traffic,
                pacer=Pacer.of(options.rate, options.speedup),
                limit=options.count,
                deadline=deadline,
            )
        finally:
            stats.stopped_by = stop.reason
            sender.close(flush_timeout)
    return stats
