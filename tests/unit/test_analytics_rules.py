"""The analytics rules one at a time: lateness, watermarks, ticks, stock as-of, alerts."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from pipelines.analytics.alerts import alert_event
from pipelines.analytics.catalog import category_lookup, load_category_of, load_traffic_curve
from pipelines.analytics.combine import GlobalCombiner
from pipelines.analytics.config import AnalyticsConfig
from pipelines.analytics.local import PartitionAggregator, level_at
from pipelines.analytics.records import Coordinates, Output, format_time_ms, parse_time_ms
from pipelines.analytics.ticker import ClockBoard, PartitionClock, plan_ticks
from shopstream.events import Alert, decode

T0 = 1_717_200_000_000  # 2024-06-01 00:00 UTC, a pane boundary
MIN = 60_000
_offsets = itertools.count()


def envelope(etype: str, t: int, store: str = "ST-001", channel: str = "web") -> dict[str, Any]:
    return {
        "event_id": "00000000-0000-4000-8000-000000000000",
        "event_type": etype,
        "schema_version": 1,
        "occurred_at": format_time_ms(t),
        "channel": channel,
        "store_id": store,
        "correlation_id": "c",
        "causation_id": "",
    }


def order(
    t: int,
    *,
    store: str = "ST-001",
    channel: str = "web",
    lines: tuple[tuple[str, int, float], ...] = (("SKU-10001", 1, 10.0),),
) -> dict[str, Any]:
    return envelope("OrderPlaced", t, store, channel) | {
        "payload": {
            "order_id": "O-1",
            "customer_id": "C-1",
            "lines": [{"sku": s, "qty": q, "unit_price": p} for s, q, p in lines],
            "currency": "EUR",
            "payment_method": "card",
        }
    }


def question(t: int, sku: str = "SKU-10001", store: str = "ST-001") -> dict[str, Any]:
    return envelope("StockQuestionAsked", t, store) | {
        "payload": {
            "question_id": "Q",
            "customer_id": "C",
            "sku": sku,
            "store_id": store,
            "text": "?",
        }
    }


def reserved(t: int, sku: str, level: int, store: str = "ST-001") -> dict[str, Any]:
    return envelope("StockReserved", t, store) | {
        "payload": {
            "order_id": "O",
            "customer_id": "C",
            "movements": [{"sku": sku, "delta": -1, "level_after": level}],
        }
    }


def feed(
    agg: PartitionAggregator, kind: str, value: Any, offset: int | None = None
) -> list[Output]:
    where = Coordinates(kind, agg.partition, next(_offsets) if offset is None else offset)
    return agg.on_event(kind, value, where)  # type: ignore[arg-type]


def roles(out: list[Output]) -> list[str]:
    return [e.role for e in out]


# --- lateness and watermarks ------------------------------------------------------------


def test_event_within_grace_is_counted_and_beyond_grace_is_kept_with_the_reason() -> None:
    agg = PartitionAggregator(0, AnalyticsConfig(grace_ms=MIN))
    feed(agg, "orders", order(T0 + 3 * MIN - 1))
    # Pane [T0+1min, T0+2min) + 1 min grace ends just after the watermark: still counted.
    assert roles(feed(agg, "orders", order(T0 + MIN + 5))) == []
    # Pane [T0, T0+1min) + grace ended a minute (less 1 ms) before the watermark: late.
    (late,) = feed(agg, "orders", order(T0 + 30_000, store="ST-004"), offset=77)
    assert late.role == "late" and late.key == "ST-004"
    assert late.value["reason"] == "beyond_grace"
    assert late.value["window_end"] == T0 + MIN
    assert late.value["watermark"] == T0 + 3 * MIN - 1
    assert late.value["late_by_ms"] == MIN - 1
    assert (late.value["topic"], late.value["offset"]) == ("orders", 77)
    assert late.value["event"]["payload"]["order_id"] == "O-1"  # the whole event is kept
    assert agg.stats["late"] == 1


def test_each_input_topic_has_its_own_watermark() -> None:
    agg = PartitionAggregator(0, AnalyticsConfig(grace_ms=MIN))
    feed(agg, "orders", order(T0 + 30 * MIN))
    # Questions far behind the orders are not late: their own topic is not past them.
    assert "late" not in roles(feed(agg, "questions", question(T0)))


def test_a_tick_for_one_input_raises_only_that_input() -> None:
    agg = PartitionAggregator(0, AnalyticsConfig(grace_ms=MIN))
    feed(agg, "orders", order(T0 + 30 * MIN))
    feed(agg, "questions", question(T0 + 10 * MIN))
    feed(agg, "stock", reserved(T0 + 10 * MIN, "SKU-10001", 3))
    out = agg.on_tick(T0 + 30 * MIN, ["stock"])  # the stock log went quiet
    assert agg.watermark("stock") == T0 + 30 * MIN
    assert agg.watermark("questions") == T0 + 10 * MIN  # still its own
    assert out == []  # demand waits for questions too
    assert roles(feed(agg, "stock", reserved(T0 + 20 * MIN, "SKU-10001", 2))) == ["late"]
    assert "late" not in roles(feed(agg, "questions", question(T0 + 9 * MIN)))


def test_a_tick_closes_panes_of_an_idle_partition_and_later_events_are_late() -> None:
    agg = PartitionAggregator(0, AnalyticsConfig(grace_ms=MIN))
    feed(agg, "orders", order(T0 + 10_000))
    assert agg.on_tick(None) == []  # a probe changes nothing
    out = agg.on_tick(T0 + 5 * MIN)
    sales = [e.value for e in out if e.value["family"] == "sales"]
    assert sales and sales[0]["through"] == T0 + 4 * MIN
    assert sales[0]["panes"][str(T0)]["c"]["web"] == [1, 1, 1000]
    assert {d.value["family"] for d in out} == {"sales", "returns", "demand"}
    assert roles(
        feed(
            agg,
            "returns",
            envelope("ItemReturned", T0)
            | {
                "payload": {
                    "return_id": "R",
                    "order_id": "O",
                    "customer_id": "C",
                    "sku": "SKU-10001",
                    "qty": 1,
                    "reason": "damaged",
                    "amount": 10.0,
                }
            },
        )
    ) == ["late"]
    assert agg.on_tick(T0 + MIN) == []  # ticks never move time backwards


def test_digests_cover_each_pane_once_and_report_progress_without_data() -> None:
    agg = PartitionAggregator(2, AnalyticsConfig(grace_ms=0))
    first = [e.value for e in agg.on_tick(T0 + 2 * MIN) if e.value["family"] == "sales"]
    assert first == [
        {"family": "sales", "source": 2, "after": None, "through": T0 + 2 * MIN, "panes": {}}
    ]
    feed(agg, "orders", order(T0 + 2 * MIN + 1))
    out = [e.value for e in feed(agg, "orders", order(T0 + 4 * MIN)) if e.role == "digest"]
    assert [(d["after"], d["through"], list(d["panes"])) for d in out] == [
        (T0 + 2 * MIN, T0 + 4 * MIN, [str(T0 + 2 * MIN)])
    ]


@pytest.mark.parametrize("bad", [{"occurred_at": "yesterday"}, {"no": "fields"}, [1, 2], b"\xff"])
def test_unreadable_input_is_kept_never_raised(bad: Any) -> None:
    agg = PartitionAggregator(0, AnalyticsConfig())
    (kept,) = feed(agg, "orders", bad)
    assert kept.role == "late" and kept.value["reason"] == "unreadable"
    assert kept.value["event"] == bad
    assert agg.stats["unreadable"] == 1


# --- stock as of the question's time ----------------------------------------------------


def test_level_at_takes_the_latest_entry_at_or_before_with_later_offset_winning_ties() -> None:
    history = [[10, 1, 5], [20, 2, 0], [20, 3, 4], [30, 4, 0]]
    assert level_at(history, 9) is None
    assert level_at(history, 10) == 5
    assert level_at(history, 25) == 4
    assert level_at(history, 99) == 0
    assert level_at(None, 99) is None


def test_questions_are_resolved_against_stock_as_of_their_time_even_if_it_arrives_later() -> None:
    agg = PartitionAggregator(0, AnalyticsConfig(grace_ms=MIN))
    feed(agg, "questions", question(T0 + 40_000))  # asked when the SKU was out
    feed(agg, "questions", question(T0 + 5_000))  # asked before it ran out
    feed(agg, "stock", reserved(T0 + 30_000, "SKU-10001", 0))  # arrives after both
    feed(agg, "questions", question(T0 + 50_000, sku="SKU-10002"))  # nothing known: not out
    out = agg.on_tick(T0 + 3 * MIN)
    (demand,) = [e.value for e in out if e.value["family"] == "demand"]
    assert demand["panes"][str(T0)] == {
        "k": {"SKU-10001": [2, 1], "SKU-10002": [1, 0]},
        "o": {"ST-001|SKU-10001": [1]},
    }


# --- alerts -------------------------------------------------------------------------------


def sales_digest(source: int, through: int, panes: dict[int, dict[str, int]]) -> dict[str, Any]:
    """Sales digest with ``panes``: start -> {channel: orders} (one unit of 1 EUR each)."""
    return {
        "family": "sales",
        "source": source,
        "after": None,
        "through": through,
        "panes": {
            str(s): {"c": {ch: [n, n, 100 * n] for ch, n in chans.items()}, "s": {}, "k": {}}
            for s, chans in panes.items()
        },
    }


def alerts(out: list[Output]) -> list[dict[str, Any]]:
    return [e.value for e in out if e.role == "alert"]


def test_a_channel_gone_silent_alerts_once_when_the_curve_expected_enough_orders() -> None:
    cfg = AnalyticsConfig(
        silence_ms=10 * MIN, silence_baseline_ms=30 * MIN, silence_min_expected=5.0
    )
    combiner = GlobalCombiner(cfg, sources=1)
    # 30 minutes of web at 2 orders a minute and pos at 1, then both stop after T0+30min.
    panes = {T0 + i * MIN: {"web": 2, "pos": 1} for i in range(30)}
    out = combiner.on_digest(sales_digest(0, T0 + 60 * MIN, panes))
    fired = alerts(out)
    # web expects 2/min: 5 orders after 3 min, so it fires at the 10-minute mark;
    # pos expects 1/min: also past 5 at 10 min.
    assert [(a["payload"]["subject"], a["occurred_at"]) for a in fired] == [
        ("pos", format_time_ms(T0 + 40 * MIN)),
        ("web", format_time_ms(T0 + 40 * MIN)),
    ]
    assert fired[1]["payload"]["details"]["expected_orders"] == 20.0
    assert isinstance(decode(orjson.dumps(fired[0])), Alert)  # a valid Alert contract
    # Still silent an hour later: no repeat. Orders again, then silent again: fires again.
    assert alerts(combiner.on_digest(sales_digest(0, T0 + 120 * MIN, {}))) == []
    again = {T0 + 120 * MIN + i * MIN: {"web": 2} for i in range(30)}
    out = combiner.on_digest(sales_digest(0, T0 + 200 * MIN, again))
    assert [a["payload"]["subject"] for a in alerts(out)] == ["web"]


def test_no_silence_alert_where_the_traffic_curve_expects_no_orders() -> None:
    def stores_close_at_noon(channel: str, minute_ms: int) -> float:
        return 1.0 if minute_ms < T0 + 30 * MIN else 0.0

    cfg = AnalyticsConfig(silence_ms=10 * MIN, silence_baseline_ms=30 * MIN)
    combiner = GlobalCombiner(cfg, sources=1, curve=stores_close_at_noon)
    panes = {T0 + i * MIN: {"pos": 3} for i in range(30)}
    assert alerts(combiner.on_digest(sales_digest(0, T0 + 300 * MIN, panes))) == []


def test_silence_waits_for_every_source_partition() -> None:
    cfg = AnalyticsConfig(silence_ms=10 * MIN, silence_baseline_ms=30 * MIN)
    combiner = GlobalCombiner(cfg, sources=2)
    panes = {T0 + i * MIN: {"web": 2} for i in range(30)}
    assert combiner.on_digest(sales_digest(0, T0 + 60 * MIN, panes)) == []
    out = combiner.on_digest(sales_digest(1, T0 + 60 * MIN, {}))
    assert [a["payload"]["subject"] for a in alerts(out)] == ["web"]


def test_return_rate_spike_per_category_fires_once_and_rearms() -> None:
    cfg = AnalyticsConfig(
        returns_trailing_ms=10 * MIN,
        spike_factor=2.0,
        spike_min_units=5,
        spike_min_history_units=50,
    )
    combiner = GlobalCombiner(cfg, 1, category_lookup({"SKU-10001": "toys"}))

    def step(minute: int, sold: int, returned: int) -> list[dict[str, Any]]:
        start = T0 + minute * MIN
        out = combiner.on_digest(
            {
                "family": "sales",
                "source": 0,
                "after": None,
                "through": start + MIN,
                "panes": {str(start): {"c": {}, "s": {}, "k": {"SKU-10001": [sold, 100 * sold]}}},
            }
        )
        out += combiner.on_digest(
            {
                "family": "returns",
                "source": 0,
                "after": None,
                "through": start + MIN,
                "panes": {str(start): {"k": {"SKU-10001": [returned, returned, 100 * returned]}}}
                if returned
                else {},
            }
        )
        return alerts(out)

    fired = [a for m in range(40) for a in step(m, 10, 1 if m % 2 else 0)]  # 5% long-run
    assert fired == []
    fired = [a for m in range(40, 44) for a in step(m, 10, 4)]  # 40% now
    assert [a["payload"]["subject"] for a in fired] == ["toys"]
    assert fired[0]["payload"]["details"]["baseline_rate"] == pytest.approx(0.05, abs=0.01)
    fired = [a for m in range(44, 80) for a in step(m, 10, 0)]  # back to normal ...
    fired += [a for m in range(80, 84) for a in step(m, 10, 5)]  # ... and a second spike
    assert [a["payload"]["subject"] for a in fired] == ["toys"]


def test_questions_piling_on_an_out_of_stock_sku_alert_per_store() -> None:
    cfg = AnalyticsConfig(oos_window_ms=15 * MIN, oos_threshold=5)
    combiner = GlobalCombiner(cfg, 1)

    def demand(minute: int, oos: dict[str, int]) -> list[dict[str, Any]]:
        start = T0 + minute * MIN
        pane = {"k": {}, "o": {key: [n] for key, n in oos.items()}}
        return alerts(
            combiner.on_digest(
                {
                    "family": "demand",
                    "source": 0,
                    "after": None,
                    "through": start + MIN,
                    "panes": {str(start): pane},
                }
            )
        )

    assert demand(0, {"ST-001|SKU-10001": 2, "ST-002|SKU-10001": 4}) == []
    fired = demand(5, {"ST-001|SKU-10001": 3})
    assert [(a["store_id"], a["payload"]["subject"]) for a in fired] == [
        ("ST-001", "ST-001|SKU-10001")
    ]
    assert demand(6, {"ST-001|SKU-10001": 9}) == []  # once per episode
    assert demand(40, {"ST-001|SKU-10001": 5}) != []  # the window emptied: re-armed


def test_alert_ids_are_deterministic() -> None:
    a = alert_event("channel_silent", "web", T0, "m", {})
    assert a == alert_event("channel_silent", "web", T0, "m", {})
    assert a["event_id"] != alert_event("channel_silent", "web", T0 + MIN, "m", {})["event_id"]


# --- catalog --------------------------------------------------------------------------------


def test_catalog_lookups_come_from_the_shop() -> None:
    category_of = load_category_of()
    assert category_of("SKU-10001") != "unknown"
    assert category_of("SKU-99999") == "unknown"
    curve = load_traffic_curve()
    monday_3am = 1_717_984_800_000  # 2024-06-10 02:00 UTC
    assert curve("pos", monday_3am) == 0.0  # stores are closed
    assert curve("web", monday_3am) > 0.0
    assert curve("system", monday_3am) == 1.0


# --- ticks ------------------------------------------------------------------------------------


INPUTS = ("orders", "returns", "questions", "stock")


def clock(
    event_ms: int | None, data_wall: float | dict[str, float] | None, seen_wall: float = 100.0
) -> PartitionClock:
    if isinstance(data_wall, float):
        data_wall = dict.fromkeys(INPUTS, data_wall)
    return PartitionClock(event_ms, data_wall or {}, seen_wall)


CFG = AnalyticsConfig(tick_interval_s=1.0, idle_timeout_s=10.0)


def plan(now: float, clocks: dict[int, PartitionClock], partitions: int = 3) -> dict[int, Any]:
    return plan_ticks(now, 0.0, clocks, partitions, INPUTS, CFG)


def test_probe_partitions_nobody_reported() -> None:
    assert plan(100.0, {}) == {0: None, 1: None, 2: None}


def test_no_ticks_while_events_flow() -> None:
    assert plan(100.0, {p: clock(T0 + p, data_wall=99.0) for p in range(3)}) == {}


def test_an_idle_input_follows_its_partition() -> None:
    busy = {"orders": 99.0, "returns": 95.0, "questions": 85.0}  # no stock event since start
    clocks = {0: clock(T0, busy), 1: clock(T0 + MIN, 99.0), 2: clock(T0 + MIN, 99.0)}
    assert plan(100.0, clocks) == {0: (T0, ("questions", "stock"))}


def test_an_idle_partition_follows_the_busy_ones() -> None:
    clocks = {0: clock(T0 + 5 * MIN, 99.0), 1: clock(T0 + 4 * MIN, 99.5), 2: clock(T0, 50.0)}
    assert plan(100.0, clocks) == {2: (T0 + 5 * MIN, None)}
    clocks[2] = clock(None, None)  # an empty partition too
    assert plan(100.0, clocks) == {2: (T0 + 5 * MIN, None)}


def test_event_time_runs_with_the_wall_clock_once_everything_is_idle() -> None:
    clocks = {p: clock(T0, data_wall=40.0) for p in range(3)}
    # Idle for 60 s, 10 s of which is the timeout: event time moved on by 50 s.
    assert plan(100.0, clocks) == {p: (T0 + 50_000, None) for p in range(3)}


def test_a_partition_not_heard_of_lately_is_probed_not_ticked() -> None:
    clocks = {0: clock(T0, 40.0), 1: clock(T0, 40.0, seen_wall=80.0)}
    assert plan(100.0, clocks, partitions=2) == {0: (T0 + 50_000, None), 1: None}


def test_the_board_remembers_when_each_input_last_had_data() -> None:
    board = ClockBoard()
    board.report(1, "orders", T0)
    board.report(1, None, T0)  # a tick: no data
    (state,) = board.snapshot().values()
    assert state.event_ms == T0 and set(state.data_wall) == {"orders"}


def test_ticks_sent_do_not_feed_back_into_the_next_estimate() -> None:
    """Engine and ticker in a loop over a quiet minute: event time follows the wall clock."""
    agg = PartitionAggregator(0, AnalyticsConfig())
    feed(agg, "orders", order(T0))
    clocks: dict[int, PartitionClock] = {}
    for second in range(40, 100):  # the last event was processed at wall second 0
        now = float(second)
        clocks[0] = PartitionClock(agg.event_time_ms, dict.fromkeys(INPUTS, 0.0), now)
        tick = plan_ticks(now, 0.0, clocks, 1, INPUTS, CFG)[0]
        assert tick is not None
        agg.on_tick(*tick)
        assert tick[0] == T0 + (second - 10) * 1000
    assert agg.watermark("orders") == T0 + 89_000


# --- time -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2024-06-01T00:00:00.000Z", T0),
        ("2024-06-01T00:01:02.345Z", T0 + 62_345),
        ("2024-06-01T02:01:02.345+02:00", T0 + 62_345),
        ("2024-06-01T00:01:02Z", T0 + 62_000),
    ],
)
def test_parse_time(text: str, ms: int) -> None:
    assert parse_time_ms(text) == ms


def test_format_time_round_trips() -> None:
    assert parse_time_ms(format_time_ms(T0 + 62_345)) == T0 + 62_345
