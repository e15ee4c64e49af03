"""Tour: the course's five models, each shown live on the running system."""

from __future__ import annotations

import polars as pl
import streamlit as st

from dashboard.broker import broker_info
from dashboard.state import settings
from shopstream.errors import UserError
from tour.scenarios import SCENARIOS, TourResult

TITLES = {
    "pubsub": "Publish/subscribe - publication/abonnement",
    "streaming": "Event streaming - flux d'événements rejouable",
    "sourcing": "Event sourcing - l'état reconstruit à partir des événements",
    "cqrs": "CQRS - séparation commande / requête",
    "choreography": "Choreography - chorégraphie, sans orchestrateur",
}


def render() -> None:
    st.title("Tour: the five models, live")
    st.caption(
        "Each scenario acts on the running shop - it places an order, starts a late consumer, "
        "stops a service - and shows the real events, offsets and timings it produced. The "
        "same scenarios run from the command line: `shopstream tour MODEL`."
    )
    try:
        broker_info(settings())
    except UserError as exc:
        st.error(
            f"The scenarios act on the running stack, and no broker answers: {exc}. "
            "Start the whole shop with `shopstream up`.", icon=":material/block:",
        )  # fmt: skip
        return
    model = st.radio("model", list(SCENARIOS), format_func=TITLES.get, key="tour_model")
    if st.button("Run this scenario", type="primary", key="tour_run"):
        with st.spinner(f"running {model} on the live stack ..."):
            try:
                st.session_state[f"tour_{model}"] = SCENARIOS[model](settings())
            except Exception as exc:  # the page says why instead of a traceback
                st.error(f"The scenario could not run: {type(exc).__name__}: {exc}")
    result = st.session_state.get(f"tour_{model}")
    if isinstance(result, TourResult):
        show(result)


def show(result: TourResult) -> None:
    st.subheader(result.title)
    st.markdown(result.explanation)
    for step in result.steps:
        if step.text:
            st.markdown(step.text)
        if step.rows:
            st.dataframe(pl.DataFrame(step.rows), hide_index=True)
    for claim, holds in result.claims.items():
        (st.success if holds else st.error)(claim, icon=":material/check:" if holds else
                                            ":material/close:")  # fmt: skip
