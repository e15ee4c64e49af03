"""Pipeline health: apps, consumer lag, events per topic, dead letters, read-model freshness."""

from __future__ import annotations

import polars as pl
import streamlit as st

from dashboard.broker import app_statuses, broker_info, consumer_lag
from dashboard.charts import bars
from dashboard.state import REFRESH_S, guarded, is_live, models, safe, settings
from shopstream.errors import UserError


def render() -> None:
    st.title("Pipeline health")
    st.caption(
        "Every app is its own consumer group (publish/subscribe): each reads the topics it "
        "subscribes to at its own pace, from its own committed offsets."
    )

    @st.fragment(run_every=REFRESH_S if is_live() else None)
    @safe
    def live() -> None:
        s = settings()
        st.subheader("Apps")
        # An app with no note or error shows an empty cell, not Streamlit's "None".
        apps = app_statuses(s).with_columns(pl.col("note", "last_error").fill_null(""))
        st.dataframe(apps, hide_index=True)
        st.subheader("Consumer lag per group and partition")
        try:
            info = broker_info(s)
            lag = consumer_lag(s)
        except UserError as exc:
            st.error(f"Broker unreachable: {exc}", icon=":material/block:")
            info, lag = None, None
        if info is not None and lag is not None:
            st.caption(
                f"Broker {info.address}: {info.brokers} broker(s), {info.topics} topics. "
                "Lag = high watermark - committed offset, in records."
            )
            if info.embedded:
                st.warning(
                    "This is the embedded broker (Tansu): its high watermark is the last "
                    "*batch*'s first offset + 1, not the last record's, so lag reads too "
                    "low (even negative) here. Apache Kafka and Redpanda report it right.",
                    icon=":material/warning:",
                )
            if lag.height:
                per_group = lag.group_by("group").agg(pl.col("lag").sum())
                per_group = per_group.sort("lag", descending=True)
                st.altair_chart(bars(per_group, "group", "lag", "records behind"),
                                use_container_width=True)  # fmt: skip
                st.dataframe(lag, hide_index=True)
            else:
                st.caption("No committed offsets yet.")
        rm = models()
        freshness = guarded(rm.freshness)
        if freshness is None:
            return
        st.subheader("Read models: how far behind the newest event")
        st.dataframe(
            freshness, hide_index=True,
            column_config={"behind_s": st.column_config.NumberColumn("behind now (s)",
                                                                     format="%.1f")},
        )  # fmt: skip
        st.subheader("Events per second per topic (written by the sink, last 60 s)")
        st.dataframe(rm.events_per_topic(60), hide_index=True)
        st.subheader("Dead letters by error kind")
        letters = rm.dead_letters_by_kind()
        if letters.height:
            st.dataframe(letters, hide_index=True)
        else:
            st.caption("No dead letter: every record so far was valid.")
        with st.expander("The sink's offsets (exactly-once bookkeeping)"):
            st.dataframe(rm.sink_offsets(), hide_index=True)

    live()
