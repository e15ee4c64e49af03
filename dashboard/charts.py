"""The few chart shapes the pages use (Altair, rendered by Streamlit as Vega-Lite)."""

from __future__ import annotations

import altair as alt
import polars as pl


def lines(frame: pl.DataFrame, x: str, y: str, color: str, y_title: str) -> alt.Chart:
    """One line per ``color`` value over time."""
    return (
        alt.Chart(frame.to_pandas())
        .mark_line(point=True)
        .encode(
            x=alt.X(f"{x}:T", title="event time (UTC)", axis=alt.Axis(format="%H:%M")),
            y=alt.Y(f"{y}:Q", title=y_title),
            color=alt.Color(f"{color}:N", title=color),
            tooltip=[alt.Tooltip(f"{x}:T", format="%H:%M", title=x), f"{color}:N", f"{y}:Q"],
        )
        .properties(height=260)
    )


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
