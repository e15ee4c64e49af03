"""The Streamlit dashboard: ``shopstream dashboard`` (part of ``shopstream up``) serves it.

Pages read the DuckLake read models through :mod:`readmodels.queries` while the sink
writes them, and refresh live through fragments (no full-page reloads).
"""

from __future__ import annotations

import streamlit as st

from dashboard.state import as_of_picker
from dashboard.views import (
    customers,
    health,
    inventory,
    overview,
    replay,
    topology,
    tour,
    trace,
)

st.set_page_config(page_title="shopstream", page_icon=":material/storefront:", layout="wide")


def _page(render: object, title: str, icon: str, path: str, **options: bool) -> st.Page:
    return st.Page(render, title=title, icon=f":material/{icon}:", url_path=path, **options)  # type: ignore[arg-type]


PAGES = [
    _page(overview.render, "Overview", "monitoring", "overview", default=True),
    _page(inventory.render, "Inventory", "inventory_2", "inventory"),
    _page(customers.render, "Customers", "forum", "customers"),
    _page(trace.render, "Order trace", "account_tree", "trace"),
    _page(health.render, "Pipeline health", "health_and_safety", "health"),
    _page(replay.render, "Replay", "history", "replay"),
    _page(topology.render, "Topology", "hub", "topology"),
    _page(tour.render, "Tour: five models", "school", "tour"),
]

page = st.navigation(PAGES)
as_of_picker()
page.run()
