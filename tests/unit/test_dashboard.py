"""Every dashboard page in Streamlit's AppTest: on real read models (the simulated shop run
through the real rules and the real sink writer), with none at all, and with no broker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard.broker import app_statuses
from dashboard.charts import MAX_TIME_TICKS, lines, time_ticks
from dashboard.state import money
from readmodels.queries import ReadModels
from shopstream import settings as settings_module
from shopstream.settings import load_settings
from shopstream.shop.traffic import store_hours
from shopstream.status import StatusPublisher
from shopstream.topics import CATALOG
from support.lake import feed, shop_run, sink_for

PAGES = ("overview", "inventory", "customers", "trace", "health", "replay")


def page_script(page: str) -> str:
    return (
        "from dashboard.views import " + page + "\n"
        + page + ".render()\n"
    )  # fmt: skip


@pytest.fixture(autouse=True)
def fresh_caches(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # AppTest instances share Streamlit's caches and our cached settings: clear both.
    monkeypatch.setenv("SHOPSTREAM_BROKER_ADDRESS", "127.0.0.1:1")  # no broker here
    st.cache_data.clear()
    st.cache_resource.clear()
    settings_module.get_settings.cache_clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()
    settings_module.get_settings.cache_clear()


@pytest.fixture(scope="module")
def shop_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("dashboard") / "data"
    sink = sink_for(load_settings(data_dir=data))
    records = shop_run(4000).records
    for start in range(0, len(records), 20_000):
        feed(sink, records[start : start + 20_000])
    sink.writer.con.close()
    return data


def run_page(page: str, data: Path, monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    monkeypatch.setenv("SHOPSTREAM_DATA_DIR", str(data))
    at = AppTest.from_string(page_script(page), default_timeout=30)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for m in (*at.title, *at.subheader, *at.markdown, *at.caption)]
    parts += [e.value for e in (*at.info, *at.warning, *at.error, *at.success)]
    return "\n".join(str(p) for p in parts)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_overview_shows_orders_revenue_and_channels(
    shop_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run_page("overview", shop_lake, monkeypatch)
    shown = metrics(at)
    orders = int(shown["orders, last hour"].replace(",", ""))
    assert orders > 0 and shown["revenue, last hour"].startswith("€")
    assert "All time:" in texts(at)
    assert len(at.dataframe) >= 2  # per channel, alerts
    # Point of sale follows store hours: when it has no orders in the window, the page says why.
    channels = set(at.dataframe[0].value["channel"])
    assert ("No point-of-sale orders" in texts(at)) == ("pos" not in channels), channels


def test_overview_says_why_point_of_sale_is_quiet_at_night(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    night = int(datetime(2026, 12, 1, 2, 0, tzinfo=UTC).timestamp() * 1000)  # Tuesday 02:00
    data = tmp_path / "data"
    sink = sink_for(load_settings(data_dir=data))
    feed(sink, shop_run(600, start_ms=night).records)
    sink.writer.con.close()
    at = run_page("overview", data, monkeypatch)
    assert set(at.dataframe[0].value["channel"]) == {"mobile", "web"}
    assert "No point-of-sale orders in the last hour: the stores are open Mon-Sat" in texts(at)


def test_store_hours_read_as_people_write_them() -> None:
    assert store_hours() == "Mon-Sat 08:00-21:00, Sun 10:00-18:00 UTC"


def test_inventory_shows_levels_low_stock_and_rejections(
    shop_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run_page("inventory", shop_lake, monkeypatch)
    shown = metrics(at)
    assert int(shown["store x SKU pairs stocked"].replace(",", "")) > 1000
    assert int(shown["units on hand"].replace(",", "")) > 0
    assert "event sourcing" in texts(at)


def test_customers_shows_questions_with_their_answers(
    shop_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run_page("customers", shop_lake, monkeypatch)
    shown = metrics(at)
    assert int(shown["answered"]) > 0
    # An answer has its question's event time; its emission (support.lake stamps each
    # event 5 ms after its event time) is what says how long answering took.
    assert shown["median time to answer"] == "0.0 s", shown
    qa = ReadModels(load_settings(data_dir=shop_lake)).questions_and_answers(500)
    answered = qa.filter(qa["answer"].is_not_null())
    assert answered.height > 0 and set(answered["answered_after_ms"]) == {5}


def test_order_trace_follows_an_order_across_the_services(
    shop_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run_page("trace", shop_lake, monkeypatch)
    assert "Type an order id" in texts(at)
    order_id = at.dataframe[0].value["order_id"].iloc[0]
    at = run_page("trace", shop_lake, monkeypatch, order=order_id)
    chain = texts(at)
    assert "OrderPlaced" in chain and "by `router`" in chain
    assert "StockReserved" in chain or "StockRejected" in chain
    assert int(metrics(at)["services involved"]) >= 2


def test_health_says_the_broker_is_unreachable_and_still_shows_the_read_models(
    shop_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run_page("health", shop_lake, monkeypatch)
    shown = texts(at)
    assert "Broker unreachable" in shown and "127.0.0.1:1" in shown
    assert "how far behind the newest event" in shown
    assert any("read_model" in d.value.columns for d in at.dataframe)


def test_replay_page_offers_to_start_one(shop_lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_page("replay", shop_lake, monkeypatch)
    assert at.button[0].label == "Start replay from offset 0"
    assert "No replay yet" in texts(at)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_says_what_to_do_when_there_are_no_read_models(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run_page(page, tmp_path / "empty", monkeypatch)
    assert "No read models yet" in texts(at) and "shopstream up" in texts(at)


def test_the_health_table_shows_what_a_paused_app_says(tmp_path: Path) -> None:
    """What an app publishes as its note (the sink: ``paused, retrying: ...``) is a column
    of the health page's process table."""
    settings = load_settings(data_dir=tmp_path / "data")
    note = "paused, retrying: IOException: No space left on device"
    with StatusPublisher(settings, CATALOG.app("sink"), lambda s: setattr(s, "note", note)):
        table = app_statuses(settings)
    row = table.filter(table["app"] == "sink").to_dicts()[0]
    assert (row["state"], row["note"]) == ("running", note)


@pytest.mark.parametrize("page", ["topology", "tour"])
def test_the_live_pages_say_the_broker_is_unreachable(
    page: str, shop_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The topology map and the tour run against the broker; without one they say so (and
    how to start it) instead of failing."""
    at = run_page(page, shop_lake, monkeypatch)
    shown = texts(at)
    assert "no broker at 127.0.0.1:1" in shown, shown
    assert "`shopstream up`" in shown or "`shopstream broker`" in shown, shown


def test_money_fits_a_metric_tile() -> None:
    assert money(30_678_882.28, compact=True) == "€30.68 M"
    assert money(136.2249) == money(136.2249, compact=True) == "€136.22"
    assert money(None) == "-"


def test_time_axes_tick_whole_minutes_in_utc() -> None:
    """Seen in a browser in Paris: the axis titled UTC showed local time, and a span of
    three minutes was labelled ``13:14`` ten times (Vega's own ticks every few seconds)."""
    t0 = datetime(2026, 12, 2, 13, 14, 20, tzinfo=UTC)

    def ticks(minutes: int) -> list[str]:
        span = pl.Series([t0, t0 + timedelta(minutes=minutes)])
        return [datetime.fromisoformat(t).strftime("%H:%M") for t in time_ticks(span)]

    assert ticks(2) == ["13:14", "13:15", "13:16"]
    assert ticks(60) == ["13:20", "13:30", "13:40", "13:50", "14:00", "14:10"]
    assert ticks(1440) == ["15:00", "18:00", "21:00", "00:00", "03:00", "06:00", "09:00", "12:00"]
    assert all(len(ticks(m)) <= MAX_TIME_TICKS for m in range(0, 3000, 7))
    assert time_ticks(pl.Series([], dtype=pl.Datetime("us", "UTC"))) == []
    frame = pl.DataFrame({"minute": [t0], "orders": [3], "channel": ["web"]})
    x = lines(frame, "minute", "orders", "channel", "orders / minute").to_dict()["encoding"]
    assert x["x"]["scale"]["type"] == "utc" and x["tooltip"][0]["formatType"] == "utc"


def test_a_replay_that_cannot_start_says_why_under_the_name_the_user_typed(
    shop_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No broker here: the replay process exits at once. The page shows the end of its log
    instead of waiting forever, and the name typed stays through the reruns."""
    at = run_page("replay", shop_lake, monkeypatch)
    at.text_input(key="replay_name").input("typed")
    at.button[0].click()
    at.run()
    log = shop_lake / "logs" / "replay-typed.log"
    deadline = time.monotonic() + 60
    while "did not start" not in texts(at) and time.monotonic() < deadline:
        time.sleep(0.5)
        at.run()
    assert at.text_input(key="replay_name").value == "typed"
    assert "Replay typed did not start" in texts(at), texts(at)
    shown = "\n".join(c.value for c in at.code)
    assert log.exists() and shown and shown.splitlines()[-1] in log.read_text()
    assert "127.0.0.1:1" in shown, shown
