"""Send records to Kafka: paced, counted, backpressured, flushed on the way out.

One :class:`Sender` owns one confluent-kafka producer built by
:func:`shopstream.kafka.make_producer` (idempotent, ``acks=all``, lz4, linger).
Every record gets a delivery report, counted in :class:`ProduceStats` as acked
or failed. When librdkafka's queue is full (``BufferError``) the sender serves
delivery reports until there is room again, so a slow broker slows the sender
down instead of losing records. :meth:`Sender.close` flushes what is in flight.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

from producers.pacing import Pacer
from producers.record import IngressChannel, Record
from shopstream.signals import STOP as EARLY_STOP

POLL_EVERY = 1024
"""Serve delivery reports every this many records (a poll per record costs ~1 us)."""


class ProducerLike(Protocol):
    """The part of ``confluent_kafka.Producer`` the sender uses (tests pass a fake)."""

    def produce(self, topic: str, value: bytes, key: bytes, **kwargs: Any) -> None: ...
    def poll(self, timeout: float = ...) -> int: ...
    def flush(self, timeout: float = ...) -> int: ...
    def __len__(self) -> int: ...


@dataclass
class ProduceStats:
    """Running counts, read by the live line and the summary (single writer)."""

    sent: int = 0
    acked: int = 0
    failed: int = 0
    opening: int = 0
    """Records of the opening stock load (included in ``sent``)."""
    by_topic: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    first_event_ms: int | None = None
    last_event_ms: int | None = None
    started: float = field(default_factory=time.monotonic)
    traffic_started: float | None = None
    """When the paced traffic began (after the opening stock load)."""
    finished: float | None = None
    last_error: str | None = None
    stopped_by: str | None = None
    """Why sending ended: ``"count"``, ``"duration"``, ``"signal"`` or ``None`` (input ended)."""
    unflushed: int = 0
    """Records still undelivered when the final flush timed out."""

    @property
    def in_flight(self) -> int:
        return self.sent - self.acked - self.failed

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started


class Stop:
    """A stop request shared by the signal handlers, the live line and the send loop."""

    def __init__(self) -> None:
        self.requested = False
        """Read on every record by the send loop (a plain attribute: cheapest check)."""
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        if not self.requested:
            self.reason = reason
        self.requested = True

    def is_set(self) -> bool:
        return self.requested

    @contextmanager
    def on_signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM request a clean stop (flush, summary); a second SIGINT aborts.

        Only installs handlers in the main thread (elsewhere Python forbids it).
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        if EARLY_STOP.is_set():  # asked for while the process got ready
            self.set("signal")

        def handle(signum: int, frame: FrameType | None) -> None:
            if self.is_set() and signum == signal.SIGINT:
                raise KeyboardInterrupt  # second Ctrl-C: give up flushing
            self.set("signal")

        previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


class Sender:
    """Produces :class:`Record` s to the topic of their channel."""

    def __init__(
        self,
        producer: ProducerLike,
        topics: Mapping[IngressChannel, str],
        stats: ProduceStats | None = None,
        stop: Stop | None = None,
    ) -> None:
        self._producer = producer
        self._topics = dict(topics)
        self.stats = stats or ProduceStats()
        self.stop = stop or Stop()

    def on_delivery(self, err: Any, msg: Any) -> None:
        """Delivery report callback (runs inside ``poll``/``flush`` on this thread)."""
        if err is None:
            self.stats.acked += 1
        else:
            self.stats.failed += 1
            # Coordinates first: which topic and partition refused the record.
            where = f"{msg.topic()}[{msg.partition()}]: " if msg is not None else ""
            self.stats.last_error = f"{where}{err}"

    def send(
        self,
        records: Iterable[Record],
        *,
        pacer: Pacer | None = None,
        limit: int | None = None,
        deadline: float | None = None,
        opening: bool = False,
    ) -> None:
        """Send ``records`` until they end, ``limit`` records are sent, the monotonic
        ``deadline`` passes, or a stop is requested; counts go to :attr:`stats`."""
        stats, topics, stop = self.stats, self._topics, self.stop
        produce, poll = self._producer.produce, self._producer.poll
        on_delivery = self.on_delivery
        by_topic, by_type, faults = stats.by_topic, stats.by_type, stats.faults
        if limit is not None and limit <= 0:
            return
        for n, rec in enumerate(records, start=1):
            if stop.requested:
                return
            if pacer is not None:
                wait = pacer.delay(rec.timestamp_ms)
                if wait > 0 and not self._wait(wait, deadline):
                    return
            # Also when paced: a sender slower than its rate never waits.
            if deadline is not None and n % 256 == 1 and time.monotonic() >= deadline:
                stop.set("duration")
                return
            topic = topics[rec.channel]
            while True:
                try:
                    produce(
                        topic, rec.value, rec.key, headers=rec.headers,
                        timestamp=rec.timestamp_ms, on_delivery=on_delivery,
                    )  # fmt: skip
                    break
                except BufferError:
                    # Queue full: serve delivery reports (frees room) - this is the backpressure.
                    poll(0.05)
                    if stop.is_set():
                        return
            stats.sent += 1
            by_topic[topic] += 1
            by_type[rec.event_type] += 1
            if rec.fault is not None:
                faults[rec.fault] += 1
            if opening:
                stats.opening += 1
            if stats.first_event_ms is None:
                stats.first_event_ms = rec.timestamp_ms
            stats.last_event_ms = rec.timestamp_ms
            if n % POLL_EVERY == 0:
                poll(0)
            if limit is not None and n >= limit:
                stop.set("count")
                return

    def _wait(self, seconds: float, deadline: float | None) -> bool:
        """Wait while serving delivery reports; False if the deadline or a stop came first."""
        end = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                self.stop.set("duration")
                return False
            if self.stop.is_set():
                return False
            left = end - now
            if left <= 0:
                return True
            step = min(left, 0.1)
            if deadline is not None:
                step = min(step, max(deadline - now, 0.0))
            if step > 0.002:
                self._producer.poll(step)
            else:
                self._producer.poll(0)  # keep acks current on the live line
                time.sleep(step)  # poll() rounds to whole ms; sleep is finer

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for in-flight records (up to ``timeout`` s); return how many are left."""
        return int(self._producer.flush(timeout))

    def close(self, timeout: float = 30.0) -> None:
        """Flush in-flight records (up to ``timeout`` s) and freeze the stats."""
        remaining = self._producer.flush(timeout)
        self.stats.unflushed = remaining
        self.stats.finished = time.monotonic()
