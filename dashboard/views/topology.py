"""Topology: the running system as a map - who reads and writes what, how fast, how far behind."""

from __future__ import annotations

import altair as alt
import streamlit as st

from dashboard.state import REFRESH_S, safe, settings
from dashboard.topology import READ_MODELS, Topology, topology
from shopstream.errors import UserError

COLORS = {
    "running": "#2e7d32", "stopped": "#9e9e9e", "broker down": "#f9a825", "topic": "#1565c0",
    "store": "#6a1b9a",
}  # fmt: skip
LAST_KEY = "topology_last"


def render() -> None:
    st.title("Topology")
    st.caption(
        "Drawn from what is running: the app registry (who reads and writes which topic), the "
        "broker (offsets, lag) and what each process says about itself. Green apps run, grey "
        "ones are stopped (their lag grows); blue squares are topics. Click a node for its "
        "topics, partitions, offsets and last error. Producers on the left, read models on "
        "the right: events flow left to right, no app calls another."
    )

    @st.fragment(run_every=REFRESH_S)
    @safe
    def live() -> None:
        previous = st.session_state.get(LAST_KEY)
        try:
            topo = topology(settings(), previous)
        except UserError as exc:
            st.error(f"Broker unreachable: {exc}", icon=":material/block:")
            topo = topology(settings(), previous, broker=False)
        st.session_state[LAST_KEY] = topo
        selected = st.altair_chart(
            chart(topo), use_container_width=True, on_select="rerun", key="topology_map",
            selection_mode="node",
        )  # fmt: skip
        picked = _picked(selected)
        stopped = [n.name for n in topo.nodes.values() if n.state == "stopped"]
        if stopped:
            st.warning(f"Stopped: {', '.join(sorted(stopped))}.", icon=":material/pause:")
        name = picked or st.selectbox("details of", sorted(topo.nodes), key="topology_node")
        if name in topo.nodes:
            node = topo.nodes[name]
            st.subheader(f"{node.name} ({node.kind}{', ' + node.state if node.state else ''})")
            lags = {e.source: e.lag for e in topo.edges if e.target == name and e.lag is not None}
            if lags:
                st.caption(f"lag per topic it reads (records): {lags}")
            st.json(node.details, expanded=True)

    live()


def _picked(selected: object) -> str | None:
    try:
        points = selected["selection"]["node"]  # type: ignore[index]
    except (KeyError, TypeError):
        return None
    return str(points[0]["node"]) if points else None


def chart(topo: Topology) -> alt.LayerChart:
    nodes = topo.node_frame().to_pandas()
    edges = topo.edge_frame().to_pandas()
    per_layer: dict[int, int] = {}
    for n in topo.nodes.values():
        per_layer[n.layer] = per_layer.get(n.layer, 0) + 1
    height = max(480, 56 * max(per_layer.values(), default=1) + 60)
    layers = max((n.layer for n in topo.nodes.values()), default=1)
    rows = max((abs(n.row) for n in topo.nodes.values()), default=1)
    xs = alt.Scale(domain=[-0.4, layers + 0.4], nice=False, zero=False)
    ys = alt.Scale(domain=[-rows - 0.6, rows + 0.6], nice=False, zero=False, reverse=True)
    x = alt.X("x:Q", axis=None, scale=xs)
    y = alt.Y("y:Q", axis=None, scale=ys)
    pick = alt.selection_point(fields=["node"], name="node", on="click")
    lines = (
        alt.Chart(edges).mark_rule(strokeWidth=1.5)
        .encode(x=x, y=y, x2="x2:Q", y2="y2:Q",
                color=alt.condition("datum.lag > 1000", alt.value("#c62828"), alt.value("#bbb")),
                tooltip=["source", "target", "label"])
    )  # fmt: skip
    labels = (
        alt.Chart(edges[edges["label"] != ""]).mark_text(fontSize=9, dy=-5, color="#555")
        .encode(x=alt.X("mid_x:Q", axis=None, scale=xs), y=alt.Y("mid_y:Q", axis=None, scale=ys),
                text="label")
    )  # fmt: skip
    nodes_x = alt.X("layer:Q", axis=None, scale=xs)
    nodes_y = alt.Y("row:Q", axis=None, scale=ys)
    points = (
        alt.Chart(nodes).mark_point(filled=True, size=260)
        .encode(
            x=nodes_x, y=nodes_y,
            shape=alt.condition("datum.kind == 'topic'", alt.value("square"), alt.value("circle")),
            color=alt.Color("state:N", scale=alt.Scale(domain=list(COLORS),
                                                       range=list(COLORS.values())), title=None),
            opacity=alt.condition(pick, alt.value(1.0), alt.value(0.5)),
            tooltip=["node", "kind", "state", alt.Tooltip("rate:Q", format=",.1f")],
        )
        .add_params(pick)
    )  # fmt: skip
    names = (
        alt.Chart(nodes).mark_text(fontSize=10, dy=14)
        .encode(x=nodes_x, y=nodes_y, text="label")
    )  # fmt: skip
    layered = alt.layer(lines, labels, points, names)
    return layered.resolve_scale(x="shared", y="shared").properties(
        height=height, width="container"
    )


__all__ = ["READ_MODELS", "render"]
