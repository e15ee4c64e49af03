"""Overview: the shop right now - orders, revenue, baskets and returns per channel, alerts."""

from __future__ import annotations

import streamlit as st

from dashboard.charts import lines
from dashboard.state import REFRESH_S, guarded, is_live, models, money, safe
from shopstream.shop.traffic import store_hours

WINDOWS = {"last 15 min": 15, "last hour": 60, "last 6 hours": 360, "last 24 hours": 1440}


def render() -> None:
    st.title("Overview")
    st.caption(
        "The query side of CQRS: these figures come from DuckDB read models that the sink "
        "builds from the event log, a second or so behind the events. Times are event time "
        "(UTC); money in euros."
    )
    label = st.radio("window", list(WINDOWS), index=1, horizontal=True, key="overview_window")
    minutes = WINDOWS[label]

    @st.fragment(run_every=REFRESH_S if is_live() else None)
    @safe
    def live() -> None:
        rm = models()
        totals = guarded(rm.totals)
        if totals is None:
            return
        if not totals["orders"]:
            st.info("The read models are there but hold no orders yet: traffic is on its way.")
            return
        summary = rm.channel_summary(minutes)
        orders = int(summary["orders"].sum())
        revenue = summary["revenue"].sum()
        returns = int(summary["returns"].sum())
        cols = st.columns(4)
        cols[0].metric(f"orders, {label}", f"{orders:,}")
        cols[1].metric(f"revenue, {label}", money(revenue, compact=True), help=money(revenue))
        cols[2].metric("average basket", money(revenue / orders if orders else None),
                       help="revenue / orders over the window")  # fmt: skip
        cols[3].metric(f"returns, {label}", f"{returns:,}")
        st.caption(
            f"All time: {int(totals['orders']):,} orders, {money(totals['revenue'])}; newest "
            f"order minute {totals['newest_minute']:%Y-%m-%d %H:%M} UTC."
        )
        st.subheader("Per channel")
        if "pos" not in set(summary["channel"].to_list()):
            # Not a fault: the simulated point of sale follows store hours.
            st.caption(
                f"No point-of-sale orders in the {label}: the stores are open {store_hours()}."
            )
        shown = summary.select(
            "channel", "orders", "revenue", "avg_basket", "returns", "return_rate"
        )
        st.dataframe(
            shown,
            hide_index=True,
            column_config={
                "revenue": st.column_config.NumberColumn("revenue (EUR)", format="%.2f"),
                "avg_basket": st.column_config.NumberColumn("avg basket (EUR)", format="%.2f"),
                "return_rate": st.column_config.NumberColumn(
                    "return rate (units returned / sold)", format="percent"
                ),
            },
        )
        per_minute = rm.sales_per_minute(minutes)
        if per_minute.height:
            st.subheader("Orders per minute, by channel")
            st.altair_chart(
                lines(per_minute, "minute", "orders", "channel", "orders / minute"),
                use_container_width=True,
            )
        st.subheader("Alerts")
        alerts = rm.alerts(limit=200)
        if not alerts.height:
            st.caption("No alert so far.")
            return
        grouped = alerts.group_by("kind", "severity").len("alerts").sort("alerts", descending=True)
        st.caption(
            "Each condition alerts once until it clears (a low-stock SKU alerts again only "
            "after it was restocked above twice the threshold). Newest 200:"
        )
        st.dataframe(grouped, hide_index=True)
        st.dataframe(alerts.head(20), hide_index=True)

    live()
