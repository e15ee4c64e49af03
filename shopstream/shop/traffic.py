"""When customers act: daily and weekly traffic curves per channel, and flash sales.

Each sales channel has an intensity (customer actions per simulated second) that
is piecewise constant over one-minute segments of event time:

    rate(channel, t) = base(channel) * scale * shape(channel, minute of week) * flash(channel, t)

``shape`` has a weekly mean of exactly 1, so ``base * scale`` is each channel's
mean over a week. Web peaks in the evening, mobile at commute times and late
evening, point of sale follows store hours (Mon-Sat 08-21, Sun 10-18) and is
zero when stores are closed. Times are UTC (the shop is on UTC).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from shopstream.shop.world import SALES_CHANNELS

MINUTE_MS = 60_000
MINUTES_PER_WEEK = 7 * 24 * 60

BASE_RATE: tuple[float, float, float] = (1.6, 2.4, 2.0)
"""Weekly mean customer actions per simulated second for (mobile, pos, web) at scale 1."""

# Relative activity by hour of day (0-23); interpolated linearly within the hour.
_HOURLY: dict[str, tuple[float, ...]] = {
    "mobile": (0.5, 0.3, 0.2, 0.1, 0.1, 0.2, 0.6, 1.3, 1.6, 1.1, 0.9, 1.0,
               1.5, 1.4, 1.0, 0.9, 1.0, 1.3, 1.5, 1.6, 1.9, 2.1, 1.8, 1.0),
    "pos": (0, 0, 0, 0, 0, 0, 0, 0, 0.6, 0.8, 1.0, 1.2,
            1.6, 1.5, 1.1, 1.0, 1.2, 1.7, 1.8, 1.4, 0.9, 0, 0, 0),
    "web": (0.4, 0.25, 0.15, 0.1, 0.1, 0.15, 0.3, 0.5, 0.7, 0.9, 1.0, 1.0,
            1.1, 1.1, 1.0, 1.0, 1.1, 1.3, 1.6, 2.0, 2.3, 2.2, 1.6, 0.9),
}  # fmt: skip
# Relative activity by weekday (Mon=0 ... Sun=6).
_WEEKDAY: dict[str, tuple[float, ...]] = {
    "mobile": (0.9, 0.9, 0.95, 1.0, 1.1, 1.25, 1.2),
    "pos": (0.85, 0.85, 0.9, 0.95, 1.1, 1.5, 0.9),
    "web": (1.05, 1.0, 1.0, 1.0, 0.95, 1.0, 1.2),
}
POS_HOURS: tuple[tuple[int, int], ...] = ((8, 21),) * 6 + ((10, 18),)
"""Store opening hours per weekday as (open, close) in whole hours, UTC."""
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def store_hours() -> str:
    """:data:`POS_HOURS` for people: ``"Mon-Sat 08:00-21:00, Sun 10:00-18:00 UTC"``."""
    runs: list[tuple[int, int, tuple[int, int]]] = []  # first day, last day, hours
    for day, hours in enumerate(POS_HOURS):
        if runs and runs[-1][2] == hours:
            runs[-1] = (runs[-1][0], day, hours)
        else:
            runs.append((day, day, hours))
    return ", ".join(
        f"{_DAYS[a]}{'-' + _DAYS[b] if b > a else ''} {o:02d}:00-{c:02d}:00"
        for a, b, (o, c) in runs
    ) + " UTC"


def minute_of_week(minute_index: int) -> int:
    """Minute of the week (Monday 00:00 = 0) of an absolute epoch minute (1970-01-01 was a Thu)."""
    return (minute_index + 3 * 24 * 60) % MINUTES_PER_WEEK


def _raw_shape(channel: str, mow: int) -> float:
    day, minute = divmod(mow, 24 * 60)
    hour, within = divmod(minute, 60)
    if channel == "pos":
        opens, closes = POS_HOURS[day]
        if not opens <= hour < closes:
            return 0.0
    hourly = _HOURLY[channel]
    here, after = hourly[hour], hourly[(hour + 1) % 24]
    if channel == "pos" and after == 0:
        after = here  # no ramp-down to zero inside the last open hour
    level = here + (after - here) * within / 60
    return max(level, 0.0) * _WEEKDAY[channel][day]


@cache
def weekly_shape(channel: str) -> tuple[float, ...]:
    """Per minute of the week, the channel's relative intensity; the mean is exactly 1."""
    raw = [_raw_shape(channel, m) for m in range(MINUTES_PER_WEEK)]
    mean = sum(raw) / len(raw)
    return tuple(v / mean for v in raw)


@dataclass(frozen=True, slots=True)
class FlashSale:
    """Recurring bursts: ``duration`` minutes every ``every`` minutes of event time.

    The first sale starts ``first_after`` minutes after the simulation's start.
    During a sale, online traffic multiplies and baskets lean on discounted
    promo SKUs.
    """

    first_after: int = 10
    duration: int = 20
    every: int = 180
    multiplier: tuple[float, float, float] = (6.0, 1.5, 6.0)
    """Traffic multiplier for (mobile, pos, web) during a sale."""
    promo_skus: int = 25
    promo_share: float = 0.6
    """Probability that an order line during a sale is a promo SKU."""
    discount: float = 0.30

    def active(self, minutes_since_start: int) -> bool:
        since = minutes_since_start - self.first_after
        return since >= 0 and since % self.every < self.duration


@dataclass(frozen=True, slots=True)
class Segment:
    """One minute of event time: how fast each channel generates actions."""

    start_ms: int
    end_ms: int
    total_per_ms: float
    """Sum of the channels' rates, in actions per millisecond (0 if all are quiet)."""
    cum_share: tuple[float, float, float]
    """Cumulative share of (mobile, pos, web): channel i if u < cum_share[i]."""
    flash: bool


class TrafficModel:
    """Segment rates for any minute of event time; pure and cheap (one call per minute)."""

    def __init__(self, start_ms: int, scale: float = 1.0, flash_sale: FlashSale | None = None):
        if scale <= 0:
            raise ValueError("scale must be positive")
        self.start_ms = start_ms
        self.scale = scale
        self.flash_sale = flash_sale
        self._shapes = tuple(weekly_shape(c) for c in SALES_CHANNELS)

    def rates(self, minute_index: int) -> tuple[tuple[float, float, float], bool]:
        """Actions per simulated second per channel in an epoch minute; is a sale on?"""
        mow = minute_of_week(minute_index)
        flash = False
        if self.flash_sale is not None:
            since = minute_index - self.start_ms // MINUTE_MS
            flash = self.flash_sale.active(since)
        mult = self.flash_sale.multiplier if flash and self.flash_sale else (1.0, 1.0, 1.0)
        rates = tuple(BASE_RATE[c] * self.scale * self._shapes[c][mow] * mult[c] for c in range(3))
        return rates, flash  # type: ignore[return-value]

    def segment(self, minute_index: int) -> Segment:
        rates, flash = self.rates(minute_index)
        total = sum(rates)
        if total > 0:
            cum = (rates[0] / total, (rates[0] + rates[1]) / total, 1.0)
        else:
            cum = (0.0, 0.0, 1.0)
        start = minute_index * MINUTE_MS
        return Segment(start, start + MINUTE_MS, total / 1000.0, cum, flash)  # type: ignore[arg-type]

    def expected_actions(self, start_ms: int, end_ms: int) -> tuple[float, float, float]:
        """Expected customer actions per channel in ``[start_ms, end_ms)`` (for tests and docs)."""
        totals = [0.0, 0.0, 0.0]
        minute = start_ms // MINUTE_MS
        while minute * MINUTE_MS < end_ms:
            lo = max(start_ms, minute * MINUTE_MS)
            hi = min(end_ms, (minute + 1) * MINUTE_MS)
            rates, _ = self.rates(minute)
            for c in range(3):
                totals[c] += rates[c] * (hi - lo) / 1000.0
            minute += 1
        return totals[0], totals[1], totals[2]
