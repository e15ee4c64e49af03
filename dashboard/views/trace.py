"""Order trace: one order's whole causation chain across the services, hop by hop."""

from __future__ import annotations

import streamlit as st

from dashboard.state import guarded, models

ORDER_PARAM = "order"


def render() -> None:
    st.title("Order trace")
    st.caption(
        "Choreography, no orchestrator: each service reacts to the event before it. The "
        "lineage the sink records (event id, cause, app, topic, partition, offset, times) "
        "turns one order id into its whole chain, with the time each hop took."
    )
    rm = models()
    recent = guarded(lambda: rm.recent_orders(30))
    if recent is None:
        return
    picked = st.query_params.get(ORDER_PARAM, "")
    choices = recent["order_id"].to_list()
    typed = st.text_input("order id", value=picked, placeholder="O-...", key="trace_order_id")
    if recent.height:
        st.caption("or pick one of the newest orders (click a row):")
        selection = st.dataframe(
            recent, hide_index=True, on_select="rerun", selection_mode="single-row",
            key="trace_recent",
        )  # fmt: skip
        rows = selection.selection.rows if selection is not None else []
        if rows:
            typed = choices[rows[0]]
    order_id = (typed or "").strip()
    if not order_id:
        st.info("Type an order id or pick an order above.")
        return
    st.query_params[ORDER_PARAM] = order_id
    chain = rm.order_trace(order_id)
    if not chain.height:
        st.warning(f"No event of order {order_id} in the read models (yet?).")
        return
    placed = chain.row(0, named=True)
    last = chain.row(chain.height - 1, named=True)
    total_ms = (last["emitted_at"] - placed["occurred_at"]).total_seconds() * 1000
    cols = st.columns(3)
    cols[0].metric("events in the chain", f"{chain.height}")
    cols[1].metric("services involved", f"{chain['app'].n_unique()}")
    cols[2].metric("placed -> last event", f"{total_ms / 1000:.1f} s")
    for row in chain.iter_rows(named=True):
        cause = f" <- {row['caused_by']}" if row["caused_by"] else " <- the customer"
        st.markdown(
            f"**{row['event_type']}** by `{row['app']}` on `{row['topic']}"
            f"[{row['kafka_partition']}]@{row['kafka_offset']}`{cause}, "
            f"hop **{row['hop_ms']:,} ms**"
            + (f", in the read models {row['to_read_model_ms']:,} ms later"
               if row["to_read_model_ms"] is not None else "")
        )  # fmt: skip
    with st.expander("the chain as a table"):
        st.dataframe(chain, hide_index=True)
