"""Pacing, backpressure, delivery counting and stopping, against a fake producer.

The rate-control tests run in real time (about 3 s each), because that is what
the issue asks to be measured: the achieved rate over a few seconds, within 10%.
"""

from __future__ import annotations

import bisect
import io
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from rich.console import Console

from producers.app import ProduceOptions, run_produce
from producers.faults import MALFORMED_KINDS, FaultConfig
from producers.pacing import EventClock, Pacer, TokenBucket
from producers.record import Record
from producers.sender import Sender, Stop
from shopstream.settings import load_settings

WEDNESDAY_NOON = 1_741_176_000_000  # 2025-03-05T12:00:00Z


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeProducer:
    """Queues like librdkafka: BufferError when full, delivery reports on poll/flush."""

    def __init__(self, capacity: int = 1_000_000, fail_every: int = 0) -> None:
        self.capacity = capacity
        self.fail_every = fail_every
        self.queue: list[Callable[[Any, Any], None]] = []
        self.produced: list[tuple[float, str, bytes, bytes, Any, int]] = []
        self.buffer_errors = 0
        self.flushes = 0

    def produce(self, topic: str, value: bytes, key: bytes, **kwargs: Any) -> None:
        if len(self.queue) >= self.capacity:
            self.buffer_errors += 1
            raise BufferError("Local: Queue full")
        self.queue.append(kwargs["on_delivery"])
        self.produced.append(
            (time.monotonic(), topic, key, value, kwargs["headers"], kwargs["timestamp"])
        )

    def poll(self, timeout: float = 0.0) -> int:
        served, self.queue = self.queue, []
        for i, callback in enumerate(served, start=len(self.produced) - len(served) + 1):
            failed = self.fail_every and i % self.fail_every == 0
            callback("broker said no" if failed else None, None)
        if not served and timeout:
            time.sleep(timeout)
        return len(served)

    def flush(self, timeout: float = 0.0) -> int:
        self.flushes += 1
        self.poll()
        return 0

    def __len__(self) -> int:
        return len(self.queue)


def quiet() -> Console:
    return Console(file=io.StringIO())


def options(**overrides: Any) -> ProduceOptions:
    return ProduceOptions(start_ms=WEDNESDAY_NOON, **overrides)


def produce_with_fake(opts: ProduceOptions, producer: FakeProducer | None = None) -> Any:
    fake = producer if producer is not None else FakeProducer()
    stats = run_produce(load_settings(), opts, producer=fake, console=quiet())
    return stats, fake


# --- pacing, with a fake clock ----------------------------------------------------------


def test_token_bucket_spaces_records_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(500.0, clock=clock)
    start = clock.now
    for _ in range(1000):
        clock.now += bucket.delay()  # a sender that sleeps exactly as told
    assert clock.now - start == pytest.approx(999 / 500.0)


def test_token_bucket_catch_up_after_a_stall_is_bounded() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000.0, burst=20, clock=clock)
    for _ in range(10):
        clock.now += bucket.delay()
    clock.now += 5.0  # stalled for 5 s: 5,000 tokens would have accrued without a cap
    immediate = 0
    while bucket.delay() == 0.0:
        immediate += 1
    assert immediate <= 21


def test_event_clock_keeps_event_time_at_most_speedup_times_wall_time() -> None:
    clock = FakeClock()
    pacer = EventClock(10.0, clock=clock)
    assert pacer.delay(1_000_000) == 0.0  # the first record fixes the origin
    assert pacer.delay(1_001_000) == pytest.approx(0.1)
    clock.now += 0.5
    assert pacer.delay(1_002_000) == 0.0  # behind schedule: send at once
    assert pacer.delay(1_010_000) == pytest.approx(0.5)


def test_nothing_to_pace_means_no_pacer() -> None:
    assert Pacer.of(0.0, None) is None
    assert Pacer.of(10.0, None) is not None
    assert Pacer.of(0.0, 2.0) is not None


# --- rate control in real time ---------------------------------------------------------------


def test_rate_control_within_ten_percent_over_three_seconds() -> None:
    stats, fake = produce_with_fake(options(rate=2000.0, duration=3.0, opening=False))
    times = [p[0] for p in fake.produced]
    span = times[-1] - times[0]
    assert span == pytest.approx(3.0, abs=0.2)
    assert len(times) / span == pytest.approx(2000.0, rel=0.10)
    # Smooth, not bursty: no 100 ms holds more than its 200 records and the bucket's burst
    # (50 ms of traffic), even right after a stall. (A busy CI machine stalls the sender
    # now and then - one second held 1,561 records - so a second's count can fall short;
    # what pacing guarantees is that it never floods to catch up.)
    window, burst = 0.1, 2000.0 * 0.05
    densest = max(
        bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)
    )
    assert densest <= 2000.0 * window + burst + 2, densest
    assert stats.stopped_by == "duration"


def test_speedup_ties_event_time_to_wall_time() -> None:
    """Event time runs at most (and here, about) 600 times faster than wall time."""
    _, fake = produce_with_fake(options(rate=0.0, speedup=600.0, duration=2.5, opening=False))
    wall = fake.produced[-1][0] - fake.produced[0][0]
    event = (fake.produced[-1][5] - fake.produced[0][5]) / 1000.0
    # The guarantee is the upper bound. The lower one only shows the pacer is not idle: on
    # a loaded machine (CI runs tests beside each other) the sender falls behind (540x seen).
    assert event / wall <= 600.0 * 1.01
    assert event / wall >= 600.0 * 0.5


# --- what is sent does not depend on how fast -----------------------------------------------


def test_same_records_whatever_the_rate() -> None:
    base: dict[str, Any] = {"seed": 21, "count": 3000}
    _, fast = produce_with_fake(options(rate=0.0, **base))
    _, slow = produce_with_fake(options(rate=20_000.0, speedup=50_000.0, **base))
    assert [p[1:] for p in fast.produced] == [p[1:] for p in slow.produced]
    assert len(fast.produced) == 3000 + 16_800  # the opening stock load is extra


# --- delivery, backpressure, stopping -----------------------------------------------------------


def test_backpressure_waits_for_room_and_loses_nothing() -> None:
    fake = FakeProducer(capacity=100)
    stats, _ = produce_with_fake(options(rate=0.0, count=5000, opening=False), fake)
    assert fake.buffer_errors > 0
    assert stats.sent == stats.acked == len(fake.produced) == 5000
    assert stats.failed == 0 and fake.flushes == 1


def test_delivery_failures_are_counted() -> None:
    fake = FakeProducer(fail_every=10)
    stats, _ = produce_with_fake(options(rate=0.0, count=1000, opening=False), fake)
    assert stats.sent == 1000
    assert stats.failed == 100 and stats.acked == 900
    assert stats.last_error == "broker said no"


def test_counts_by_topic_type_and_fault() -> None:
    faults = FaultConfig(invalid_ratio=0.05, duplicate_ratio=0.05, late_ratio=0.05)
    stats, fake = produce_with_fake(options(rate=0.0, count=4000, faults=faults))
    assert stats.sent == len(fake.produced) == 4000 + stats.opening
    assert stats.opening == 16_800
    assert sum(stats.by_topic.values()) == sum(stats.by_type.values()) == stats.sent
    assert stats.by_topic["ingress.warehouse"] >= 16_800
    assert set(stats.faults) == {"duplicate", "late", *MALFORMED_KINDS}
    assert sum(stats.faults.values()) == pytest.approx(4000 * 0.15 / 1.1, rel=0.25)


def test_sigterm_stops_cleanly_and_flushes() -> None:
    fake = FakeProducer()
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        stats, _ = produce_with_fake(options(rate=1000.0, opening=False), fake)
    finally:
        timer.cancel()
    assert stats.stopped_by == "signal"
    assert fake.flushes == 1
    assert stats.sent == stats.acked == len(fake.produced) > 0
    assert signal.getsignal(signal.SIGTERM) == before, "handlers are restored"


def test_a_stop_request_ends_sending() -> None:
    stop = Stop()
    fake = FakeProducer()
    sender = Sender(fake, {"pos": "t"}, stop=stop)
    records = (Record("pos", b"k", b"v", [], i, "OrderPlaced") for i in range(10**9))
    threading.Timer(0.3, stop.set, ("test",)).start()
    started = time.monotonic()
    sender.send(records, pacer=Pacer.of(1000.0, None))
    assert time.monotonic() - started < 2.0
    assert stop.reason == "test"


def test_duration_stops_a_paced_sender_that_never_has_to_wait() -> None:
    stats, _ = produce_with_fake(options(rate=1e9, duration=0.5, opening=False))
    assert stats.stopped_by == "duration"
    assert stats.elapsed < 2.0
