"""The few chart shapes the pages use (Altair, rendered by Streamlit as Vega-Lite)."""

from __future__ import annotations

from datetime import UTC, datetime

import altair as alt
import polars as pl

MAX_TIME_TICKS = 10
"""At most this many labels on a time axis."""
_TICK_STEPS_MIN = (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440)  # divide a day


def lines(frame: pl.DataFrame, x: str, y: str, color: str, y_title: str) -> alt.Chart:
    """One line per ``color`` value over time, the times shown in UTC (as every page
    says) whatever the browser's time zone, a tick on whole minutes or hours."""
    return (
        alt.Chart(frame.to_pandas())
        .mark_line(point=True)
        .encode(
            x=alt.X(
                f"{x}:T",
                title="event time (UTC)",
                scale=alt.Scale(type="utc"),
                axis=alt.Axis(format="%H:%M", values=time_ticks(frame.get_column(x))),
            ),
            y=alt.Y(f"{y}:Q", title=y_title),
            color=alt.Color(f"{color}:N", title=color),
            tooltip=[
                alt.Tooltip(f"{x}:T", format="%H:%M", formatType="utc", title=f"{x} (UTC)"),
                f"{color}:N",
                f"{y}:Q",
            ],
        )
        .properties(height=260)
    )


def time_ticks(times: pl.Series) -> list[str]:
    """Axis ticks on whole multiples of 1, 2, 5 ... 30 minutes or 1 ... 24 hours, the
    smallest step that keeps :data:`MAX_TIME_TICKS` ticks or fewer, as ISO times (for
    epoch numbers Vega-Lite draws no tick on a UTC time axis).

    Left to itself, Vega ticks a span of a few minutes every 10 or 15 seconds, and every
    label reads the same minute (``13:14 13:14 13:14 ...``)."""
    if not times.len():
        return []
    first, last = (int(t.timestamp()) // 60 for t in (times.min(), times.max()))
    step = next((s for s in _TICK_STEPS_MIN if (last - first) / s < MAX_TIME_TICKS), 1440)
    start = -(-first // step) * step  # the first multiple of the step at or after the start
    return [datetime.fromtimestamp(m * 60, UTC).isoformat() for m in range(start, last + 1, step)]


def bars(frame: pl.DataFrame, x: str, y: str, title: str, color: str | None = None) -> alt.Chart:
    """Horizontal bars, largest first."""
    encoding = {
        "x": alt.X(f"{y}:Q", title=title),
        "y": alt.Y(f"{x}:N", sort="-x", title=None),
        "tooltip": [f"{x}:N", f"{y}:Q"],
    }
    if color:
        encoding["color"] = alt.Color(f"{color}:N")
    return alt.Chart(frame.to_pandas()).mark_bar().encode(**encoding).properties(height=260)
