"""Wall-clock pacing: a token bucket (``--rate``) and an event-time clock (``--speedup``).

Pacing decides only *when* a record is sent, never *what* it contains: the
simulator's output does not depend on it, which is what makes runs
reproducible whatever the wall-clock rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


class TokenBucket:
    """At most ``rate`` records per second on average, bursts up to ``burst`` records.

    Implemented as a virtual schedule (GCRA, equivalent to a token bucket): each
    record is due ``1/rate`` s after the previous one; a sender that fell behind
    may catch up by at most ``burst`` records, never more, so a stall is not
    followed by a flood.
    """

    def __init__(self, rate: float, burst: float | None = None, clock: Clock = time.monotonic):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._interval = 1.0 / rate
        # Default burst: 50 ms of traffic, at least one record.
        self._slack = max(1.0, burst if burst is not None else rate * 0.05) * self._interval
        self._clock = clock
        self._due = clock()

    def delay(self) -> float:
        """Take one token; return how long to wait (s) before sending (0 if now)."""
        now = self._clock()
        due = self._due
        if due < now - self._slack:
            due = now - self._slack
        self._due = due + self._interval
        return due - now if due > now else 0.0


class EventClock:
    """Event time may run at most ``speedup`` times faster than wall time.

    The first record fixes the origin: a record with event time ``t`` is not sent
    before ``origin_wall + (t - origin_event) / speedup``. A sender that cannot
    keep up sends at once (event time then lags; it never runs ahead).
    """

    def __init__(self, speedup: float, clock: Clock = time.monotonic):
        if speedup <= 0:
            raise ValueError("speedup must be positive")
        self.speedup = speedup
        self._clock = clock
        self._origin: tuple[float, int] | None = None

    def delay(self, event_ms: int) -> float:
        now = self._clock()
        if self._origin is None:
            self._origin = (now, event_ms)
            return 0.0
        wall0, event0 = self._origin
        due = wall0 + (event_ms - event0) / 1000.0 / self.speedup
        return due - now if due > now else 0.0


class Pacer:
    """Both limits together: a record waits for the later of the two."""

    def __init__(self, bucket: TokenBucket | None, event_clock: EventClock | None):
        self.bucket = bucket
        self.event_clock = event_clock

    @classmethod
    def of(cls, rate: float, speedup: float | None, clock: Clock = time.monotonic) -> Pacer | None:
        """``None`` when nothing limits the pace (``rate`` 0 and no speedup)."""
        bucket = TokenBucket(rate, clock=clock) if rate > 0 else None
        event_clock = EventClock(speedup, clock=clock) if speedup else None
        if bucket is None and event_clock is None:
            return None
        return cls(bucket, event_clock)

    def delay(self, event_ms: int) -> float:
        wait = self.event_clock.delay(event_ms) if self.event_clock else 0.0
        if self.bucket is not None:
            wait = max(wait, self.bucket.delay())
        return wait
