"""Smoke test of ``shopstream bench --quick``: it runs to the end and its report holds every
figure (no timing is asserted: a quick run's figures are noise on a shared machine).

The benchmark starts its own brokers (the embedded one), so this runs once, not per lane.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

STAGES = ["clients", "producers", "router", "analytics", "sink", "replay", "e2e", "freshness",
          "queries"]  # fmt: skip
APPS = ["router", "stock", "finance", "customer-relations", "notifications", "analytics", "sink",
        "dashboard"]  # fmt: skip
QUERIES = ["query floor", "sales_per_minute", "channel_summary", "top_skus", "totals",
           "low_stock", "recent_orders", "order_trace", "freshness"]  # fmt: skip


def expected_figures(doc: dict) -> list[str]:
    """Every figure key a quick report must have, from the sizes it reports."""
    sizes = doc["sizes"]
    keys = ["clients.produce_bytes", "clients.produce_json", "clients.consume_batches",
            "clients.consume_json", "producers.shopstream", "producers.shopstream_vs_same_bytes",
            "sink.sink", "sink.discard", "sink.vs_raw_arrow", "sink.writer_one_batch",
            "replay.replay", "replay.loop", "replay.batch_consume", "e2e.sustained",
            "rss.sink_growth"]  # fmt: skip
    keys += [f"rss.peak.{app}" for app in [*APPS, "broker"]]
    for g in sizes["router_guarantees"]:
        keys += [f"router.{g}.router", f"router.{g}.json_apply"]
    for g in sizes["analytics_guarantees"]:
        keys += [f"analytics.{g}.naive", f"analytics.{g}.analytics"]
    for mode in ("plain_0", "inlining_default", "inlining_1000"):
        keys += [f"sink.inlining.{mode}.write_p50", f"sink.inlining.{mode}.queries"]
    for i in range(len(sizes["freshness_intervals"])):
        for rate in sizes["freshness_rates"]:
            keys += [f"freshness.{i}.{rate}.{p}" for p in ("p50", "p95", "p99")]
    for orders in sizes["query_orders"]:
        keys += [f"queries.{orders}.{q}" for q in QUERIES]
    return keys


@pytest.mark.integration
@pytest.mark.timeout(1200)
def test_bench_quick_reports_every_figure(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shopstream", "bench", "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=1150, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    logs = tmp_path / "logs" / "bench.log"
    detail = done.stderr[-2000:] + (logs.read_text()[-3000:] if logs.exists() else "")
    assert done.returncode == 0, detail

    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["mode"] == "quick"
    assert doc["machine"]["cores"] >= 1
    assert [s["name"] for s in doc["stages"]] == STAGES
    assert [s["name"] for s in doc["stages"] if s["error"]] == []

    figures = doc["figures"]
    missing = [key for key in expected_figures(doc) if key not in figures]
    assert missing == [], f"figures missing from the report: {missing}"
    for key, figure in figures.items():
        assert isinstance(figure["value"], int | float), f"{key} was not measured"
        if figure["baseline_label"] is not None:
            assert figure["baseline_value"] is not None, key
            assert figure["ratio"] is not None, key
        if figure["target"] is not None:
            assert figure["met"] in (True, False), key

    report = (tmp_path / "report.md").read_text()
    assert "Quick run" in report and f"**{doc['machine']['cores']} cores**" in report
    for plot in ("e2e_throughput_lag.png", "e2e_rss.png", "freshness.png"):
        assert (tmp_path / plot).stat().st_size > 0, plot
