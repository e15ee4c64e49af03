"""Inventory: stock levels from the event-sourced stock log, low stock, rejections, stock-outs."""

from __future__ import annotations

import streamlit as st

from dashboard.state import REFRESH_S, guarded, is_live, models, safe

LOW = 5


def render() -> None:
    st.title("Inventory")
    st.caption(
        "Stock levels are folded from the stock service's event log (event sourcing): "
        "every reservation, release and replenishment is an event; the level is what they "
        "add up to. Levels in units."
    )

    @st.fragment(run_every=REFRESH_S if is_live() else None)
    @safe
    def live() -> None:
        rm = models()
        levels = guarded(rm.stock_levels)
        if levels is None:
            return
        if not levels.height:
            st.info("No stock level yet: the opening stock has not reached the read models.")
            return
        low = rm.low_stock(LOW)
        out = levels.filter(levels["level"] == 0).height
        cols = st.columns(4)
        cols[0].metric("store x SKU pairs stocked", f"{levels.height:,}")
        at_or_below = levels.filter(levels["level"] <= LOW).height
        cols[1].metric(f"at or below {LOW} units", f"{at_or_below:,}")
        cols[2].metric("out of stock", f"{out:,}")
        cols[3].metric("units on hand", f"{int(levels['level'].sum()):,}")
        left, right = st.columns(2)
        with left:
            st.subheader(f"Low stock (<= {LOW} units), lowest first")
            st.dataframe(low, hide_index=True)
        with right:
            st.subheader("Out of stock, with the questions asked about it (last hour)")
            st.dataframe(rm.stockouts_with_questions(60), hide_index=True)
        st.subheader("Rejected orders (all-or-nothing reservations that fell short)")
        st.dataframe(rm.rejected_orders(), hide_index=True)
        with st.expander("All stock levels"):
            store = st.selectbox("store", ["all", *sorted(set(levels["store_id"]))])
            st.dataframe(
                levels if store == "all" else levels.filter(levels["store_id"] == store),
                hide_index=True,
            )

    live()
