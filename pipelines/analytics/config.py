"""Tunables of the analytics app: window sizes, lateness, alert thresholds, ticks.

All times are event-time milliseconds unless the name says ``_s`` (wall-clock
seconds, used only by the ticker). Every window length is a whole number of
panes: the app aggregates 1-minute panes and builds every longer window (the
15-minute top-seller windows, trailing return rates, alert look-backs) by
summing panes, so an event costs one pane update whatever the window count.
"""

from __future__ import annotations

from dataclasses import dataclass

MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class AnalyticsConfig:
    """What the analytics app computes and when it gives up waiting for late events.

    Lateness, per input topic and partition: an event is *late* when the end of its
    pane plus ``grace_ms`` is at or before that topic-partition's watermark (the
    highest event time seen there, raised by ticks). A late event is never counted;
    it goes to the late-events topic with its reason.
    """

    pane_ms: int = MINUTE_MS
    """Tumbling window length and slice size of every longer window."""
    grace_ms: int = 2 * MINUTE_MS
    """How long after a pane ends its events are still counted."""
    top_window_ms: int = 15 * MINUTE_MS
    """Top-seller windows: this long, hopping every pane."""
    top_n: int | None = 20
    """Top sellers per window (``None``: every SKU sold in the window)."""
    returns_trailing_ms: int = 60 * MINUTE_MS
    """Return rate = returned units / sold units over this trailing window."""

    silence_ms: int = 10 * MINUTE_MS
    """A channel with no orders for at least this long is a silence candidate ..."""
    silence_baseline_ms: int = 60 * MINUTE_MS
    """... its order rate over this window before the silence scales the traffic curve ..."""
    silence_min_expected: float = 5.0
    """... and it is alerted once the curve expected at least this many orders meanwhile."""
    silence_max_ms: int = 7 * 24 * 60 * MINUTE_MS
    """Stop evaluating a silence this long (a channel that is gone, not silent)."""

    spike_factor: float = 2.0
    """A category's trailing return rate at or above this times its long-run rate ..."""
    spike_min_units: int = 5
    """... with at least this many units returned in the trailing window ..."""
    spike_min_history_units: int = 50
    """... and a long-run rate built on at least this many sold units, is a spike."""

    oos_window_ms: int = 15 * MINUTE_MS
    """Questions about an out-of-stock SKU in one store are counted over this window ..."""
    oos_threshold: int = 5
    """... and alerted when they reach this many."""

    tick_interval_s: float = 1.0
    """Wall-clock seconds between ticks sent by the ticker."""
    idle_timeout_s: float = 10.0
    """An input topic with no event for this many wall-clock seconds is idle: ticks move
    its watermark to its partition's event time, or, when the whole partition is idle,
    with the other partitions (and with the wall clock once every input is idle)."""

    def __post_init__(self) -> None:
        if self.pane_ms <= 0 or self.grace_ms < 0:
            raise ValueError("pane_ms must be positive and grace_ms not negative")
        for name in (
            "top_window_ms",
            "returns_trailing_ms",
            "silence_ms",
            "silence_baseline_ms",
            "oos_window_ms",
        ):
            value = getattr(self, name)
            if value <= 0 or value % self.pane_ms:
                raise ValueError(f"{name}={value} must be a positive multiple of pane_ms")
        if self.top_n is not None and self.top_n <= 0:
            raise ValueError("top_n must be positive or None")

    @property
    def top_window_panes(self) -> int:
        return self.top_window_ms // self.pane_ms

    @property
    def lookback_ms(self) -> int:
        """How far back any output reads panes (what the combiner must keep)."""
        return max(
            self.top_window_ms,
            self.returns_trailing_ms,
            self.silence_baseline_ms,
            self.oos_window_ms,
        )
