"""What every dashboard page shares: settings, the kept read-model connection, "as of",
and the banners shown instead of a traceback when something is missing.

Pages read only through :class:`readmodels.queries.ReadModels` (one read-only DuckLake
attach per dashboard process, kept with ``st.cache_resource``) and, for broker-side
figures, :mod:`dashboard.broker`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import streamlit as st

from readmodels.queries import NoReadModels, ReadModels
from shopstream.errors import UserError
from shopstream.settings import Settings, get_settings

REFRESH_S = 2.0
"""How often live fragments rerun (no full-page reload)."""
AS_OF_KEY = "as_of_version"

T = TypeVar("T")


@st.cache_resource(show_spinner=False)
def settings() -> Settings:
    return get_settings()


@st.cache_resource(show_spinner=False)
def _live_models() -> ReadModels:
    return ReadModels(settings())


def models() -> ReadModels:
    """The read models, live or pinned to the snapshot the sidebar chose."""
    live = _live_models()
    version = st.session_state.get(AS_OF_KEY)
    return live.pinned(version) if version else live


def is_live() -> bool:
    return not st.session_state.get(AS_OF_KEY)


def guarded(read: Callable[[], T]) -> T | None:
    """``read()``, or ``None`` after showing a banner that says what to do."""
    try:
        return read()
    except NoReadModels as exc:
        st.info(
            f"No read models yet. {exc}. Start everything with `shopstream up` (or the sink "
            "alone with `shopstream run sink`); this page fills in as events arrive.",
            icon=":material/hourglass_top:",
        )
    except UserError as exc:
        st.error(f"{exc}", icon=":material/block:")
    except Exception as exc:  # a page must never show a traceback
        st.error(f"Could not read this: {type(exc).__name__}: {exc}", icon=":material/warning:")
    return None


def safe(body: Callable[[], None]) -> Callable[[], None]:
    """``body`` with any error shown as a one-line banner, never a traceback on the page."""

    @functools.wraps(body)
    def run() -> None:
        guarded(body)

    return run


def as_of_picker() -> None:
    """Sidebar: show the read models live, or as of an earlier DuckLake snapshot."""
    st.sidebar.markdown("**Read models as of**")
    snapshots = guarded(lambda: _live_models().snapshots(limit=300))
    if not snapshots:
        st.sidebar.caption("live (no snapshots yet)")
        return
    labels = {None: "live (newest)"} | {
        s.version: f"#{s.version} at {s.at:%H:%M:%S}" for s in snapshots[1:]
    }
    chosen = st.sidebar.selectbox(
        "snapshot", list(labels), format_func=lambda v: labels[v], key=AS_OF_KEY,
        label_visibility="collapsed",
        help="DuckLake keeps every committed batch as a snapshot: look at the shop as it "
        "was then (time travel).",
    )  # fmt: skip
    if chosen:
        st.sidebar.warning(f"Showing snapshot #{chosen}, not live.", icon=":material/history:")


def money(value: object, *, compact: bool = False) -> str:
    """EUR with thousands separators; ``compact`` rounds a million or more to ``€30.68 M``
    (a metric tile cuts a long number off)."""
    try:
        amount = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "-"
    if compact and abs(amount) >= 1_000_000:
        return f"€{amount / 1_000_000:,.2f} M"
    return f"€{amount:,.2f}"
