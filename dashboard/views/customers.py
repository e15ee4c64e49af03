"""Customers: stock questions and their answers, messages sent per channel."""

from __future__ import annotations

import polars as pl
import streamlit as st

from dashboard.charts import bars
from dashboard.state import REFRESH_S, guarded, is_live, models, safe


def render() -> None:
    st.title("Customers")
    st.caption(
        "Customer relations answers each stock question from its own view of the stock log; "
        "notifications tells each customer by their channel's medium (push on mobile, "
        "e-mail on the web, a receipt at the point of sale)."
    )

    @st.fragment(run_every=REFRESH_S if is_live() else None)
    @safe
    def live() -> None:
        rm = models()
        qa = guarded(lambda: rm.questions_and_answers(50))
        if qa is None:
            return
        answered = qa.filter(qa["answer"].is_not_null())
        cols = st.columns(3)
        cols[0].metric("questions shown", f"{qa.height}")
        cols[1].metric("answered", f"{answered.height}")
        median = answered["answered_after_ms"].median() if answered.height else None
        cols[2].metric(
            "median time to answer", f"{median / 1000:.1f} s" if median is not None else "-",
            help="from the question's event time to the answer's emission, over the "
            "answered questions shown",
        )
        st.subheader("Newest stock questions and answers")
        st.dataframe(qa, hide_index=True)
        notes = rm.notifications_by_channel()
        st.subheader("Messages sent, by channel and medium (all time)")
        if notes.height:
            per_channel = notes.group_by("channel", "medium").agg(pl.col("messages").sum())
            per_channel = per_channel.with_columns(
                (per_channel["channel"] + " / " + per_channel["medium"]).alias("channel / medium")
            )
            st.altair_chart(
                bars(per_channel, "channel / medium", "messages", "messages"),
                use_container_width=True,
            )
            st.dataframe(notes, hide_index=True)
        else:
            st.caption("No message sent yet.")

    live()
